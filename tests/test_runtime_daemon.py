"""`twamp-nf run` end to end: two runtime processes configured over their control sockets.

Instance A is a TWAMP Server and IKE responder, B a Control-Client and IKE initiator bound to A by RFC 7717:
the IKE SA comes up, keys the control connection (Key ID = SPIi|SPIr) and the test session runs with its
results in state and in the test-session-completed event. Every byte read from the sockets and the
processes' stderr is kept, so the tests can prove that the PSK never leaves a runtime. Waits are generous
(a loaded 2-core machine) and bounded; every process is stopped by the fixture.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, ROOT, WAIT, free_port


class ControlClient:
    """One connection to the control socket."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(path)
        self.raw = bytearray()
        self._buffer = b""
        self._next_id = 1
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self, timeout: float = WAIT) -> dict[str, Any] | None:
        """The next line as JSON; None at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no line from the runtime")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.raw += chunk
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        request_id = self._next_id
        self._next_id += 1
        self.sock.sendall(json.dumps({"id": request_id, "op": op, **fields}).encode() + b"\n")
        while True:
            reply = self.read_line()
            assert reply is not None, "runtime closed the control connection"
            if "event" in reply:
                self.events.append(reply)
                continue
            assert reply["id"] == request_id
            return reply

    def wait_event(
        self, name: str, match: Mapping[str, object] | None = None, timeout: float = WAIT
    ) -> dict[str, Any]:
        """The first event `name` (seen or to come) whose data has the `match` items."""
        match = match or {}
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                data = event["data"]
                if event["event"] == name and all(data.get(k) == v for k, v in match.items()):
                    return event
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {name} event; saw {[e['event'] for e in self.events]}")
            message = self.read_line(remaining)
            assert message is not None, "runtime closed the event connection"
            if "event" in message:
                self.events.append(message)


class RuntimeProcess:
    """A running `twamp-nf run`; `stop()` sends SIGTERM and returns the exit status."""

    def __init__(self, directory: Path, name: str, *extra: str) -> None:
        self.path = str(directory / f"{name}.sock")
        self.stderr_path = directory / f"{name}.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [*CLI, "run", "--control-socket", self.path, "--log-level", "debug", *extra],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "control socket" not in line:
            self.stop()
            raise RuntimeError(f"runtime did not start: {line!r}: {self.stderr()}")
        self.clients: list[ControlClient] = []

    def connect(self) -> ControlClient:
        client = ControlClient(self.path)
        self.clients.append(client)
        return client

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode


pytestmark = pytest.mark.timeout(600)  # two processes on a loaded machine: bounded, generously
YANG_MODULES = [
    str(ROOT / "yang" / f"{m}.yang") for m in ("twamp-nf-twamp", "twamp-nf-ike", "twamp-nf-ike-binding")
]


def yang_search_path() -> str:
    """pyang's bundled IETF modules (docs/yang.md: imported, never copied)."""
    found = sorted(Path(sys.prefix).glob("share/yang/modules/ietf"))
    assert found, "pyang's YANG modules are missing from the venv"
    return str(found[0])


def assert_yang_valid(kind: str, document: dict[str, Any], directory: Path) -> None:
    """yanglint (libyang) accepts `document` as `kind` (data, notif): the runtime speaks the YANG contract."""
    path = directory / f"check-{kind}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [
            "yanglint",
            "-p",
            str(ROOT / "yang"),
            "-p",
            yang_search_path(),
            "-t",
            kind,
            *YANG_MODULES,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, f"{json.dumps(document)}\n{result.stderr}"


def merged(config: Any, state: Any) -> Any:
    """Configuration and state as one datastore: list entries joined by their name key."""
    if isinstance(config, dict) and isinstance(state, dict):
        result = dict(config)
        for key, value in state.items():
            result[key] = merged(config[key], value) if key in config else value
        return result
    if isinstance(config, list) and isinstance(state, list):
        result_list = list(config)
        for entry in state:
            index = next(
                (
                    i
                    for i, old in enumerate(result_list)
                    if isinstance(old, dict)
                    and isinstance(entry, dict)
                    and "name" in old
                    and old.get("name") == entry.get("name")
                ),
                None,
            )
            if index is None:
                result_list.append(entry)
            else:
                result_list[index] = merged(result_list[index], entry)
        return result_list
    return state


def assert_events_valid(client: ControlClient, directory: Path) -> None:
    for event in client.events:
        assert event["time"].endswith("Z")
        assert_yang_valid("notif", {event["event"]: event["data"]}, directory)


PSK = b"runtime-test-psk-" + os.urandom(12).hex().encode()
PROPOSAL = {"name": "p1", "encryption": "aes-gcm-16-256", "prf": "hmac-sha2-256", "dh-group": "curve25519"}


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[list[RuntimeProcess]]:
    started: list[RuntimeProcess] = []
    yield started
    for runtime in started:
        runtime.stop()


def ike_config(name: str, peer: str, own_port: int, peer_port: int, *, auto: bool) -> dict[str, Any]:
    return {
        "listen-address": ["127.0.0.1"],
        "listen-port": own_port,
        "local-identity": [
            {
                "name": name,
                "id-type": "fqdn",
                "id-value": f"{name}.example",
                "psk": base64.b64encode(PSK).decode(),
            }
        ],
        "peer": [
            {
                "name": peer,
                "local-identity": name,
                "address": "127.0.0.1",
                "port": peer_port,
                "remote-identity": {"id-type": "fqdn", "id-value": f"{peer}.example"},
                "proposal": [PROPOSAL],
                "auto-initiate": auto,
            }
        ],
    }


def server_config(ports: dict[str, int], twamp_port: int | None = None) -> dict[str, Any]:
    """A: TWAMP Server offering unauthenticated and authenticated IKEv2-derived, IKE responder for B."""
    return {
        "twamp-nf-ike:ike": ike_config("a", "b", ports["ike_a"], ports["ike_b"], auto=False),
        "twamp-nf-twamp:twamp": {
            "server": {
                "server-ip": "127.0.0.1",
                "server-tcp-port": twamp_port or ports["twamp"],
                "modes": "unauthenticated authenticated ikev2-derived",
                "count": 1024,
                "twamp-nf-ike-binding:ikev2-derived": {"allowed-peer": ["b"]},
            },
            "session-reflector": {"refwait": 60},
        },
    }


def client_config(
    ports: dict[str, int],
    connection: str,
    mode: str,
    *,
    packets: int = 20,
    policy: str = "initiate",
    auto: bool = True,
    fallback_mode: str | None = None,
) -> dict[str, Any]:
    """B: Control-Client with one connection and one test session; IKE initiator towards A."""
    ctrl: dict[str, Any] = {
        "name": connection,
        "server-ip": "127.0.0.1",
        "server-tcp-port": ports["twamp"],
        "test-session-request": [{"name": "r1", "reflector-ip": "127.0.0.1", "timeout": 1}],
    }
    if "ikev2-derived" in mode:
        ctrl["twamp-nf-ike-binding:ikev2-derived"] = {
            "ike-peer": "a",
            "no-sa-policy": policy,
            **({"initiate-timeout": 60} if policy == "initiate" else {}),
        }
    chain = [{"priority": 0, "mode": mode}]
    if fallback_mode is not None:
        chain.append({"priority": 1, "mode": fallback_mode})
    return {
        "twamp-nf-ike:ike": ike_config("b", "a", ports["ike_b"], ports["ike_a"], auto=auto),
        "twamp-nf-twamp:twamp": {
            "client": {
                "mode-preference-chain": chain,
                "ctrl-connection": [ctrl],
            },
            "session-sender": {
                "test-session": [
                    {
                        "name": f"{connection}-s1",
                        "ctrl-connection": connection,
                        "test-session-request": "r1",
                        "number-of-packets": packets,
                        "periodic-interval": "0.010000",
                    }
                ]
            },
        },
    }


def new_ports() -> dict[str, int]:
    return {
        "ike_a": free_port("127.0.0.1", socket.SOCK_DGRAM),
        "ike_b": free_port("127.0.0.1", socket.SOCK_DGRAM),
        "twamp": free_port(),
    }


def start_pair(tmp_path: Path, runtimes: list[RuntimeProcess]) -> tuple[RuntimeProcess, RuntimeProcess]:
    a = RuntimeProcess(tmp_path, "a")
    runtimes.append(a)
    b = RuntimeProcess(tmp_path, "b")
    runtimes.append(b)
    return a, b


def subscribed(runtime: RuntimeProcess) -> ControlClient:
    events = runtime.connect()
    assert events.request("subscribe")["ok"] is True
    return events


def sender_session(state: dict[str, Any], name: str) -> dict[str, Any]:
    sessions = state["twamp-nf-twamp:twamp"]["session-sender"]["test-session"]
    found: dict[str, Any] = next(s for s in sessions if s["name"] == name)
    return found


def assert_no_secret(*blobs: bytes | bytearray | str) -> None:
    encoded = base64.b64encode(PSK)
    for blob in blobs:
        data = blob.encode() if isinstance(blob, str) else bytes(blob)
        assert PSK not in data and encoded not in data and PSK.hex().encode() not in data


def _second_completion(events: ControlClient, session: str) -> dict[str, Any]:
    """The second test-session-completed of `session` (its first run came before)."""
    deadline = time.monotonic() + 120
    while True:
        found = [
            e
            for e in events.events
            if e["event"] == "twamp-nf-twamp:test-session-completed" and e["data"]["test-session"] == session
        ]
        if len(found) >= 2:
            return found[1]
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the changed session did not run again"
        message = events.read_line(remaining)
        assert message is not None
        if "event" in message:
            events.events.append(message)


def test_hello_names_the_modules(tmp_path: Path, runtimes: list[RuntimeProcess]) -> None:
    runtime = RuntimeProcess(tmp_path, "solo")
    runtimes.append(runtime)
    client = runtime.connect()
    reply = client.request("hello", version=1)
    assert reply == {
        "id": 1,
        "ok": True,
        "version": 1,
        "modules": ["twamp-nf-twamp", "twamp-nf-ike", "twamp-nf-ike-binding"],
    }
    assert client.request("hello", version=2)["error"]["tag"] == "invalid-value"
    assert os.stat(runtime.path).st_mode & 0o777 == 0o600


def test_ikev2_keyed_session_between_two_runtimes(tmp_path: Path, runtimes: list[RuntimeProcess]) -> None:
    a, b = start_pair(tmp_path, runtimes)
    ports = new_ports()
    events_a, events_b = subscribed(a), subscribed(b)
    config_a, config_b = a.connect(), b.connect()
    assert config_a.request("apply", config=server_config(ports)) == {"id": 1, "ok": True}
    assert config_b.request("apply", config=client_config(ports, "c1", "authenticated ikev2-derived")) == {
        "id": 1,
        "ok": True,
    }

    up_b = events_b.wait_event("twamp-nf-ike:ike-sa-up", {"peer": "a"})
    up_a = events_a.wait_event("twamp-nf-ike:ike-sa-up", {"peer": "b"})
    assert up_b["data"]["role"] == "initiator" and up_a["data"]["role"] == "responder"
    assert up_b["data"]["algorithms"] == {
        "encryption": "aes-gcm-16-256",
        "prf": "hmac-sha2-256",
        "dh-group": "curve25519",
    }
    done = events_b.wait_event(
        "twamp-nf-twamp:test-session-completed", {"test-session": "c1-s1"}, timeout=120
    )
    results = done["data"]["results"]
    assert done["data"]["outcome"] == "completed" and len(done["data"]["sid"]) == 32
    assert results["sent"] == "20" and int(results["received"]) > 0
    assert float(results["rtt"]["min"]) >= 0

    state_b = config_b.request("get-state")["state"]
    sas_b = state_b["twamp-nf-ike:ike"]["ike-sa"]
    assert any(sa["peer"] == "a" and sa["state"] == "established" for sa in sas_b)
    sa = next(sa for sa in sas_b if sa["peer"] == "a")
    assert sa["role"] == "initiator" and sa["rekey-count"] == 0 and sa["established-time"].endswith("Z")
    assert sa["algorithms"]["encryption"] == "aes-gcm-16-256"
    connection = state_b["twamp-nf-twamp:twamp"]["client"]["ctrl-connection"][0]
    assert connection["name"] == "c1" and connection["selected-mode"] == "authenticated ikev2-derived"
    key_source = connection["key-source"]
    spis = (key_source["twamp-nf-ike-binding:spi-i"], key_source["twamp-nf-ike-binding:spi-r"])
    assert spis in {(s["spi-i"], s["spi-r"]) for s in sas_b}
    assert connection["test-session-request"][0]["state"] == "ok"
    session = sender_session(state_b, "c1-s1")
    assert session["state"] == "completed" and session["results"]["sent"] == "20"

    state_a = config_a.request("get-state", paths=["twamp-nf-ike:ike"])["state"]
    assert list(state_a) == ["twamp-nf-ike:ike"]
    assert spis in {(s["spi-i"], s["spi-r"]) for s in state_a["twamp-nf-ike:ike"]["ike-sa"]}

    # unchanged configuration is kept (same SA, same session), a changed connection runs again
    assert config_b.request("apply", config=client_config(ports, "c1", "authenticated ikev2-derived"))["ok"]
    again = config_b.request("get-state")["state"]
    assert again["twamp-nf-ike:ike"]["ike-sa"] == sas_b
    kept = again["twamp-nf-twamp:twamp"]["client"]["ctrl-connection"][0]
    assert kept["test-session-request"] == connection["test-session-request"]
    changed = client_config(ports, "c1", "authenticated ikev2-derived", packets=10)
    assert config_b.request("apply", config=changed)["ok"] is True
    rerun = _second_completion(events_b, "c1-s1")
    assert rerun["data"]["results"]["sent"] == "10"
    assert config_b.request("get-state")["state"]["twamp-nf-ike:ike"]["ike-sa"] == sas_b

    assert_no_secret(events_a.raw, events_b.raw, config_a.raw, config_b.raw, a.stderr(), b.stderr())
    assert_yang_valid("data", merged(changed, config_b.request("get-state")["state"]), tmp_path)
    assert_yang_valid("data", merged(server_config(ports), config_a.request("get-state")["state"]), tmp_path)
    # a runtime that stops deletes its SAs with the peer
    assert b.stop() == 0
    down = events_a.wait_event("twamp-nf-ike:ike-sa-down", {"spi-i": spis[0], "spi-r": spis[1]})
    assert down["data"]["reason"] == "deleted-by-peer" and down["data"]["peer"] == "b"
    assert "ike-sa" not in config_a.request("get-state")["state"]["twamp-nf-ike:ike"]
    assert_events_valid(events_a, tmp_path)
    assert_events_valid(events_b, tmp_path)


def test_unknown_sa_is_refused_with_accept_6_and_notified(
    tmp_path: Path, runtimes: list[RuntimeProcess]
) -> None:
    """A allows no IKE peer whose SA B uses: Server-Start Accept 6, unknown-sa on A, failure on B."""
    a, b = start_pair(tmp_path, runtimes)
    ports = new_ports()
    config = server_config(ports)
    config["twamp-nf-ike:ike"]["peer"].append(
        {
            **config["twamp-nf-ike:ike"]["peer"][0],
            "name": "other",
            "address": "127.0.0.2",
            "remote-identity": {"id-type": "fqdn", "id-value": "other.example"},
        }
    )
    config["twamp-nf-twamp:twamp"]["server"]["twamp-nf-ike-binding:ikev2-derived"]["allowed-peer"] = ["other"]
    events_a, events_b = subscribed(a), subscribed(b)
    assert a.connect().request("apply", config=config)["ok"] is True
    assert b.connect().request("apply", config=client_config(ports, "c1", "authenticated ikev2-derived"))[
        "ok"
    ]
    unknown = events_a.wait_event("twamp-nf-ike-binding:unknown-sa", timeout=120)
    assert (
        unknown["data"]["client-ip"] == "127.0.0.1" and unknown["data"]["server-tcp-port"] == ports["twamp"]
    )
    failed = events_b.wait_event("twamp-nf-twamp:ctrl-connection-failed", {"ctrl-connection": "c1"})
    assert failed["data"]["accept"] == "unknown-sa"
    assert failed["data"]["reason"] == "twamp-nf-twamp:control-unknown-sa"
    state_a = a.clients[0].request("get-state")["state"]["twamp-nf-twamp:twamp"]
    counters = {c["reason"]: c["count"] for c in state_a["error-counter"]}
    assert int(counters["twamp-nf-twamp:control-unknown-sa"]) >= 1
    state_b = b.clients[0].request("get-state")["state"]["twamp-nf-twamp:twamp"]
    assert state_b["client"]["ctrl-connection"][0]["last-error"] == "twamp-nf-twamp:control-unknown-sa"
    counters_b = {c["reason"]: c["count"] for c in state_b["error-counter"]}
    assert int(counters_b["twamp-nf-twamp:control-unknown-sa"]) >= 1
    assert_events_valid(events_a, tmp_path)
    assert_events_valid(events_b, tmp_path)


def test_no_sa_policies_fail_and_fallback(tmp_path: Path, runtimes: list[RuntimeProcess]) -> None:
    """RFC 7717 s5.1 without an IKE SA: policy fail gives up at once, fallback uses a key-chain-free mode."""
    a, b = start_pair(tmp_path, runtimes)
    ports = new_ports()
    events_b = subscribed(b)
    control_b = b.connect()
    assert a.connect().request("apply", config=server_config(ports))["ok"] is True
    failing = client_config(ports, "f", "authenticated ikev2-derived", policy="fail", auto=False)
    assert control_b.request("apply", config=failing)["ok"] is True
    failed = events_b.wait_event("twamp-nf-twamp:ctrl-connection-failed", {"ctrl-connection": "f"})
    assert (
        failed["data"]["reason"] == "twamp-nf-ike-binding:control-no-ike-sa"
        and failed["data"]["role"] == "client"
    )
    state = control_b.request("get-state")["state"]
    (connection,) = state["twamp-nf-twamp:twamp"]["client"]["ctrl-connection"]
    assert connection["last-error"] == "twamp-nf-ike-binding:control-no-ike-sa"
    assert sender_session(state, "f-s1")["state"] == "failed"
    assert "ike-sa" not in state["twamp-nf-ike:ike"]  # fail never initiates
    assert_yang_valid("data", merged(failing, state), tmp_path)

    falling = client_config(
        ports,
        "fb",
        "authenticated ikev2-derived",
        policy="fallback",
        auto=False,
        fallback_mode="unauthenticated",
    )
    assert control_b.request("apply", config=falling)["ok"] is True
    fallback = events_b.wait_event("twamp-nf-ike-binding:key-source-fallback", {"ctrl-connection": "fb"})
    assert fallback["data"] == {"ctrl-connection": "fb", "ike-peer": "a", "selected-mode": "unauthenticated"}
    events_b.wait_event("twamp-nf-twamp:test-session-completed", {"test-session": "fb-s1"}, timeout=120)
    state = control_b.request("get-state")["state"]
    (connection,) = state["twamp-nf-twamp:twamp"]["client"]["ctrl-connection"]
    assert connection["selected-mode"] == "unauthenticated" and "key-source" not in connection
    assert_events_valid(events_b, tmp_path)


def test_failed_apply_keeps_the_old_configuration(tmp_path: Path, runtimes: list[RuntimeProcess]) -> None:
    a, b = start_pair(tmp_path, runtimes)
    ports = new_ports()
    control_a, control_b = a.connect(), b.connect()
    events_b = subscribed(b)
    good = server_config(ports)
    assert control_a.request("apply", config=good)["ok"] is True

    missing = tmp_path / "nowhere" / "a.pem"
    broken = server_config(ports)
    identity = broken["twamp-nf-ike:ike"]["local-identity"][0]
    del identity["psk"]
    identity["certificate-file"] = str(missing)
    identity["private-key-file"] = str(missing)
    broken["twamp-nf-ike:ike"]["peer"][0]["trust-anchor"] = [str(missing)]
    reply = control_a.request("apply", config=broken)
    assert reply["ok"] is False and reply["error"]["tag"] == "invalid-value"
    assert reply["error"]["path"] == "/twamp-nf-ike:ike/local-identity[name='a']/certificate-file"
    assert str(missing) in reply["error"]["message"]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = server_config(ports, twamp_port=taken.getsockname()[1])
        busy["twamp-nf-twamp:twamp"]["server"]["modes"] = "unauthenticated"
        del busy["twamp-nf-twamp:twamp"]["server"]["twamp-nf-ike-binding:ikev2-derived"]
        for op in ("validate", "apply"):
            reply = control_a.request(op, config=busy)
            assert reply["ok"] is False and reply["error"]["tag"] == "resource-denied"
            assert reply["error"]["path"] == "/twamp-nf-twamp:twamp/server/server-tcp-port"

    # the first configuration is still in force: same listener, and a session through it works
    server = control_a.request("get-state")["state"]["twamp-nf-twamp:twamp"]["server"]
    assert server == {}  # no control connection now, and the listener is the first configuration's
    assert control_b.request("apply", config=client_config(ports, "c2", "unauthenticated"))["ok"] is True
    done = events_b.wait_event(
        "twamp-nf-twamp:test-session-completed", {"test-session": "c2-s1"}, timeout=120
    )
    assert int(done["data"]["results"]["received"]) > 0
    assert control_a.request("validate", config=good) == {"id": 6, "ok": True}


def test_bad_requests_get_errors_and_the_runtime_stays(
    tmp_path: Path, runtimes: list[RuntimeProcess]
) -> None:
    runtime = RuntimeProcess(tmp_path, "solo", "--control-max-message", "2048")
    runtimes.append(runtime)
    client = runtime.connect()
    client.send_raw(b"{not json\n")
    reply = client.read_line()
    assert reply is not None and reply["ok"] is False and reply["error"]["tag"] == "malformed-message"
    client.send_raw(b"[1, 2]\n")
    reply = client.read_line()
    assert reply is not None and reply["error"]["tag"] == "malformed-message"
    assert client.request("no-such-op")["error"]["tag"] == "unknown-element"
    reply = client.request("apply", config={"other-module:thing": {}})
    assert reply["error"] == {
        "tag": "unknown-element",
        "path": "/other-module:thing",
        "message": "not a top-level node of the runtime's modules",
    }
    assert client.request("hello", version=1)["ok"] is True  # the connection survived all of that

    client.send_raw(b'{"id": 9, "op": "hello", "pad": "' + b"x" * 4096 + b'"}\n')
    reply = client.read_line()
    assert reply is not None and reply["error"]["tag"] == "too-big"
    assert client.read_line() is None  # closed after too-big

    other = runtime.connect()
    assert other.request("hello", version=1)["ok"] is True
    assert runtime.proc.poll() is None


def test_sigterm_removes_the_socket(tmp_path: Path) -> None:
    runtime = RuntimeProcess(tmp_path, "solo")
    try:
        client = runtime.connect()
        ports = new_ports()
        config = server_config(ports)
        assert client.request("apply", config=config)["ok"] is True
        assert os.path.exists(runtime.path)
    finally:
        status = runtime.stop()
    assert status == 0
    assert not os.path.exists(runtime.path)
    assert "Traceback" not in runtime.stderr()
    with socket.socket() as probe:  # the TWAMP listener went with the process
        assert probe.connect_ex(("127.0.0.1", ports["twamp"])) != 0


def poll_state(client: ControlClient, found: Any, what: str) -> dict[str, Any]:
    """get-state until `found(state)` is true (bounded by WAIT); the state it was true for."""
    deadline = time.monotonic() + WAIT
    while True:
        state: dict[str, Any] = client.request("get-state")["state"]
        if found(state):
            return state
        assert time.monotonic() < deadline, f"never saw {what}: {state}"
        time.sleep(0.05)


def test_server_state_of_a_running_session_and_cancelled_client(
    tmp_path: Path, runtimes: list[RuntimeProcess]
) -> None:
    a, b = start_pair(tmp_path, runtimes)
    ports = new_ports()
    control_a, control_b = a.connect(), b.connect()
    server = server_config(ports)
    server["twamp-nf-twamp:twamp"]["server"]["control-packet-dscp"] = 46
    assert control_a.request("apply", config=server)["ok"] is True
    client = client_config(ports, "long", "authenticated ikev2-derived", packets=3000)
    connection = client["twamp-nf-twamp:twamp"]["client"]["ctrl-connection"][0]
    connection["client-ip"] = "127.0.0.1"
    connection["control-packet-dscp"] = 46
    assert control_b.request("apply", config=client)["ok"] is True

    def serving(state: dict[str, Any]) -> bool:
        twamp = state["twamp-nf-twamp:twamp"]
        reflected = twamp.get("session-reflector", {}).get("test-session")
        return bool(twamp["server"].get("ctrl-connection")) and bool(reflected)

    state_a = poll_state(control_a, serving, "the server side of the session")
    twamp = state_a["twamp-nf-twamp:twamp"]
    (entry,) = twamp["server"]["ctrl-connection"]
    assert entry["client-ip"] == "127.0.0.1" and entry["server-tcp-port"] == ports["twamp"]
    assert entry["selected-mode"] == "authenticated ikev2-derived" and entry["count"] == 1024
    assert entry["state"] == "active" and entry["test-sessions"] == 1
    (sa,) = state_a["twamp-nf-ike:ike"]["ike-sa"]
    assert entry["key-source"] == {
        "twamp-nf-ike-binding:spi-i": sa["spi-i"],
        "twamp-nf-ike-binding:spi-r": sa["spi-r"],
    }
    (reflected,) = twamp["session-reflector"]["test-session"]
    assert reflected["parent-connection-client-tcp-port"] == entry["client-tcp-port"]
    assert reflected["reflector-ip"] == "127.0.0.1" and len(reflected["sid"]) == 32
    assert_yang_valid("data", merged(server, state_a), tmp_path)

    state_b = poll_state(
        control_b,
        lambda s: sender_session(s, "long-s1")["state"] == "active",
        "the session sending",
    )
    assert (
        state_b["twamp-nf-twamp:twamp"]["client"]["ctrl-connection"][0]["client-tcp-port"]
        == entry["client-tcp-port"]
    )

    # removing the client stops its run: the sender threads end and the server sees the connection go
    del client["twamp-nf-twamp:twamp"]["client"], client["twamp-nf-twamp:twamp"]["session-sender"]
    assert control_b.request("apply", config=client)["ok"] is True
    assert "client" not in control_b.request("get-state")["state"]["twamp-nf-twamp:twamp"]
    poll_state(
        control_a,
        lambda s: not s["twamp-nf-twamp:twamp"]["server"].get("ctrl-connection"),
        "the control connection closed",
    )
    assert control_b.request("hello", version=1)["ok"] is True
    assert b.stop() == 0
    assert "Traceback" not in b.stderr() and "never retrieved" not in b.stderr()


def free_dynamic_udp_port() -> int:
    """A free UDP port in the dynamic range (YANG reflector-port-number: 862 or 49152..65535)."""
    for _ in range(1000):
        port = random.randint(49152, 65535)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free UDP port in the dynamic range")


def _realtime_threads(pid: int, priority: int) -> list[int]:
    """Threads of a process running SCHED_FIFO at `priority`."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            tid = int(task)
            fifo = os.sched_getscheduler(tid) == os.SCHED_FIFO
            if fifo and os.sched_getparam(tid).sched_priority == priority:
                found.append(tid)
    return found


def test_twamp_light_between_two_runtimes(tmp_path: Path, runtimes: list[RuntimeProcess]) -> None:
    """RFC 5357 Appendix I: A reflects on a light-port with no control connection, B sends to it."""
    a, b = start_pair(tmp_path, runtimes)
    port = free_dynamic_udp_port()
    control_a, control_b = a.connect(), b.connect()
    events_b = subscribed(b)
    reflector: dict[str, Any] = {
        "twamp-nf-twamp:twamp": {
            "session-reflector": {
                "light-port": [{"reflector-ip": "127.0.0.1", "reflector-udp-port": port}],
                "performance": {"busy-poll": 200, "realtime-priority": 7, "receive-batch": 1},
            }
        }
    }
    assert control_a.request("apply", config=reflector)["ok"] is True
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
        probe.bind(("127.0.0.1", port))  # the port is really taken
    # the performance container reaches the port thread: SCHED_FIFO 7, or the refusal in the log
    deadline = time.monotonic() + WAIT
    while not _realtime_threads(a.proc.pid, 7) and "no realtime priority" not in a.stderr():
        assert time.monotonic() < deadline, "realtime-priority neither applied nor refused"
        time.sleep(0.05)
    sender = {
        "twamp-nf-twamp:twamp": {
            "session-sender": {
                "test-session": [
                    {
                        "name": "light",
                        "light": {
                            "reflector-ip": "127.0.0.1",
                            "reflector-udp-port": port,
                            "padding-length": 32,
                        },
                        "number-of-packets": 20,
                        "periodic-interval": "0.010000",
                    }
                ]
            }
        }
    }
    assert control_b.request("apply", config=sender)["ok"] is True
    done = events_b.wait_event(
        "twamp-nf-twamp:test-session-completed", {"test-session": "light"}, timeout=120
    )
    assert "sid" not in done["data"] and done["data"]["results"]["sent"] == "20"
    assert int(done["data"]["results"]["received"]) > 0
    # receive-batch 1: one receive call per datagram, and one send call per reply, counted in A's state
    state_a = control_a.request("get-state")["state"]
    assert_yang_valid("data", merged(reflector, state_a), tmp_path)
    performance = state_a["twamp-nf-twamp:twamp"]["session-reflector"]["performance"]
    assert int(performance["receive-calls"]) == 20
    assert int(performance["send-calls"]) == int(done["data"]["results"]["received"])
    state = control_b.request("get-state")["state"]
    assert sender_session(state, "light")["state"] == "completed"
    assert_yang_valid("data", merged(sender, state), tmp_path)
    assert_events_valid(events_b, tmp_path)

    # a busy light port is refused by name, and the running one stays
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        busy = free_dynamic_udp_port()
        taken.bind(("127.0.0.1", busy))
        ports = reflector["twamp-nf-twamp:twamp"]["session-reflector"]["light-port"]
        ports.append({"reflector-ip": "127.0.0.1", "reflector-udp-port": busy})
        reply = control_a.request("apply", config=reflector)
    assert reply["error"]["tag"] == "resource-denied"
    assert reply["error"]["path"] == (
        "/twamp-nf-twamp:twamp/session-reflector/light-port"
        f"[reflector-ip='127.0.0.1'][reflector-udp-port='{busy}']"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
        probe.bind(("127.0.0.1", port))
    assert control_a.request("apply", config={})["ok"] is True  # removing it frees the port
    deadline = time.monotonic() + WAIT
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline, "the light port was never released"
        time.sleep(0.1)


def test_ipv6_session_with_a_key_chain(tmp_path: Path, runtimes: list[RuntimeProcess]) -> None:
    """Server and client on ::1 in encrypted mode with a pre-shared key chain (no IKE)."""
    a, b = start_pair(tmp_path, runtimes)
    port = free_port("::1")
    secret = base64.b64encode(PSK).decode()
    server = {
        "twamp-nf-twamp:twamp": {
            "server": {
                "server-ip": "::1",
                "server-tcp-port": port,
                "modes": "encrypted",
                "count": 1024,
                "key-chain": [{"key-id": "lab", "secret-key": secret}],
            }
        }
    }
    client = client_config({"twamp": port, "ike_a": 0, "ike_b": 0}, "v6", "encrypted")
    del client["twamp-nf-ike:ike"]
    twamp = client["twamp-nf-twamp:twamp"]
    twamp["client"]["key-chain"] = [{"key-id": "lab", "secret-key": secret}]
    connection = twamp["client"]["ctrl-connection"][0]
    connection.update({"server-ip": "::1", "key-id": "lab"})
    connection["test-session-request"][0]["reflector-ip"] = "::1"
    control_a, control_b = a.connect(), b.connect()
    events_b = subscribed(b)
    assert control_a.request("apply", config=server)["ok"] is True
    assert control_b.request("apply", config=client)["ok"] is True
    done = events_b.wait_event(
        "twamp-nf-twamp:test-session-completed", {"test-session": "v6-s1"}, timeout=120
    )
    assert int(done["data"]["results"]["received"]) > 0
    state = control_b.request("get-state")["state"]
    (entry,) = state["twamp-nf-twamp:twamp"]["client"]["ctrl-connection"]
    assert entry["selected-mode"] == "encrypted" and entry["key-source"] == {"key-id": "lab"}
    assert_yang_valid("data", merged(client, state), tmp_path)
    assert_no_secret(control_a.raw, control_b.raw, events_b.raw, a.stderr(), b.stderr())


def run_cli_briefly(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "run", "--control-socket", str(path)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def test_the_socket_path_is_never_stolen(tmp_path: Path, runtimes: list[RuntimeProcess]) -> None:
    live = RuntimeProcess(tmp_path, "live")
    runtimes.append(live)
    second = run_cli_briefly(Path(live.path))
    assert second.returncode == 1 and "another runtime is listening there" in second.stderr
    assert live.connect().request("hello", version=1)["ok"] is True

    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me")
    refused = run_cli_briefly(regular)
    assert refused.returncode == 1 and "not a socket" in refused.stderr
    assert regular.read_text() == "keep me"

    stale = RuntimeProcess(tmp_path, "stale")
    stale.proc.kill()  # no clean exit: the socket file stays behind
    stale.proc.wait(WAIT)
    stale.stop()
    assert os.path.exists(stale.path)
    revived = RuntimeProcess(tmp_path, "stale")
    runtimes.append(revived)
    assert revived.connect().request("hello", version=1)["ok"] is True
