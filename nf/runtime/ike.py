"""The runtime's IKE side: the one IKE endpoint, what the runtime knows about its SAs, auto-initiation.

IKEHub stands in for "the current endpoint" towards nf.binding (it is an SAInitiator): the RFC 7717 bindings
keep working when a new configuration replaces the endpoint. It turns endpoint events into ike-sa-up/down
notifications, remembers per SA what state reports (peer name, role, establishment time, rekey count), and
keeps an SA up with every peer configured with auto-initiate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from nf.ike.exchanges import PeerConfig
from nf.ike.identities import Identity
from nf.ike.sa import IKESA, Address, Deleted, Established, Event, Failed, Rekeyed, SAState
from nf.ike.transforms import DhId, EncrId, IntegId, PrfId
from nf.net.ike_endpoint import IKEEndpoint, Lifetimes, open_ike_endpoint
from nf.runtime import events
from nf.runtime.config import IKEPlan, PeerPlan

log = logging.getLogger("nf.runtime.ike")

RETRY_DELAY = 5.0  # seconds between auto-initiate attempts after a failure
LIFETIME_POLL = 1.0  # seconds between checks of rekey-time and hard-lifetime
REKEY_TIMEOUT = 30.0  # seconds a rekey may take before the endpoint gives up on it
DELETE_TIMEOUT = 2.0  # seconds a peer gets to acknowledge the Delete of an SA we end


@dataclass
class SAInfo:
    """What the runtime remembers about one SA beyond the engine's IKESA (for state and events)."""

    peer: str | None
    initiator: bool
    established: float  # Unix time
    rekey_count: int = 0
    since: float = field(default_factory=time.monotonic)  # for the peer's rekey-time and hard-lifetime


def _yang_name(member: str) -> str:
    return member.lower().replace("_", "-")


def sa_algorithms(sa: IKESA) -> dict[str, str]:
    """The negotiated transforms in twamp-nf-ike enumeration spelling (member names, lower case, hyphens)."""
    keymat = sa.keymat
    if keymat is None:
        return {}
    suite = keymat.suite
    found: dict[str, str] = {}
    with contextlib.suppress(ValueError):
        found["encryption"] = f"{_yang_name(EncrId(suite.encr.transform_id).name)}-{suite.encr.key_bits}"
    if suite.integ is not None:
        with contextlib.suppress(ValueError):
            found["integrity"] = _yang_name(IntegId(suite.integ.transform_id).name)
    with contextlib.suppress(ValueError):
        found["prf"] = _yang_name(PrfId(suite.prf.transform_id).name)
    with contextlib.suppress(ValueError):
        found["dh-group"] = _yang_name(DhId(suite.dh.transform_id).name)
    return found


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return False


def _down_reason(reason: str) -> str:
    if "peer" in reason:
        return "deleted-by-peer"
    if "timeout" in reason:
        return "liveness-timeout"
    return "deleted-locally"


class ListenerScope:
    """Listeners registered through one scope; `close()` drops them all (a binding that is replaced)."""

    def __init__(self, hub: IKEHub) -> None:
        self._hub = hub
        self._callbacks: list[Callable[[Event], None]] = []

    def lookup(self, spi_i: bytes, spi_r: bytes) -> IKESA | None:
        return self._hub.lookup(spi_i, spi_r)

    def add_listener(self, callback: Callable[[Event], None]) -> None:
        self._callbacks.append(callback)
        self._hub.listeners.append(callback)

    async def initiate(
        self, remote: Address, config: PeerConfig, timeout: float = 60.0
    ) -> Established | Failed:
        return await self._hub.initiate(remote, config, timeout)

    def replay_established(self, sa: IKESA) -> None:
        """Tells this scope's listeners about an SA that came up before they were registered."""
        event = Established(sa.spis, sa.algorithms, sa.peer_id, sa.initiator)
        for callback in list(self._callbacks):
            callback(event)

    def close(self) -> None:
        for callback in self._callbacks:
            with contextlib.suppress(ValueError):
                self._hub.listeners.remove(callback)
        self._callbacks.clear()


class IKEHub:
    def __init__(self, publish: Callable[[tuple[str, dict[str, object]]], None]) -> None:
        self._publish = publish
        self.endpoint: IKEEndpoint | None = None
        self.plan: IKEPlan | None = None
        self.listeners: list[Callable[[Event], None]] = []
        self.sas: dict[tuple[bytes, bytes], SAInfo] = {}
        self.retired_counters: Counter[str] = Counter()
        self._auto: dict[str, tuple[str, asyncio.Task[None]]] = {}  # peer -> (fingerprint, task)
        self._initiating: dict[tuple[Address, int], asyncio.Future[Established | Failed]] = {}
        self._lifetime_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # --- SAInitiator for nf.binding

    def lookup(self, spi_i: bytes, spi_r: bytes) -> IKESA | None:
        return self.endpoint.lookup(spi_i, spi_r) if self.endpoint is not None else None

    def add_listener(self, callback: Callable[[Event], None]) -> None:
        self.listeners.append(callback)

    def scope(self) -> ListenerScope:
        return ListenerScope(self)

    async def initiate(
        self, remote: Address, config: PeerConfig, timeout: float = 60.0
    ) -> Established | Failed:
        """One initiation per peer at a time: auto-initiate and a binding asking at once share one SA."""
        endpoint = self.endpoint
        if endpoint is None:
            return Failed((b"\0" * 8, b"\0" * 8), "no-endpoint", "IKE is not configured")
        key = (remote, id(config))
        running = self._initiating.get(key)
        if running is None or running.done():
            running = asyncio.ensure_future(endpoint.initiate(remote, config, timeout))
            self._initiating[key] = running
            running.add_done_callback(lambda _: self._initiating.pop(key, None))
        return await asyncio.shield(running)

    # --- configuration

    @staticmethod
    async def open(plan: IKEPlan) -> IKEEndpoint:
        """Binds the endpoint of a plan (the prepare step of apply); OSError when the address is taken."""
        return await open_ike_endpoint(
            plan.listen, peers=[p.config for p in plan.peers.values()], lifetimes=_lifetimes(plan)
        )

    def install(self, plan: IKEPlan | None, endpoint: IKEEndpoint | None) -> IKEEndpoint | None:
        """Commit: `endpoint` is the new one (None keeps the running one when the plan keeps the socket).
        Returns the endpoint to close, if one was replaced."""
        old = None
        if plan is None or (endpoint is not None and endpoint is not self.endpoint):
            old = self.endpoint
            if old is not None:
                self._retire(old)
            self.endpoint = endpoint if plan is not None else None
            if self.endpoint is not None:
                self.endpoint.add_listener(self._on_event)
        self.plan = plan
        if self.endpoint is not None and plan is not None and self.endpoint.engine is not None:
            self.endpoint.engine.peers = tuple(p.config for p in plan.peers.values())
            self.endpoint.lifetimes = _lifetimes(plan)
        self._restart_auto_initiate(plan)
        if self._lifetime_task is None or self._lifetime_task.done():
            self._lifetime_task = asyncio.ensure_future(self._lifetimes_loop())
        return old

    def _retire(self, endpoint: IKEEndpoint) -> None:
        with contextlib.suppress(RuntimeError):
            self.retired_counters.update(endpoint.counters.snapshot())
        for spis in list(self.sas):
            self._publish(events.ike_sa_down(spis, peer=self.sas[spis].peer, reason="deleted-locally"))
        self.sas.clear()

    def counters(self) -> Counter[str]:
        total = Counter(self.retired_counters)
        if self.endpoint is not None:
            with contextlib.suppress(RuntimeError):
                total.update(self.endpoint.counters.snapshot())
        return total

    async def close(self) -> None:
        """Shutdown: stop auto-initiation, delete every SA with its peer (bounded), close the socket."""
        for _, task in self._auto.values():
            task.cancel()
        self._auto.clear()
        if self._lifetime_task is not None:
            self._lifetime_task.cancel()
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            await retire_endpoint(endpoint)

    # --- SA bookkeeping and notifications

    def peer_of(self, sa: IKESA) -> str | None:
        """The configured peer an SA belongs to: its address and authenticated identity must match."""
        if self.plan is None:
            return None
        try:
            received = Identity.parse(sa.peer_id) if sa.peer_id else None
        except ValueError:
            received = None
        for peer in self.plan.peers.values():
            if _same_host(sa.remote[0], peer.address) and (
                received is None or peer.config.remote_id.matches(received)
            ):
                return peer.name
        return None

    def established(self, peer: str) -> IKESA | None:
        for spis, info in self.sas.items():
            sa = self.lookup(*spis)
            if info.peer == peer and sa is not None and sa.state is SAState.ESTABLISHED:
                return sa
        return None

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Established):
            sa = self.lookup(*event.spis)
            if sa is not None:
                info = SAInfo(self.peer_of(sa), event.initiator, time.time())
                self.sas[event.spis] = info
                self._publish(
                    events.ike_sa_up(
                        event.spis,
                        peer=info.peer,
                        initiator=event.initiator,
                        remote_address=sa.remote[0],
                        algorithms=sa_algorithms(sa),
                    )
                )
        elif isinstance(event, Rekeyed):
            old: SAInfo | None = self.sas.pop(event.old_spis, None)
            sa = self.lookup(*event.new_spis)
            if sa is not None:
                info = SAInfo(
                    old.peer if old else self.peer_of(sa),
                    sa.initiator,
                    time.time(),
                    (old.rekey_count + 1) if old else 1,
                )
                self.sas[event.new_spis] = info
                self._publish(events.ike_sa_down(event.old_spis, peer=info.peer, reason="rekeyed"))
                self._publish(
                    events.ike_sa_up(
                        event.new_spis,
                        peer=info.peer,
                        initiator=sa.initiator,
                        remote_address=sa.remote[0],
                        algorithms=sa_algorithms(sa),
                        rekeyed_from=event.old_spis,
                    )
                )
        elif isinstance(event, Deleted | Failed):
            gone: SAInfo | None = self.sas.pop(event.spis, None)
            if gone is not None:
                self._publish(
                    events.ike_sa_down(event.spis, peer=gone.peer, reason=_down_reason(event.reason))
                )
                if event.reason == "timeout":
                    self._after_liveness_failure(gone.peer)
        self._changed.set()
        for callback in list(self.listeners):
            try:
                callback(event)
            except Exception:
                log.exception("IKE event listener failed")

    def _after_liveness_failure(self, name: str | None) -> None:
        """YANG liveness action restart: a new SA after the peer stopped answering (auto-initiate peers are
        brought back by their own loop anyway)."""
        peer = self.plan.peers.get(name) if self.plan is not None and name is not None else None
        if peer is not None and peer.liveness_action == "restart" and not peer.auto_initiate:
            log.info("IKE peer %s stopped answering: initiating a new SA", peer.name)
            _background(self.initiate((peer.address, peer.port), peer.config, REKEY_TIMEOUT))

    # --- per-peer lifetimes

    async def _lifetimes_loop(self) -> None:
        """Each peer's rekey-time and hard-lifetime (the endpoint's own timers are per endpoint, so the
        runtime runs these per SA): the original initiator rekeys, both ends delete at the hard lifetime."""
        while True:
            await asyncio.sleep(LIFETIME_POLL)
            self.check_lifetimes(time.monotonic())

    def check_lifetimes(self, now: float) -> None:
        endpoint, plan = self.endpoint, self.plan
        if endpoint is None or endpoint.engine is None or plan is None:
            return
        for spis, info in list(self.sas.items()):
            peer = plan.peers.get(info.peer) if info.peer is not None else None
            sa = endpoint.lookup(*spis)
            if peer is None or sa is None or sa.state is not SAState.ESTABLISHED or sa.busy:
                continue
            age = now - info.since
            if age >= peer.hard_lifetime:
                log.info("IKE SA with %s reached its hard lifetime: deleting", peer.name)
                _background(endpoint.delete(sa, DELETE_TIMEOUT))
            elif age >= peer.rekey_time and sa.initiator:
                log.info("IKE SA with %s reached its rekey time: rekeying", peer.name)
                _background(endpoint.rekey(sa, REKEY_TIMEOUT))

    # --- auto-initiate

    def _restart_auto_initiate(self, plan: IKEPlan | None) -> None:
        wanted = {p.name: p for p in (plan.peers.values() if plan else ()) if p.auto_initiate}
        for name in list(self._auto):
            fingerprint, task = self._auto[name]
            if name not in wanted or wanted[name].fingerprint != fingerprint:
                task.cancel()
                del self._auto[name]
        for name, peer in wanted.items():
            if name not in self._auto:
                self._auto[name] = (peer.fingerprint, asyncio.ensure_future(self._keep_up(peer)))

    async def _keep_up(self, peer: PeerPlan) -> None:
        """Keeps one SA with `peer` established (YANG auto-initiate)."""
        while True:
            if self.established(peer.name) is None:
                event = await self.initiate((peer.address, peer.port), peer.config, timeout=30.0)
                if isinstance(event, Failed):
                    log.warning("IKE SA with %s failed: %s", peer.name, event.reason)
                    await asyncio.sleep(RETRY_DELAY)
                    continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RETRY_DELAY)


async def retire_endpoint(endpoint: IKEEndpoint, timeout: float = DELETE_TIMEOUT) -> None:
    """Tells the peers of every established SA that it ends (INFORMATIONAL Delete), then closes the socket;
    a peer that does not answer within `timeout` finds out by its own liveness check."""
    engine = endpoint.engine
    established = [sa for sa in engine.registry if sa.state is SAState.ESTABLISHED] if engine else []
    if established:
        deletes = [asyncio.ensure_future(endpoint.delete(sa, timeout)) for sa in established]
        await asyncio.wait(deletes, timeout=timeout)
        for task in deletes:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: a peer that failed to answer is not an error here
    endpoint.close()


def _background(operation: Coroutine[Any, Any, object]) -> None:
    """Runs an SA operation whose outcome arrives as endpoint events anyway; its own result is dropped."""
    task = asyncio.ensure_future(operation)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _lifetimes(plan: IKEPlan) -> Lifetimes:
    """The endpoint's own timers: liveness checks at the shortest interval of the peers; rekeying is per
    peer (IKEHub.check_lifetimes)."""
    liveness = [p.liveness_interval for p in plan.peers.values() if p.liveness_interval > 0]
    return Lifetimes(rekey_time=0.0, liveness_interval=min(liveness, default=0.0))
