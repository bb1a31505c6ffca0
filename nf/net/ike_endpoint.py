"""asyncio UDP adapter for the sans-IO IKE engine: one socket per local addr:port, many SAs, both roles.

The engine decides everything; this shell only moves datagrams, runs one timer (the engine's earliest
deadline: retransmissions, half-open expiry) and the SA lifetime timers (liveness checks on idle SAs, IKE
SA rekey after `rekey_time`), and turns engine events into awaitable results and listener callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from nf.ike.counters import IKECounters
from nf.ike.exchanges import IKEEngine, Limits, PeerConfig
from nf.ike.sa import IKESA, Address, Deleted, Established, Event, Failed, Rekeyed, SAState
from nf.ike.transforms import Rng

log = logging.getLogger("nf.net.ike_endpoint")


@dataclass(frozen=True)
class Lifetimes:
    """SA timers run by the adapter (0 disables): rekey `rekey_time` s after establishment, and send a
    liveness check when nothing was heard from the peer for `liveness_interval` s."""

    rekey_time: float = 0.0
    liveness_interval: float = 0.0


class IKEEndpoint(asyncio.DatagramProtocol):
    """Use `await open_ike_endpoint(...)`; `close()` releases the socket and every timer."""

    def __init__(
        self, peers: list[PeerConfig], rng: Rng, limits: Limits | None, lifetimes: Lifetimes
    ) -> None:
        self._peers = peers
        self._rng = rng
        self._limits = limits
        self.lifetimes = lifetimes
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self.engine: IKEEngine | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lifetime_timers: dict[tuple[bytes, bytes], asyncio.TimerHandle] = {}
        self._waiters: list[tuple[Callable[[Event], bool], asyncio.Future[Event]]] = []
        self._listeners: list[Callable[[Event], None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"IKEEndpoint({self.engine!r})"

    @property
    def local(self) -> Address:
        if self.engine is None:
            raise RuntimeError("endpoint not open")
        return self.engine.local

    @property
    def counters(self) -> IKECounters:
        """Refusals per reason (nf.ike.counters.Reason), for the runtime's statistics."""
        return self._engine().counters

    def _engine(self) -> IKEEngine:
        if self.engine is None or self._closed:
            raise RuntimeError("endpoint is closed")
        return self.engine

    # --- asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        sockname = self._transport.get_extra_info("sockname")
        self.engine = IKEEngine(
            (sockname[0], sockname[1]), self._rng, self._loop.time(), peers=self._peers, limits=self._limits
        )

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.engine is None or self._closed:
            return
        self.engine.receive_datagram(data, (str(addr[0]), int(addr[1])), self._loop.time())
        self._flush()

    def error_received(self, exc: Exception) -> None:
        log.debug("ike endpoint socket error: %s", exc)  # e.g. ICMP port unreachable; retransmission copes

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timers()

    # --- commands

    def add_listener(self, callback: Callable[[Event], None]) -> None:
        """Called for every event (Established, Rekeyed, Deleted, Failed), e.g. by the RFC 7717 binding."""
        self._listeners.append(callback)

    def lookup(self, spi_i: bytes, spi_r: bytes) -> IKESA | None:
        return self._engine().lookup(spi_i, spi_r)

    async def initiate(
        self, remote: Address, config: PeerConfig, timeout: float = 60.0
    ) -> Established | Failed:
        """Set up an IKE SA; returns its Established or Failed event (Failed "timeout" past `timeout`)."""
        engine = self._engine()
        sa = engine.initiate(remote, config, self._loop.time())
        spi_i = sa.spi_i
        future = self._wait(lambda e: isinstance(e, Established | Failed) and e.spis[0] == spi_i)
        self._flush()
        try:
            event = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            if engine.lookup(*sa.spis) is not None:
                engine.registry.remove(sa)
            return Failed(sa.spis, "timeout", f"no answer within {timeout:g} s")
        assert isinstance(event, Established | Failed)
        return event

    async def rekey(self, sa: IKESA, timeout: float = 60.0) -> Rekeyed | Failed:
        old = sa.spis
        future = self._wait(lambda e: isinstance(e, Rekeyed | Failed | Deleted) and _old_spis(e) == old)
        self._engine().rekey(sa, self._loop.time())
        self._flush()
        event = await asyncio.wait_for(future, timeout)
        if isinstance(event, Deleted):
            return Failed(old, event.reason)
        assert isinstance(event, Rekeyed | Failed)
        return event

    async def delete(self, sa: IKESA, timeout: float = 60.0) -> Deleted:
        spis = sa.spis
        future = self._wait(lambda e: isinstance(e, Deleted) and e.spis == spis)
        self._engine().delete(sa, self._loop.time())
        self._flush()
        event = await asyncio.wait_for(future, timeout)
        assert isinstance(event, Deleted)
        return event

    def check_liveness(self, sa: IKESA) -> bool:
        started = self._engine().check_liveness(sa, self._loop.time())
        self._flush()
        return started

    def close(self) -> None:
        """Close the socket without telling peers (use `delete` first for a graceful end); pending
        `initiate`/`rekey`/`delete` calls raise RuntimeError("endpoint is closed")."""
        self._closed = True
        self._cancel_timers()
        for _, future in self._waiters:  # pending initiate/rekey/delete calls learn why they stopped
            if not future.done():
                future.set_exception(RuntimeError("endpoint is closed"))
        self._waiters.clear()
        if self._transport is not None:
            self._transport.close()

    # --- plumbing

    def _wait(self, predicate: Callable[[Event], bool]) -> asyncio.Future[Event]:
        future: asyncio.Future[Event] = self._loop.create_future()
        self._waiters.append((predicate, future))
        return future

    def _flush(self) -> None:
        """Send what the engine produced, dispatch its events, re-arm the timer."""
        engine = self.engine
        if engine is None or self._transport is None or self._closed:
            return
        for datagram, remote in engine.datagrams_to_send():
            self._transport.sendto(datagram, remote)
        while (event := engine.next_event()) is not None:
            self._dispatch(event)
        self._arm()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Established | Rekeyed):
            spis = event.spis if isinstance(event, Established) else event.new_spis
            self._schedule_lifetime(spis)
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:  # a broken listener must not stop the endpoint
                log.exception("ike event listener failed")
        remaining = []
        for predicate, future in self._waiters:
            if future.done():
                continue
            if predicate(event):
                future.set_result(event)
            else:
                remaining.append((predicate, future))
        self._waiters = remaining

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        engine = self.engine
        deadline = engine.next_timer() if engine is not None else None
        if deadline is not None and not self._closed:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.engine is None or self._closed:
            return
        self.engine.handle_timer(self._loop.time())
        self._flush()

    def _schedule_lifetime(self, spis: tuple[bytes, bytes]) -> None:
        intervals = [t for t in (self.lifetimes.rekey_time, self.lifetimes.liveness_interval) if t > 0]
        if not intervals:
            return
        self._lifetime_timers[spis] = self._loop.call_later(min(intervals), self._on_lifetime, spis)

    def _on_lifetime(self, spis: tuple[bytes, bytes]) -> None:
        self._lifetime_timers.pop(spis, None)
        engine = self.engine
        if engine is None or self._closed:
            return
        sa = engine.lookup(*spis)
        if sa is None or sa.state != SAState.ESTABLISHED:
            return
        now = self._loop.time()
        lifetimes = self.lifetimes
        established = sa.established_at if sa.established_at is not None else now
        if lifetimes.rekey_time > 0 and now - established >= lifetimes.rekey_time and not sa.busy:
            engine.rekey(sa, now)
        elif (
            lifetimes.liveness_interval > 0
            and now - sa.last_heard >= lifetimes.liveness_interval
            and not sa.busy
        ):
            engine.check_liveness(sa, now)
        self._flush()
        if engine.lookup(*spis) is sa and sa.state == SAState.ESTABLISHED:
            intervals = [t for t in (lifetimes.rekey_time, lifetimes.liveness_interval) if t > 0]
            self._lifetime_timers[spis] = self._loop.call_later(min(intervals) / 2, self._on_lifetime, spis)

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for handle in self._lifetime_timers.values():
            handle.cancel()
        self._lifetime_timers.clear()


def _old_spis(event: Event) -> tuple[bytes, bytes]:
    return event.old_spis if isinstance(event, Rekeyed) else event.spis


async def open_ike_endpoint(
    local: Address,
    *,
    peers: list[PeerConfig] | None = None,
    rng: Rng = os.urandom,
    limits: Limits | None = None,
    lifetimes: Lifetimes | None = None,
) -> IKEEndpoint:
    """Bind `local` (port 0 picks a free one: read `.local`) and serve IKE on it."""
    endpoint = IKEEndpoint(list(peers or []), rng, limits, lifetimes or Lifetimes())
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: endpoint, local_addr=local)
    return endpoint


__all__ = ["IKEEndpoint", "Lifetimes", "open_ike_endpoint"]
