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
from collections import Counter
from dataclasses import dataclass
from typing import Any

from nf.binding import ServerBinding
from nf.net.ike_endpoint import IKEEndpoint
from nf.net.reflector import Reflector, ReflectorConfig
from nf.runtime import state as state_json
from nf.runtime.client import ClientRun
from nf.runtime.config import ConfigError, IKEPlan, Plan, ReflectorPlan, ServerPlan, build_plan
from nf.runtime.events import EventBus
from nf.runtime.ike import IKEHub, retire_endpoint
from nf.runtime.server import RecordingKeySource, RuntimeListener
from nf.twamp.control_server import ServerConfig

log = logging.getLogger("nf.runtime")


@dataclass
class ServerRun:
    plan: ServerPlan
    listener: RuntimeListener
    reflector: Reflector
    addresses: list[str]


@dataclass
class _Prepared:
    endpoint: IKEEndpoint | None = None  # a newly bound endpoint (None: keep the running one)
    server: ServerRun | None = None  # a newly bound server (None: keep or remove the running one)
    server_config: ServerConfig | None = None  # new policy for a kept server
    binding: ServerBinding | None = None


def _reflector_config(plan: ReflectorPlan) -> ReflectorConfig:
    return ReflectorConfig(refwait=plan.refwait, max_pps=plan.max_pps)


class Runtime:
    def __init__(self) -> None:
        self.bus = EventBus()
        self.hub = IKEHub(self.publish)
        self.plan = Plan()
        self.server: ServerRun | None = None
        self.clients: dict[str, ClientRun] = {}
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

    async def _commit_clients(self, plan: Plan) -> None:
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
            if self.server is not None:
                await self.server.listener.close()
                self.server.reflector.close()
                self.server = None
            await self.hub.close()
