"""The TWAMP server's asyncio shell: accepts control connections and hands their sessions to the Reflector.

All protocol decisions live in the sans-IO ControlServer; this module only moves octets, enforces the
resource limits (connections in total and per client, SERVWAIT), turns SessionRequested/Start/Stop events
into Reflector calls, and counts every refusal and bad input by reason. A misbehaving client ends its own
connection, never the listener: every per-connection failure is caught, counted and logged rate-limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nf.net.hostport import format_hostport
from nf.net.limits import ConnectionTracker, Limits
from nf.net.rate_limited_log import RateLimitedLog
from nf.net.reflector import Reflector, SessionState
from nf.twamp.control_events import (
    ConnectionClosed,
    ConnectionFailed,
    ConnectionState,
    RequestRejected,
    SessionRequested,
    SetupCompleted,
    StartNRequested,
    StartRequested,
    StopNRequested,
    StopRequested,
)
from nf.twamp.control_server import ControlServer, ServerConfig
from nf.twamp.modes import Accept, Modes

log = logging.getLogger(__name__)

READ_SIZE = 65536
_REFLECTING = frozenset({SessionState.STARTED, SessionState.STOPPING})  # states that suspend SERVWAIT

# The control connection whose octets the machine is processing: (client address, client port, local address,
# local port). Set in each connection's own task, so code the machine calls (a KeySource such as the RFC 7717
# binding, reporting an unknown SA) can name the client without a parameter through the sans-IO machine.
CONTROL_CONNECTION: contextvars.ContextVar[tuple[str, int, str, int] | None] = contextvars.ContextVar(
    "twamp_control_connection", default=None
)


@dataclass
class ListenerCounters:
    """Everything the listener counts; `as_dict()` is the stats-file shape (see README)."""

    connections: Counter[str] = field(default_factory=Counter)  # accepted, closed, refused_*, servwait, ...
    bad_input: Counter[str] = field(default_factory=Counter)  # ControlFailure values
    sessions: Counter[str] = field(default_factory=Counter)  # requested, accepted, rejected_*, started, ...
    modes: Counter[str] = field(default_factory=Counter)  # completed setups by security mode

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "connections": dict(self.connections),
            "bad_input": dict(self.bad_input),
            "sessions": dict(self.sessions),
            "modes": dict(self.modes),
        }


class ControlListener:
    """One TWAMP server: TCP listeners sharing a ServerConfig, Limits, counters and a Reflector."""

    def __init__(
        self,
        config: ServerConfig,
        limits: Limits,
        reflector: Reflector,
        *,
        test_port_range: tuple[int, int] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.limits = limits
        self.reflector = reflector
        self.counters = ListenerCounters()
        self._test_port_range = test_port_range
        self._rng = rng
        self._clock = clock
        self._start_time = clock()
        self._tracker = ConnectionTracker(limits)
        self._refusing = ServerConfig(modes=Modes(0), count=config.count)
        self._servers: list[asyncio.Server] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._log = RateLimitedLog(log)

    @property
    def active_connections(self) -> int:
        return self._tracker.active

    async def listen(self, host: str, port: int) -> list[str]:
        """Starts accepting on host:port (port 0: kernel's choice); returns the bound addresses as text."""
        server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        self._servers.append(server)
        return [format_hostport(s.getsockname()[0], s.getsockname()[1]) for s in server.sockets]

    def stats(self) -> dict[str, Any]:
        totals = self.reflector.totals()
        return {
            **self.counters.as_dict(),
            "active_connections": self._tracker.active,
            "reflector": {
                "reflected": totals.reflected,
                "dropped": {reason.value: n for reason, n in totals.dropped.items()},
                "sessions": totals.sessions,
                "ports": totals.ports,
                "receive_calls": totals.receive_calls,  # datagrams received over this: the batching
                "send_calls": totals.send_calls,
            },
        }

    async def close(self) -> None:
        """Stops accepting, ends every control connection and waits for their handlers to finish."""
        for server in self._servers:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    # ------------------------------------------------------------------ one control connection

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        refusal = self._tracker.admit(client)
        try:
            if refusal is not None:
                self.counters.connections[f"refused_{refusal.value}"] += 1
                self._log.warning(
                    refusal.value, "refused control connection from %s: %s", client, refusal.value
                )
                await self._send_refusal(writer)
                return
            self.counters.connections["accepted"] += 1
            try:
                await _Connection(self, reader, writer, client).run()
            finally:
                self._tracker.release(client)
                self.counters.connections["closed"] += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must cost one connection, never the listener
            self.counters.connections["internal_error"] += 1
            log.exception("control connection from %s failed", client)
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _send_refusal(self, writer: asyncio.StreamWriter) -> None:
        """A Server Greeting offering no modes: 'not willing to talk' (RFC 4656 s3.1), then close."""
        local = writer.get_extra_info("sockname")
        peer = writer.get_extra_info("peername")
        machine = ControlServer(
            self._refusing,
            rng=self._rng,
            start_time=self._start_time,
            local_address=_plain(local[0]),
            peer_address=_plain(peer[0]),
        )
        writer.write(machine.data_to_send())
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.drain(), self.limits.servwait)

    def count_bad_input(self, reason: str, client: str, detail: str) -> None:
        self.counters.bad_input[reason] += 1
        self._log.warning(reason, "control connection from %s: %s: %s", client, reason, detail)

    def reflector_port(self, address: str, requested: int) -> int:
        """A test port for a session: the requested one when allowed, else one of --test-ports, else any."""
        low_high = self._test_port_range
        if low_high is not None and not low_high[0] <= requested <= low_high[1]:
            requested = 0
        return self.reflector.reserve_port(address, requested)

    def new_machine(self, local: str, peer: str) -> ControlServer:
        return ControlServer(
            self.config, rng=self._rng, start_time=self._start_time, local_address=local, peer_address=peer
        )

    def now(self) -> float:
        return self._clock()


class _Connection:
    def __init__(
        self, owner: ControlListener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        self.owner = owner
        self.reader = reader
        self.writer = writer
        self.client = client
        local = writer.get_extra_info("sockname")
        self.machine = owner.new_machine(_plain(local[0]), _plain(client))
        self.sids: set[bytes] = set()  # sessions of this connection not yet stopped

    async def run(self) -> None:
        machine, owner = self.machine, self.owner
        peer, local = self.writer.get_extra_info("peername"), self.writer.get_extra_info("sockname")
        if peer and local:
            CONTROL_CONNECTION.set((_plain(str(peer[0])), int(peer[1]), _plain(str(local[0])), int(local[1])))
        try:
            await self._flush()
            while machine.state is not ConnectionState.CLOSED:
                data = await self._read()
                if data is None:
                    owner.counters.connections["servwait_timeout"] += 1
                    owner._log.warning("servwait", "control connection from %s idle: closed", self.client)
                    return
                machine.receive_data(data)
                self._handle_events()
                await self._flush()
        except TimeoutError:
            owner.counters.connections["servwait_timeout"] += 1
            owner._log.warning("servwait", "control connection from %s stopped reading: closed", self.client)
        except (ConnectionError, OSError) as exc:
            owner.count_bad_input("connection-error", self.client, str(exc))
        finally:
            for sid in self.sids:  # the client is gone: its unstopped sessions end now (RFC 5357 s3.8)
                owner.reflector.remove_session(sid)

    async def _read(self) -> bytes | None:
        """Next chunk; b"" at EOF; None when SERVWAIT expired with no started session of ours reflecting."""
        while True:
            try:
                return await asyncio.wait_for(self.reader.read(READ_SIZE), self.owner.limits.servwait)
            except TimeoutError:
                if not self._sessions_running():
                    return None

    def _sessions_running(self) -> bool:
        """SERVWAIT is suspended from a session's start until it ends (REFWAIT or its Timeout governs it
        then), as owamp's twampd stops its control timer at Start-Sessions. A session accepted but not
        started carries no test packets, so it does not keep an idle connection open."""
        for sid in self.sids:
            counters = self.owner.reflector.counters(sid)
            if counters is not None and counters.state in _REFLECTING:
                return True
        return False

    async def _flush(self) -> None:
        """Sends what the machine produced; a client that stops reading is cut off after SERVWAIT."""
        data = self.machine.data_to_send()
        if data:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.owner.limits.servwait)

    def _handle_events(self) -> None:
        machine, owner = self.machine, self.owner
        while (event := machine.next_event()) is not None:
            if isinstance(event, SetupCompleted):
                owner.counters.modes[event.security.value] += 1
                log.info("control connection from %s: mode %#x", self.client, int(event.mode))
            elif isinstance(event, SessionRequested):
                self._on_session_requested(event)
            elif isinstance(event, StartRequested):
                machine.ack_start(self._start(event.sids))
            elif isinstance(event, StartNRequested):
                machine.ack_start_n(self._start(event.sids))
            elif isinstance(event, StopRequested | StopNRequested):
                self._stop(event.sids)
                if isinstance(event, StopNRequested):
                    machine.ack_stop_n(Accept.OK)
            elif isinstance(event, RequestRejected):
                owner.counters.sessions["rejected"] += 1
                owner.count_bad_input(event.reason.value, self.client, event.detail)
            elif isinstance(event, ConnectionFailed):
                owner.count_bad_input(event.reason.value, self.client, event.detail)
            elif isinstance(event, ConnectionClosed):
                log.info("control connection from %s closed by the client", self.client)

    def _on_session_requested(self, event: SessionRequested) -> None:
        owner, machine = self.owner, self.machine
        owner.counters.sessions["requested"] += 1
        try:
            port = owner.reflector_port(event.reflector_address, event.reflector_port)
        except (OSError, RuntimeError) as exc:
            owner.counters.sessions["rejected_no_test_port"] += 1
            owner._log.warning("no-test-port", "no UDP test port for %s: %s", self.client, exc)
            machine.reject_session(Accept.TEMPORARY_RESOURCE_LIMITATION)
            return
        server_octets = int.from_bytes(owner._rng(2), "big") if event.octets_to_reflect else 0
        params = machine.accept_session(port, now=owner.now(), server_octets=server_octets)
        owner.reflector.add_session(params, max_pps=owner.limits.max_pps)
        self.sids.add(params.sid)
        owner.counters.sessions["accepted"] += 1

    def _start(self, sids: tuple[bytes, ...]) -> Accept:
        """Starts the sessions; one that cannot start makes the answer Failure: it ended (REFWAIT before
        Start-Sessions) or was stopped by Stop-N-Sessions (it only reflects until its Timeout, so it cannot be
        restarted; answering OK would promise reflections that never come). Starting a running one is OK."""
        accept = Accept.OK
        reflector = self.owner.reflector
        for sid in sids:
            counters = reflector.counters(sid)
            if counters is not None and counters.state is SessionState.STARTED:
                continue
            try:
                if counters is None or counters.state is not SessionState.ADDED:
                    raise KeyError(sid)
                reflector.start_session(sid)
                self.owner.counters.sessions["started"] += 1
            except KeyError:
                self.owner.counters.sessions["start_failed"] += 1
                accept = Accept.FAILURE
        return accept

    def _stop(self, sids: tuple[bytes, ...]) -> None:
        for sid in sids:
            with contextlib.suppress(KeyError):  # already ended by REFWAIT
                self.owner.reflector.stop_session(sid)
            self.sids.discard(sid)
        self.owner.counters.sessions["stopped"] += len(sids)


def _plain(address: str) -> str:
    """Drops an IPv6 zone (fe80::1%eth0) that ipaddress cannot parse."""
    return address.split("%", 1)[0]
