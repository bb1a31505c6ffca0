"""Runtime objects -> RFC 7951 JSON of the config-false nodes, for the control socket's get-state.

Only identifiers leave: SPIs, key-ids, SIDs, algorithms, counters. The objects read here (IKESA, machines,
KeyChain) have no accessor for key material, and nothing here asks for one. Error-counter reasons are the
module-qualified identities named after the runtime's reason enums (docs/yang.md, "Mapping to the runtime").
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import TYPE_CHECKING, Any

from nf.ike.sa import SAState
from nf.net.limits import Refusal
from nf.net.reflector import Reflector
from nf.net.sender import ReplyDrop
from nf.runtime.config import MODULES, TOP_IKE, TOP_TWAMP, modes_to_text
from nf.runtime.events import ACCEPT_NAMES, reason_identity, results_json, yang_time
from nf.runtime.ike import sa_algorithms
from nf.twamp.control_events import ConnectionState, ControlFailure
from nf.twamp.test_reflector import DropReason

if TYPE_CHECKING:
    from nf.runtime.daemon import Runtime, ServerRun

TWAMP = "twamp-nf-twamp"
BINDING = "twamp-nf-ike-binding"
IKE = "twamp-nf-ike"

KNOWN_TWAMP_REASONS = frozenset(
    [f"control-{m.value}" for m in ControlFailure]
    + [f"control-{m.value.replace('_', '-')}" for m in Refusal]
    + ["control-servwait-timeout"]
    + [f"reflector-{m.value}" for m in DropReason]
    + [f"sender-{m.value}" for m in ReplyDrop]
)


def error_identity(reason: str) -> str | None:
    """A listener/reflector counter name -> its twamp-nf-twamp identity, None when YANG has none for it."""
    name = reason.replace("_", "-")
    return f"{TWAMP}:{name}" if name in KNOWN_TWAMP_REASONS else None


def server_counters(server: ServerRun) -> Counter[str]:
    """The error counters of one TWAMP server (listener and reflector), as qualified identities."""
    found: Counter[str] = Counter()
    counters = server.listener.counters
    for reason, count in counters.bad_input.items():
        if (identity := error_identity(f"control-{reason}")) is not None:
            found[identity] += count
    for name, count in counters.connections.items():
        if name.startswith("refused_") or name == "servwait_timeout":
            key = name.removeprefix("refused_")
            if (identity := error_identity(f"control-{key}")) is not None:
                found[identity] += count
    found.update(reflector_counters(server.reflector))
    return found


def reflector_counters(reflector: Reflector) -> Counter[str]:
    found: Counter[str] = Counter()
    for drop, count in reflector.totals().dropped.items():
        if count and (identity := error_identity(f"reflector-{drop.value}")) is not None:
            found[identity] += count
    return found


def _counter_list(counts: Counter[str]) -> list[dict[str, Any]]:
    return [{"reason": reason, "count": str(n)} for reason, n in sorted(counts.items()) if n]


def _client_state(runtime: Runtime) -> dict[str, Any] | None:
    if not runtime.plan.client_enabled and not runtime.clients:
        return None
    connections = []
    for name, run in sorted(runtime.clients.items()):
        state = run.state
        entry: dict[str, Any] = {"name": name, "state": state.state}
        if state.client_port is not None:
            entry["client-tcp-port"] = state.client_port
        if state.server_start_time is not None:
            entry["server-start-time"] = str(state.server_start_time)
        if state.selected_mode is not None:
            entry["selected-mode"] = modes_to_text(state.selected_mode)
        if state.last_error is not None:
            entry["last-error"] = reason_identity(state.last_error)
        if state.spis is not None:
            entry["key-source"] = {
                f"{BINDING}:spi-i": state.spis[0].hex(),
                f"{BINDING}:spi-r": state.spis[1].hex(),
                **({f"{BINDING}:ike-peer": state.ike_peer} if state.ike_peer else {}),
            }
        elif state.key_id is not None:
            entry["key-source"] = {"key-id": state.key_id}
        requests = []
        for session in run.plan.sessions:
            session_state = state.sessions[session.name]
            request: dict[str, Any] = {"name": session.request_name}
            if session_state.accept is not None:
                request["state"] = ACCEPT_NAMES.get(session_state.accept, "failure")
            if session_state.sid is not None:
                request["sid"] = session_state.sid.hex()
            requests.append(request)
        if requests:
            entry["test-session-request"] = requests
        connections.append(entry)
    return {"ctrl-connection": connections} if connections else {}


def _sender_state(runtime: Runtime) -> dict[str, Any] | None:
    sessions = []
    for run in runtime.clients.values():
        for session in run.plan.sessions:
            state = run.state.sessions[session.name]
            entry: dict[str, Any] = {"name": session.name, "state": state.state}
            if state.summary is not None:
                entry["results"] = results_json(state.summary)
            sessions.append(entry)
    for name, light in runtime.light_runs.items():
        entry = {"name": name, "state": light.state.state}
        if light.state.summary is not None:
            entry["results"] = results_json(light.state.summary)
        sessions.append(entry)
    if not sessions:
        return None
    return {"test-session": sorted(sessions, key=lambda s: str(s["name"]))}


def _server_state(server: ServerRun) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    connections = []
    reflected = []
    for connection in list(server.listener.connections):
        machine = connection.machine
        entry: dict[str, Any] = {
            "client-ip": connection.client[0],
            "client-tcp-port": connection.client[1],
            "server-ip": connection.server[0],
            "server-tcp-port": connection.server[1],
            "count": server.listener.config.count,
        }
        if machine is not None:
            setting_up = machine.state in (ConnectionState.GREETING, ConnectionState.SETUP)
            entry["state"] = "setting-up" if setting_up else "active"
            if machine.mode:
                entry["selected-mode"] = modes_to_text(machine.mode)
            entry["test-sessions"] = len(machine.sessions)
            for sid, params in machine.sessions.items():
                reflected.append(_reflected(server, sid, params, connection.client))
        if connection.spis is not None and connection.ikev2 and machine is not None and machine.mode:
            entry["key-source"] = {
                f"{BINDING}:spi-i": connection.spis[0].hex(),
                f"{BINDING}:spi-r": connection.spis[1].hex(),
            }
        elif connection.key_id and machine is not None and machine.mode:
            entry["key-source"] = {"key-id": connection.key_id.decode("utf-8", "replace")}
        connections.append(entry)
    return ({"ctrl-connection": connections} if connections else {}), reflected


def _reflected(server: ServerRun, sid: bytes, params: Any, client: tuple[str, int]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "sender-ip": params.sender_address,
        "sender-udp-port": params.sender_port,
        "reflector-ip": params.reflector_address,
        "reflector-udp-port": params.reflector_port,
        "sid": sid.hex(),
        "parent-connection-client-ip": client[0],
        "parent-connection-client-tcp-port": client[1],
        "test-packet-dscp": params.dscp,
    }
    counters = server.reflector.counters(sid)
    if counters is not None:
        entry["reflected-packets"] = str(counters.reflected)
        entry["received-packets"] = str(counters.reflected + sum(counters.dropped.values()))
    return entry


def _twamp_state(runtime: Runtime) -> dict[str, Any]:
    twamp: dict[str, Any] = {}
    client = _client_state(runtime)
    if client is not None:
        twamp["client"] = client
    if runtime.server is not None:
        server, reflected = _server_state(runtime.server)
        twamp["server"] = server
        if reflected or runtime.plan.reflector_configured:
            twamp["session-reflector"] = {"test-session": reflected} if reflected else {}
    reflectors = [r for r in (runtime.server and runtime.server.reflector, runtime.light_reflector) if r]
    if reflectors:
        totals = [r.totals() for r in reflectors]
        twamp.setdefault("session-reflector", {})["performance"] = {
            "receive-calls": str(sum(t.receive_calls for t in totals)),
            "send-calls": str(sum(t.send_calls for t in totals)),
        }
    sender = _sender_state(runtime)
    if sender is not None:
        twamp["session-sender"] = sender
    counts = Counter(runtime.retired_twamp)
    counts.update({reason_identity(reason): n for reason, n in runtime.client_errors.items()})
    if runtime.server is not None:
        counts.update(server_counters(runtime.server))
    if runtime.light_reflector is not None:
        counts.update(reflector_counters(runtime.light_reflector))
    errors = _counter_list(counts)
    if errors:
        twamp["error-counter"] = errors
    return twamp


def _ike_state(runtime: Runtime) -> dict[str, Any]:
    hub = runtime.hub
    sas = []
    for spis, info in sorted(hub.sas.items()):
        sa = hub.lookup(*spis)
        if sa is None:
            continue
        state = {SAState.ESTABLISHED: "established", SAState.DELETING: "deleting"}.get(sa.state, "rekeying")
        entry: dict[str, Any] = {
            "spi-i": spis[0].hex(),
            "spi-r": spis[1].hex(),
            "role": "initiator" if info.initiator else "responder",
            "state": state,
            "local-address": sa.local[0],
            "local-port": sa.local[1],
            "remote-address": sa.remote[0],
            "remote-port": sa.remote[1],
            "algorithms": sa_algorithms(sa),
            "established-time": yang_time(info.established),
            "rekey-count": info.rekey_count,
        }
        if info.peer is not None:
            entry["peer"] = info.peer
        if sa.peer_id:
            entry["remote-id"] = sa.peer_id
        sas.append(entry)
    ike: dict[str, Any] = {}
    if sas:
        ike["ike-sa"] = sas
    with contextlib.suppress(RuntimeError):
        counts = Counter({f"{IKE}:{reason}": n for reason, n in hub.counters().items()})
        errors = _counter_list(counts)
        if errors:
            ike["error-counter"] = errors
    return ike


def build(runtime: Runtime, paths: list[str] | None = None) -> dict[str, Any]:
    wanted = set(paths) if paths else {TOP_TWAMP, TOP_IKE}
    result: dict[str, Any] = {}
    if TOP_TWAMP in wanted:
        result[TOP_TWAMP] = _twamp_state(runtime)
    if TOP_IKE in wanted:
        result[TOP_IKE] = _ike_state(runtime)
    return result


__all__ = ["MODULES", "build", "error_identity", "server_counters"]
