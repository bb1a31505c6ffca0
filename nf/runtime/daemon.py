"""The runtime process: the running TWAMP Server, Control-Client connections and IKE endpoint of one
configuration, and `apply`, which replaces them all-or-nothing.

apply = build the Plan (config.py: parse, load credentials), prepare (bind every new socket, build key
sources) without touching what runs, then commit (swap in, close what was replaced). A failure before the
commit releases what was prepared and leaves the running configuration exactly as it was. Objects whose
configuration did not change are kept: the IKE endpoint and its SAs while the listening address stays, the
TWAMP listener and its connections while its address and port stay (new policy applies to new
connections), a ctrl-connection while its own subtree and keys stay.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nf.binding import ServerBinding
from nf.net.ike_endpoint import IKEEndpoint
from nf.net.reflector import Reflector, ReflectorConfig
from nf.runtime import state as state_json
from nf.runtime.client import ClientRun, LightRun
from nf.runtime.config import TOP_TWAMP, ConfigError, IKEPlan, Plan, ReflectorPlan, ServerPlan, build_plan
from nf.runtime.events import EventBus
from nf.runtime.ike import IKEHub, retire_endpoint
from nf.runtime.server import RecordingKeySource, RuntimeListener
from nf.twamp.control_server import ServerConfig
from nf.twamp.modes import SecurityMode
from nf.twamp.test_session import TestSessionParams

log = logging.getLogger("nf.runtime")


@dataclass
class ServerRun:
    plan: ServerPlan
    listener: RuntimeListener
    reflector: Reflector
    addresses: list[str]


@dataclass
class _Prepared:
    light_reflector: Reflector | None = None  # created for this apply (closed again if it fails)
    light_ports: list[tuple[str, int]] = field(default_factory=list)  # newly reserved
    endpoint: IKEEndpoint | None = None  # a newly bound endpoint (None: keep the running one)
    server: ServerRun | None = None  # a newly bound server (None: keep or remove the running one)
    server_config: ServerConfig | None = None  # new policy for a kept server
    binding: ServerBinding | None = None


def _reflector_config(plan: ReflectorPlan, refwait: float | None = None) -> ReflectorConfig:
    return ReflectorConfig(
        refwait=plan.refwait if refwait is None else refwait,
        max_pps=plan.max_pps,
        busy_poll=plan.busy_poll,
        realtime_priority=plan.realtime_priority,
        receive_batch=plan.receive_batch,
        send_batch=plan.send_batch,
    )


LIGHT_REFWAIT = 10 * 365 * 86400.0  # TWAMP Light ports have no control connection to end them


def _light_params(sid: bytes, address: str, port: int) -> TestSessionParams:
    """A wildcard session (any sender address and port) that reflects unauthenticated TWAMP Light."""
    any_address = "::" if ":" in address else "0.0.0.0"
    return TestSessionParams(
        sid=sid,
        mode=SecurityMode.UNAUTHENTICATED,
        sender_address=any_address,
        sender_port=0,
        reflector_address=address,
        reflector_port=port,
        padding_length=0,
        start_time=0.0,
        timeout=0.0,
        dscp=0,
        reflect_octets=0,
        server_octets=b"",
        symmetric=False,
        keys=None,
    )


class Runtime:
    def __init__(self) -> None:
        self.bus = EventBus()
        self.hub = IKEHub(self.publish)
        self.plan = Plan()
        self.server: ServerRun | None = None
        self.clients: dict[str, ClientRun] = {}
        self.light_runs: dict[str, LightRun] = {}
        self.light_reflector: Reflector | None = None  # TWAMP Light ports (no REFWAIT: they stay open)
        self.light_ports: dict[tuple[str, int], bytes] = {}  # (address, port) -> its wildcard session
        self.client_errors: Counter[str] = Counter()
        self.retired_twamp: Counter[str] = Counter()
        self._lock = asyncio.Lock()

    def publish(self, event: tuple[str, dict[str, Any]]) -> None:
        self.bus.publish(*event)

    # ------------------------------------------------------------------ validate / apply

    async def validate(self, config: Any) -> None:
        async with self._lock:
            plan = build_plan(config)
            prepared = await self._prepare(plan)
            await self._release(prepared)

    async def apply(self, config: Any) -> None:
        async with self._lock:
            plan = build_plan(config)
            prepared = await self._prepare(plan)
            await self._commit(plan, prepared)
            log.info(
                "configuration applied: server %s, %d ctrl-connection(s), IKE %s",
                "on" if plan.server else "off",
                len(plan.connections),
                "on" if plan.ike else "off",
            )

    async def _prepare(self, plan: Plan) -> _Prepared:
        prepared = _Prepared()
        try:
            self._reserve_light_ports(plan, prepared)
            if plan.ike is not None and not self._keeps_endpoint(plan.ike):
                prepared.endpoint = await self._bind_ike(plan.ike)
            if plan.server is not None:
                prepared.binding = self._server_binding(plan)
                config = self._server_config(plan.server, prepared.binding)
                if self.server is not None and self.server.plan.fingerprint == plan.server.fingerprint:
                    prepared.server_config = config
                else:
                    prepared.server = await self._bind_server(plan, config, prepared.binding)
        except BaseException:
            await self._release(prepared)
            raise
        return prepared

    def _reserve_light_ports(self, plan: Plan, prepared: _Prepared) -> None:
        wanted = [p for p in plan.reflector.light_ports if p not in self.light_ports]
        if not wanted:
            return
        reflector = self.light_reflector
        if reflector is None:
            config = _reflector_config(plan.reflector, refwait=LIGHT_REFWAIT)
            reflector = prepared.light_reflector = Reflector(config)
        for address, port in wanted:
            path = (
                f"/{TOP_TWAMP}/session-reflector/light-port"
                f"[reflector-ip='{address}'][reflector-udp-port='{port}']"
            )
            try:
                got = reflector.reserve_port(address, port)
            except OSError as exc:
                raise ConfigError(
                    "resource-denied",
                    path,
                    f"cannot bind {address} port {port}: {(exc.strerror or str(exc)).lower()}",
                ) from None
            prepared.light_ports.append((address, port))
            if got != port:
                reflector.release_port(address, got)
                raise ConfigError("resource-denied", path, f"UDP port {port} on {address} is in use")

    def _keeps_endpoint(self, plan: IKEPlan) -> bool:
        current = self.hub.plan
        return (
            self.hub.endpoint is not None and current is not None and current.fingerprint == plan.fingerprint
        )

    async def _bind_ike(self, plan: IKEPlan) -> IKEEndpoint:
        try:
            return await IKEHub.open(plan)
        except OSError as exc:
            raise ConfigError(
                "resource-denied",
                f"{plan.path}/listen-port",
                f"cannot bind {plan.listen[0]} port {plan.listen[1]}: {(exc.strerror or str(exc)).lower()}",
            ) from None

    def _server_binding(self, plan: Plan) -> ServerBinding | None:
        server = plan.server
        if server is None or not server.allowed_peers or plan.ike is None:
            return None
        return ServerBinding(
            self.hub, [plan.ike.peers[name].config.remote_id for name in server.allowed_peers]
        )

    @staticmethod
    def _server_config(plan: ServerPlan, binding: ServerBinding | None) -> ServerConfig:
        try:
            return ServerConfig(
                modes=plan.modes,
                key_source=RecordingKeySource(plan.key_chain, False) if plan.key_chain is not None else None,
                ikev2_key_source=RecordingKeySource(binding, True) if binding is not None else None,
                count=plan.count,
                max_sessions=plan.limits.max_sessions_per_connection,
                max_message_size=None,
            )
        except ValueError as exc:
            raise ConfigError("invalid-value", f"{plan.path}/modes", str(exc)) from None

    async def _bind_server(
        self, plan: Plan, config: ServerConfig, binding: ServerBinding | None
    ) -> ServerRun:
        server = plan.server
        assert server is not None
        reflector = Reflector(_reflector_config(plan.reflector))
        listener = RuntimeListener(config, server.limits, reflector, self.publish, binding)
        listener.max_test_sessions = plan.reflector.max_sessions
        listener.dscp = server.dscp
        try:
            addresses = await listener.listen(server.address or "", server.port)  # "" = every address
        except OSError as exc:
            reflector.close()
            where = server.address or "any address"
            raise ConfigError(
                "resource-denied",
                f"{server.path}/server-tcp-port",
                f"cannot listen on {where} port {server.port}: {(exc.strerror or str(exc)).lower()}",
            ) from None
        return ServerRun(server, listener, reflector, addresses)

    async def _release(self, prepared: _Prepared) -> None:
        reflector = prepared.light_reflector or self.light_reflector
        if reflector is not None:
            for address, port in prepared.light_ports:
                reflector.release_port(address, port)
        if prepared.light_reflector is not None:
            prepared.light_reflector.close()
        if prepared.endpoint is not None:
            prepared.endpoint.close()
        if prepared.server is not None:
            await prepared.server.listener.close()
            prepared.server.reflector.close()

    async def _commit(self, plan: Plan, prepared: _Prepared) -> None:
        old_endpoint = self.hub.install(plan.ike, prepared.endpoint)
        if old_endpoint is not None:
            await retire_endpoint(old_endpoint)
        await self._commit_server(plan, prepared)
        self._commit_light_ports(plan, prepared)
        await self._commit_clients(plan)
        self.plan = plan

    async def _commit_server(self, plan: Plan, prepared: _Prepared) -> None:
        current = self.server
        if current is not None and plan.server is not None and prepared.server_config is not None:
            current.listener.reconfigure(prepared.server_config, plan.server.limits)
            current.listener.use_binding(prepared.binding)
            current.reflector.config = _reflector_config(plan.reflector)
            current.listener.max_test_sessions = plan.reflector.max_sessions
            current.listener.dscp = plan.server.dscp
            current.plan = plan.server
            return
        if current is not None:
            self.retired_twamp.update(state_json.server_counters(current))
            await current.listener.close()
            current.reflector.close()
        self.server = prepared.server
        if self.server is not None:
            log.info("TWAMP server listening on %s", ", ".join(self.server.addresses))

    def _commit_light_ports(self, plan: Plan, prepared: _Prepared) -> None:
        if prepared.light_reflector is not None:
            self.light_reflector = prepared.light_reflector
        reflector = self.light_reflector
        if reflector is None:
            return
        reflector.config = _reflector_config(plan.reflector, refwait=LIGHT_REFWAIT)
        for key in [k for k in self.light_ports if k not in plan.reflector.light_ports]:
            reflector.remove_session(self.light_ports.pop(key))
        for address, port in prepared.light_ports:
            sid = os.urandom(16)
            reflector.add_session(_light_params(sid, address, port))
            reflector.start_session(sid)
            self.light_ports[(address, port)] = sid
            log.info("TWAMP Light reflector on %s port %d", address, port)

    async def _commit_clients(self, plan: Plan) -> None:
        for name in list(self.light_runs):
            new_light = plan.light_sessions.get(name)
            if new_light is None or new_light != self.light_runs[name].plan:
                await self.light_runs.pop(name).close()
        for name, light in plan.light_sessions.items():
            if name not in self.light_runs:
                self.light_runs[name] = LightRun(light, self.publish, self.client_errors)
        for name in list(self.clients):
            run = self.clients[name]
            new = plan.connections.get(name)
            if new is None or new.fingerprint != run.plan.fingerprint or not plan.client_enabled:
                await run.close()
                del self.clients[name]
        if not plan.client_enabled:
            return
        for name, connection in plan.connections.items():
            if name in self.clients:
                continue
            peer = None
            if connection.ikev2 is not None and plan.ike is not None:
                peer = plan.ike.peers.get(connection.ikev2.peer)
            self.clients[name] = ClientRun(connection, self.hub, peer, self.publish, self.client_errors)

    # ------------------------------------------------------------------ state and shutdown

    def state(self, paths: list[str] | None = None) -> dict[str, Any]:
        return state_json.build(self, paths)

    async def close(self) -> None:
        async with self._lock:
            for run in list(self.clients.values()):
                await run.close()
            self.clients.clear()
            for light in list(self.light_runs.values()):
                await light.close()
            self.light_runs.clear()
            if self.light_reflector is not None:
                self.light_reflector.close()
                self.light_reflector = None
            if self.server is not None:
                await self.server.listener.close()
                self.server.reflector.close()
                self.server = None
            await self.hub.close()
