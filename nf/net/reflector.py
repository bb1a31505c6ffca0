"""The Session-Reflector: UDP ports, threads and session lifecycle around the per-packet reply builders.

Speed is a requirement, so each reserved port gets its own thread, and the per-packet work runs in C
(nf/net/_fast_reflector.c) with the GIL released: recvmmsg takes every queued datagram with its own kernel
receive timestamp (SO_TIMESTAMPNS, T2) and TTL, the session is found by source address, the reply is built
from the layouts' field offsets, T3 is read just before its sendto. Python sees a packet only when the C
loop hands it back: no active session for it (not started, past its Timeout, a stranger), or a drop to count
and log (short, bad HMAC, rate limit, send failure), or the socket has been idle for its SO_RCVTIMEO. The
C loop enforces a stopping session's Timeout itself; ending sessions (Timeout, REFWAIT), forgetting them
after linger and closing idle ports happen on one housekeeping thread per Reflector, so a port thread never
waits for the GIL while packets flow, however busy the rest of the process is (a test holds the GIL 0.8 s).

With receive_batch 1, or without the C extension, the pure-Python loop (recvmsg, SessionReflector, sendto)
serves instead; it builds the same replies (tests/test_fast_reflector.py) at about a quarter of the rate.

Where the time goes (tests/benchmarks/reflector.py, 2-core VM): the kernel's loopback send is ~3.5-5 us
of CPU per reply and a batched receive ~1-1.5 us per datagram; the C reply builder adds well under 1 us
(unauthenticated) or ~1 us (authenticated: two AES blocks, two HMAC-SHA1). A batched send (send_batch > 1)
saves part of the send cost but stamps each T3 before the replies ahead of it in the batch have left.

Thread-safety: the control side (any thread) adds, starts, stops and removes sessions; only the port's own
thread touches packet counters, so they need no lock. on_session_end is called from a port thread, the
housekeeping thread or close(); it must be quick and thread-safe. Counts are taken before a reply is sent,
and a released port's counts join the totals once its thread has stopped, so totals() after close() misses
nothing.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import functools
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from nf.net.clock_sync import ClockSyncCache
from nf.net.rate_limited_log import RateLimitedLog
from nf.net.socket_options import (
    ANCILLARY_SIZE,
    IP_TTL,
    IPV6_HOPLIMIT,
    SCM_TIMESTAMPNS,
    TEST_TTL,
    enable_receive_timestamps,
    enable_receive_ttl,
    set_dscp,
    set_receive_buffer,
    set_receive_timeout,
    set_send_ttl,
)
from nf.twamp.test_packets import TestPacketCodec, TestPacketError, ntp_from_ns, ntp_now
from nf.twamp.test_reflector import DropReason, SessionReflector, TokenBucket, keep_octets
from nf.twamp.test_session import TestSessionParams

try:  # built at install from nf/net/_fast_reflector.c
    from nf.net import _fast_reflector as native
except ImportError:  # no C extension: every port runs the pure-Python loop
    native = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_REFWAIT = 900.0  # RFC 5357 s4.2: REFWAIT default, seconds


@dataclass(frozen=True, slots=True)
class ReflectorConfig:
    port_range: tuple[int, int] | None = None  # inclusive; used when the requested port is taken
    receive_buffer: int = 4 * 1024 * 1024
    refwait: float = DEFAULT_REFWAIT  # a session (or unused reserved port) idle this long is dropped
    max_pps: float | None = None  # default per-session packets-per-second limit; None = unlimited
    burst: float | None = None  # token bucket depth in packets; default max(1, max_pps / 10)
    poll_interval: float = 0.2  # housekeeping period, and how long an idle port thread blocks in a receive
    linger: float = 5.0  # after a session ends its port stays open this long, counting late packets
    log_interval: float = 10.0  # rate limit of bad-input log records, per reason
    kept_results: int = 1024  # counters of ended sessions kept for counters()
    # SCHED_FIFO priority (1..99) for the port threads, so a packet's arrival preempts ordinary work on a
    # busy host and T3 - T2 stays small; None keeps the normal scheduler. Needs CAP_SYS_NICE.
    realtime_priority: int | None = None
    # After each packet, poll without sleeping for this many seconds before blocking again: the next packet
    # of a busy session then costs no wake-up (tens of microseconds on a VM), at the price of CPU. 0 = off.
    busy_poll: float = 0.0
    # Datagrams taken per receive call (recvmmsg) when several are queued, by the C loop; 1 = the
    # pure-Python loop, one recvmsg per datagram. Each datagram keeps its own kernel timestamp.
    receive_batch: int = 16
    # Replies sent per sendmmsg when a receive brought several datagrams; 1 = every reply on its own. Saves
    # about a third of the send cost per reply, but a reply's T3 is then read before the replies queued
    # ahead of it in the batch have left: it can be early by up to (send_batch - 1) sends (~4 us each here).
    send_batch: int = 1


class SessionState(enum.Enum):
    ADDED = "added"  # accepted, waiting for Start-Sessions
    STARTED = "started"
    STOPPING = "stopping"  # Stop-Sessions seen: still reflecting until the session's Timeout
    ENDED = "ended"


class EndReason(enum.Enum):
    TIMEOUT_AFTER_STOP = "timeout-after-stop"
    REFWAIT = "refwait"
    REMOVED = "removed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SessionCounters:
    sid: bytes
    state: SessionState
    reflected: int
    dropped: Mapping[DropReason, int]
    end_reason: EndReason | None = None

    def __repr__(self) -> str:
        drops = {r.value: n for r, n in self.dropped.items() if n}
        state = self.state.value
        return f"SessionCounters(sid={self.sid.hex()}, {state}, reflected={self.reflected}, {drops})"


@dataclass(frozen=True, slots=True)
class ReflectorTotals:
    reflected: int
    dropped: Mapping[DropReason, int]
    sessions: int  # not yet ended
    ports: int
    kernel_timestamps: bool  # every open port gets SO_TIMESTAMPNS receive timestamps
    internal_errors: int = 0  # packets lost to a bug in the reflect path (logged with a traceback)
    receive_calls: int = 0  # receive system calls that returned datagrams (batching: fewer than datagrams)
    send_calls: int = 0  # send system calls (sendto, or sendmmsg for a batch)


SessionEndCallback = Callable[[SessionCounters], None]


def _normal_address(address: str) -> str:
    return ipaddress.ip_address(address.split("%", 1)[0]).compressed


_Address = tuple[str, int] | tuple[str, int, int, int]
_FOREVER_NS = (1 << 63) - 1
# Offsets the C loop reads and writes, named as in the reply layout table (nf/twamp/test_packets.py).
_REPLY_FIELDS = (
    "seq",
    "timestamp",
    "error_estimate",
    "receive_timestamp",
    "sender_seq",
    "sender_timestamp",
    "sender_error_estimate",
    "sender_ttl",
)


def native_session(params: TestSessionParams, rate: float | None, burst: float) -> native.Session:
    """The C reply builder of a session, given the layouts' field offsets so the formats live in one table."""
    keys = params.keys.native() if params.keys is not None else None
    if params.keys is not None and keys is None:
        raise ValueError("these test session keys were made for a sender (native=False), not a reflector")
    codec = TestPacketCodec(params.mode, params.keys, params.symmetric)
    sent, reply = codec.sender_layout, codec.reflector_layout
    sender_covered = codec.sender_crypto.covered if codec.sender_crypto is not None else 0
    reply_covered = codec.reflector_crypto.covered if codec.reflector_crypto is not None else 0
    at = sent.offsets
    return native.Session(
        (sent.size, at["seq"], at["timestamp"], at["error_estimate"], at.get("hmac", -1), sender_covered),
        (
            reply.size,
            *(reply.offsets[name] for name in _REPLY_FIELDS),
            reply.offsets.get("hmac", -1),
            reply_covered,
        ),  # type: ignore[arg-type]
        keys,
        keep_octets(params),
        rate or 0.0,
        burst,
        time.monotonic_ns(),
    )


def _native_drop(code: int, value: int) -> tuple[DropReason, str]:
    """The counter and log detail of a reason code from the C loop (value: the datagram length or errno)."""
    if code == native.SHORT:
        return DropReason.SHORT, f"{value} octets, shorter than this session's test packets"
    if code == native.BAD_HMAC:
        return DropReason.BAD_HMAC, "HMAC does not match the packet"
    if code == native.TOO_LONG:
        return DropReason.TOO_LONG, f"the reply to {value} octets would not fit a UDP datagram"
    if code == native.RATE_LIMITED:
        return DropReason.RATE_LIMITED, "over the session's packet rate"
    return DropReason.SEND_FAILED, os.strerror(value) if value else "sendmmsg stopped early"


_ntp_now = functools.partial(ntp_now, time.time_ns)


@dataclass(eq=False, slots=True)
class _Session:
    sid: bytes
    params: TestSessionParams
    key: tuple[str, int] | None  # None: matches any sender (wildcard address or port 0)
    engine: SessionReflector | None  # the pure-Python loop's reply builder
    bucket: TokenBucket | None
    native: native.Session | None = None  # the C loop's reply builder, with its own rate limit
    state: SessionState = SessionState.ADDED
    last_activity: float = 0.0
    deadline: float = 0.0  # STOPPING: end of Timeout; ENDED: end of linger
    end_reason: EndReason | None = None
    host: str = ""  # normalized sender address
    any_host: bool = False  # the request named no sender address
    reflected: int = 0
    dropped: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DropReason, 0))

    def matches(self, host: str, port: int) -> bool:
        """Wildcard sessions: an unspecified sender address or port 0 in the request matches anything."""
        p = self.params
        return (self.any_host or self.host == host) and p.sender_port in (0, port)

    def reflected_count(self) -> int:
        return self.reflected + (self.native.reflected if self.native is not None else 0)

    def activity(self) -> float:
        """Monotonic time of the last packet, whichever loop reflected it."""
        if self.native is None:
            return self.last_activity
        return max(self.last_activity, self.native.last_activity / 1e9)

    def snapshot(self) -> SessionCounters:
        counts = dict(self.dropped)
        return SessionCounters(self.sid, self.state, self.reflected_count(), counts, self.end_reason)


def _is_unspecified(address: str) -> bool:
    return not address or ipaddress.ip_address(address.split("%", 1)[0]).is_unspecified


class _Port:
    """One reserved UDP socket and the thread that reflects on it."""

    def __init__(self, owner: Reflector, sock: socket.socket, address: str, port: int) -> None:
        self.owner = owner
        self.sock = sock
        self.address = address
        self.port = port
        self.sessions: dict[tuple[str, int], _Session] = {}
        self.wildcards: list[_Session] = []
        self.closing = False
        self.dscp = 0
        self.last_activity = time.monotonic()
        self.reflected = 0
        self.internal_errors = 0
        self.python_receive_calls = 0  # the pure-Python loop's calls (the C loop counts its own)
        self.python_send_calls = 0
        self.deferred_sends = 0  # replies Python sent for packets the C loop handed back
        self.dropped = dict.fromkeys(DropReason, 0)
        self.kernel_timestamps = enable_receive_timestamps(sock)
        enable_receive_ttl(sock)
        set_send_ttl(sock, TEST_TTL)
        set_receive_buffer(sock, owner.config.receive_buffer)
        set_receive_timeout(sock, owner.config.poll_interval)
        config = owner.config
        self.native: native.Port | None = None
        if native is not None and config.receive_batch > 1:
            self.native = native.Port(
                sock.fileno(), config.receive_batch, min(config.send_batch, config.receive_batch)
            )
        self.thread = threading.Thread(target=self._run, name=f"twamp-reflector-{port}", daemon=True)

    @property
    def receive_calls(self) -> int:
        """Live, also while the C loop serves (its counters are atomics it updates as it goes)."""
        native_calls = self.native.receive_calls if self.native is not None else 0
        return self.python_receive_calls + native_calls

    @property
    def send_calls(self) -> int:
        native_calls = self.native.send_calls if self.native is not None else 0
        return self.python_send_calls + native_calls + self.deferred_sends

    def all_sessions(self) -> list[_Session]:
        return [*self.sessions.values(), *self.wildcards]

    def find(self, host: str, port: int) -> _Session | None:
        """The session a packet from host:port belongs to: exact before wildcard, and a session that has not
        ended before one that has (an ended one lingers only to count late packets as after-stop). The C
        loop's table holds the sessions that have not ended, in the same order, so both loops agree."""
        exact = self.sessions.get((host, port))
        if exact is not None and exact.state is not SessionState.ENDED:
            return exact
        ended = exact
        for candidate in self.wildcards:
            if candidate.matches(host, port):
                if candidate.state is not SessionState.ENDED:
                    return candidate
                ended = ended or candidate
        return ended

    def drop(self, session: _Session | None, reason: DropReason, detail: str, addr: object) -> None:
        self.dropped[reason] += 1
        if session is not None:
            session.dropped[reason] += 1
        self.owner.bad_input_log.warning(
            reason.value, "twamp reflector port %d: dropped packet from %s: %s", self.port, addr, detail
        )

    def _set_priority(self) -> None:
        priority = self.owner.config.realtime_priority
        if priority is None:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread
        except (OSError, ValueError) as exc:
            self.owner.bad_input_log.warning(
                "priority", "twamp reflector port %d: no realtime priority: %s", self.port, exc
            )

    def _run(self) -> None:
        self._set_priority()
        if self.native is not None:
            self._run_native(self.native)
        else:
            self._run_single()
        self._shutdown()

    def _run_native(self, port: native.Port) -> None:
        """The C loop reflects; this thread takes the GIL only for what it hands back (drops, packets of no
        active session) and when the socket is idle. Housekeeping runs on the Reflector's own thread, so a
        busy interpreter (the control plane of the same process) never holds up a reflected packet."""
        spin = int(self.owner.config.busy_poll * 1e9)
        while not self.closing:
            try:
                _idle, deferred = port.serve(_FOREVER_NS, spin)
            except OSError as exc:
                if self.closing or exc.errno == errno.EBADF:
                    break
                self.owner.bad_input_log.warning("recv", "twamp reflector port %d: %s", self.port, exc)
                continue
            for code, data, addr, receive_ntp, ttl, value in deferred:
                session = self.find(_normal_address(addr[0]), addr[1])
                if code == native.UNHANDLED and data is not None:
                    self._reflect_deferred(session, data, addr, receive_ntp, ttl)
                elif code == native.CRYPTO_FAILED:
                    self._internal_error("OpenSSL failed on a test packet", traceback=False)
                else:
                    reason, detail = _native_drop(code, value)
                    self.drop(session, reason, detail, addr)

    def _reflect_deferred(
        self, session: _Session | None, data: bytes, addr: _Address, receive_ntp: int, ttl: int
    ) -> None:
        """A packet the C loop left to Python: a session not (or no longer) active there, or a stranger."""
        if session is None:
            self.drop(None, DropReason.UNKNOWN_SENDER, "no session for this sender", addr)
            return
        now = time.monotonic()
        if session.state is not SessionState.STARTED and not self._admit(session, now, addr):
            return
        engine = session.native
        port = self.native
        if engine is None or port is None:  # ended by the control side since the state check
            self.drop(session, DropReason.AFTER_STOP, "session ended", addr)
            return
        if not engine.take(time.monotonic_ns()):
            self.drop(session, DropReason.RATE_LIMITED, "over the session's packet rate", addr)
            return
        session.last_activity = now
        reply = engine.reflect(data, receive_ntp, ttl)
        if isinstance(reply, int):
            reason, detail = _native_drop(reply, len(data))
            self.drop(session, reason, detail, addr)
            return
        session.reflected += 1  # Python's count: the C session's may already be folded in at its end
        try:
            if port.dscp != session.params.dscp:
                port.dscp = session.params.dscp
            self.deferred_sends += 1
            self.sock.sendto(reply, addr)
        except OSError as exc:
            session.reflected -= 1
            self.drop(session, DropReason.SEND_FAILED, str(exc), addr)

    def _admit(self, session: _Session, now: float, addr: object) -> bool:
        """Whether a session that is not plainly started still reflects: it does while Stopping, until its
        Timeout (then it ends here). Otherwise the packet is dropped and counted."""
        state = session.state
        if state is SessionState.STOPPING and now > session.deadline:
            self.owner.end_session(self, session, EndReason.TIMEOUT_AFTER_STOP, now)
            state = session.state
        if state in (SessionState.STARTED, SessionState.STOPPING):
            return True
        reason = DropReason.NOT_STARTED if state is SessionState.ADDED else DropReason.AFTER_STOP
        self.drop(session, reason, f"session is {state.value}", addr)
        return False

    def _internal_error(self, what: str, traceback: bool = True) -> None:
        self.internal_errors += 1
        if self.owner.bad_input_log.warning("internal", "twamp reflector port %d: bug", self.port):
            log.error("twamp reflector port %d: %s", self.port, what, exc_info=traceback)

    def _run_single(self) -> None:
        """The pure-Python loop (receive_batch 1, or no C extension): recvmsg, reflect, sendto."""
        sock = self.sock
        buf = bytearray(65536)
        view = memoryview(buf)
        buffers = [buf]
        receive = sock.recvmsg_into
        sendto = sock.sendto
        sessions = self.sessions
        v6 = sock.family == socket.AF_INET6
        monotonic = time.monotonic
        time_ns = time.time_ns
        ntp_now = _ntp_now
        sol_socket = socket.SOL_SOCKET
        order = sys.byteorder
        started = SessionState.STARTED
        ended = SessionState.ENDED
        next_housekeeping = monotonic() + self.owner.config.poll_interval
        spin = self.owner.config.busy_poll
        polling = False
        spin_until = 0.0
        while not self.closing:
            try:
                if polling:
                    nbytes, ancdata, _flags, addr = receive(buffers, ANCILLARY_SIZE, socket.MSG_DONTWAIT)
                else:
                    nbytes, ancdata, _flags, addr = receive(buffers, ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                if polling:
                    polling = monotonic() < spin_until
                    continue
                next_housekeeping = self._housekeeping()
                continue
            except OSError as exc:
                if self.closing:
                    break
                if exc.errno == errno.EBADF:
                    break
                self.owner.bad_input_log.warning("recv", "twamp reflector port %d: %s", self.port, exc)
                continue
            self.python_receive_calls += 1
            stamp = 0
            ttl = TEST_TTL  # RFC 5357 s4.2.1: 255 when the TTL cannot be read
            for level, kind, data in ancdata:
                if level == sol_socket:
                    if kind == SCM_TIMESTAMPNS:
                        stamp = int.from_bytes(data[:8], order) * 1_000_000_000 + int.from_bytes(
                            data[8:16], order
                        )
                elif kind in (IP_TTL, IPV6_HOPLIMIT):
                    ttl = int.from_bytes(data[:4], order)
            if not stamp:
                stamp = time_ns()
            now = monotonic()
            if now >= next_housekeeping:  # also under a flood, when SO_RCVTIMEO never fires
                next_housekeeping = self._housekeeping()
            if spin:
                polling = True
                spin_until = now + spin
            host = addr[0]
            session = sessions.get((host, addr[1]) if v6 else addr)
            if session is None or session.state is ended:
                session = self.find(host, addr[1])
                if session is None:
                    self.drop(None, DropReason.UNKNOWN_SENDER, "no session for this sender", addr)
                    continue
            if session.state is not started and not self._admit(session, now, addr):
                continue
            bucket = session.bucket
            if bucket is not None and not bucket.take(now):
                self.drop(session, DropReason.RATE_LIMITED, "over the session's packet rate", addr)
                continue
            engine = session.engine
            if engine is None:  # ended by the control side since the state check
                self.drop(session, DropReason.AFTER_STOP, "session ended", addr)
                continue
            session.last_activity = now
            try:
                reply = engine.reflect(view, nbytes, ntp_from_ns(stamp), ttl, ntp_now)
            except TestPacketError as exc:
                self.drop(session, DropReason.of(exc), str(exc), addr)
                continue
            except Exception:  # a bug must cost one packet, not the port's thread
                self._internal_error("reflecting failed")
                continue
            dscp = session.params.dscp
            # Counted before the send: a sender that has its reply then always finds it in totals().
            session.reflected += 1
            try:
                if dscp != self.dscp:
                    set_dscp(sock, dscp)
                    self.dscp = dscp
                self.python_send_calls += 1
                sendto(reply, addr)
            except OSError as exc:
                session.reflected -= 1
                self.drop(session, DropReason.SEND_FAILED, str(exc), addr)

    def _housekeeping(self) -> float:
        """Ends sessions past their Timeout or REFWAIT, forgets them after linger, closes an unused port."""
        owner = self.owner
        now = time.monotonic()
        config = owner.config
        error_estimate = owner.clock_sync.error_estimate_word()  # the host clock's sync state can change
        for session in self.all_sessions():
            if session.engine is not None:
                session.engine.error_estimate = error_estimate
            if session.native is not None:
                session.native.error_estimate = error_estimate
            if session.state is SessionState.STOPPING and now > session.deadline:
                owner.end_session(self, session, EndReason.TIMEOUT_AFTER_STOP, now)
            elif session.state in (SessionState.ADDED, SessionState.STARTED) and (
                now - session.activity() > config.refwait
            ):
                owner.end_session(self, session, EndReason.REFWAIT, now)
            if session.state is SessionState.ENDED and now > session.deadline:
                owner.forget_session(self, session)
        if not self.sessions and not self.wildcards and now - self.last_activity > self.idle_limit():
            owner.release(self)
        return now + config.poll_interval

    def idle_limit(self) -> float:
        """A port whose sessions have all been forgotten closes at once; one never used after REFWAIT."""
        return 0.0 if self.owner.port_was_used(self) else self.owner.config.refwait

    def reflected_total(self) -> int:
        return self.reflected + sum(s.reflected_count() for s in self.all_sessions())

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Reflector:
    """All Session-Reflector state of one server: reserved ports, their threads, sessions and counters.

    Typical use by a TWAMP-Control server: reserve_port() while answering Request-TW-Session (the port goes
    into Accept-Session), add_session() once the TestSessionParams exist, start_session() on Start-Sessions,
    stop_session() on Stop-Sessions, remove_session() when the control connection dies, close() at exit.
    """

    def __init__(
        self,
        config: ReflectorConfig | None = None,
        *,
        on_session_end: SessionEndCallback | None = None,
        clock_sync: ClockSyncCache | None = None,
    ) -> None:
        self.config = config or ReflectorConfig()
        self.on_session_end = on_session_end
        self.bad_input_log = RateLimitedLog(log, self.config.log_interval)
        self.clock_sync = clock_sync or ClockSyncCache()
        self._lock = threading.RLock()
        self._ports: dict[tuple[str, int], _Port] = {}
        self._used_ports: set[_Port] = set()
        self._by_sid: dict[bytes, tuple[_Port, _Session]] = {}
        self._ended: collections.OrderedDict[bytes, SessionCounters] = collections.OrderedDict()
        self._released_reflected = 0
        self._released_internal = 0
        self._released_dropped = dict.fromkeys(DropReason, 0)
        self._released_calls = [0, 0]  # receive, send system calls of released ports
        self._retired: list[_Port] = []  # released ports whose threads may still be running
        self._range_cursor = 0
        self._closed = False
        self._housekeeper: threading.Thread | None = None  # for the C loop's ports, started with the first
        self._stop_housekeeping = threading.Event()

    def __repr__(self) -> str:
        return f"Reflector(ports={len(self._ports)}, sessions={len(self._by_sid)})"

    # Ports ------------------------------------------------------------------------------------------------

    def reserve_port(self, address: str, requested_port: int = 0) -> int:
        """Binds a UDP port on `address` for a test session: the requested one if free, else one from the
        configured range, else any. Returns the port for Accept-Session; raises OSError when none can be had.
        """
        host = _normal_address(address)
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        with self._lock:
            if self._closed:
                raise RuntimeError("reflector is closed")
            last_error: OSError | None = None
            for port in self._candidates(requested_port):
                try:
                    sock = self._bind(family, host, port)
                except OSError as exc:
                    last_error = exc
                    continue
                bound = sock.getsockname()[1]
                entry = _Port(self, sock, host, bound)
                self._ports[(host, bound)] = entry
                entry.thread.start()
                if entry.native is not None and self._housekeeper is None:
                    self._housekeeper = threading.Thread(
                        target=self._housekeep, name="twamp-reflector-housekeeping", daemon=True
                    )
                    self._housekeeper.start()
                return int(bound)
            raise last_error or OSError(errno.EADDRINUSE, "no UDP port available")

    def _candidates(self, requested: int) -> Iterable[int]:
        if requested:
            yield requested
        if self.config.port_range is not None:
            low, high = self.config.port_range
            span = high - low + 1
            for step in range(span):
                port = low + (self._range_cursor + step) % span
                if port == requested:
                    continue
                self._range_cursor = (self._range_cursor + step + 1) % span
                yield port
            return
        yield 0

    @staticmethod
    def _bind(family: int, host: str, port: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def _housekeep(self) -> None:
        """Timeout after Stop-Sessions, REFWAIT, linger and idle ports for the C loop's ports, every
        poll_interval, off their threads."""
        while not self._stop_housekeeping.wait(self.config.poll_interval):
            with self._lock:
                ports = [entry for entry in self._ports.values() if entry.native is not None]
            for entry in ports:
                try:
                    entry._housekeeping()
                except Exception:  # a bug must not end housekeeping for every port
                    log.exception("twamp reflector port %d: housekeeping failed", entry.port)

    def release_port(self, address: str, port: int) -> None:
        """Gives back a reserved port no session was added to (e.g. the request was refused after all)."""
        with self._lock:
            entry = self._ports.get((_normal_address(address), port))
            if entry is not None and not entry.sessions and not entry.wildcards:
                self.release(entry)

    def release(self, entry: _Port) -> None:
        with self._lock:
            if self._ports.get((entry.address, entry.port)) is not entry:
                return
            del self._ports[(entry.address, entry.port)]
            self._used_ports.discard(entry)
            entry.closing = True
            if entry.native is not None:
                entry.native.stop()  # its C loop returns even under a flood
            # Its thread may still be finishing a packet (or ending and forgetting sessions): the port's
            # counts are folded into the totals only once that thread has stopped.
            self._retired.append(entry)

    def _fold_retired(self) -> list[_Port]:
        """Folds the counts of retired ports whose threads have stopped; returns those still running."""
        running = []
        for entry in self._retired:
            if entry.thread.is_alive():
                running.append(entry)
                continue
            self._released_reflected += entry.reflected_total()
            self._released_internal += entry.internal_errors
            self._released_calls[0] += entry.receive_calls
            self._released_calls[1] += entry.send_calls
            for reason, count in entry.dropped.items():
                self._released_dropped[reason] += count
        self._retired = running
        return running

    def port_was_used(self, entry: _Port) -> bool:
        return entry in self._used_ports

    # Sessions ---------------------------------------------------------------------------------------------

    def add_session(self, params: TestSessionParams, *, max_pps: float | None = None) -> None:
        """Prepares a session on its reserved port (params.reflector_address/port): keys, reply buffer,
        rate limit. Packets are dropped (not-started) until start_session()."""
        with self._lock:
            if params.sid in self._by_sid:
                raise ValueError(f"session {params.sid.hex()} already exists")
            entry = self._port_for(params)
            limit = max_pps if max_pps is not None else self.config.max_pps
            now = time.monotonic()
            bucket = None
            burst = 1.0
            if limit is not None:
                burst = self.config.burst if self.config.burst is not None else max(1.0, limit / 10)
            error_estimate = self.clock_sync.error_estimate_word()
            engine: SessionReflector | None = None
            fast: native.Session | None = None
            if entry.native is None:
                engine = SessionReflector(params, error_estimate)
                bucket = TokenBucket(limit, burst, now) if limit is not None else None
            else:
                fast = native_session(params, limit, burst)
                fast.error_estimate = error_estimate
            if _is_unspecified(params.sender_address) or params.sender_port == 0:
                key = None
            else:
                key = (_normal_address(params.sender_address), params.sender_port)
                if key in entry.sessions:
                    raise ValueError(f"port {entry.port} already has a session for sender {key}")
            any_host = _is_unspecified(params.sender_address)
            host = "" if any_host else _normal_address(params.sender_address)
            session = _Session(
                params.sid, params, key, engine, bucket, fast, last_activity=now, host=host, any_host=any_host
            )
            if entry.native is not None and fast is not None:
                try:
                    packed = b"" if any_host else socket.inet_pton(entry.sock.family, host)
                except OSError:  # a sender of the other family: like the Python loop, it never matches
                    packed = None
                if packed is not None:
                    entry.native.add(fast, packed, params.sender_port, params.dscp)
            if key is None:
                entry.wildcards.append(session)
            else:
                entry.sessions[key] = session
            self._used_ports.add(entry)
            self._by_sid[params.sid] = (entry, session)

    def _port_for(self, params: TestSessionParams) -> _Port:
        host = _normal_address(params.reflector_address) if params.reflector_address else ""
        entry = self._ports.get((host, params.reflector_port))
        if entry is None:
            for (_, port), candidate in self._ports.items():
                if port == params.reflector_port:
                    return candidate
            raise KeyError(f"no reserved port {params.reflector_port} for session {params.sid.hex()}")
        return entry

    def start_session(self, sid: bytes) -> None:
        with self._lock:  # the port thread may end the session (REFWAIT) meanwhile
            _entry, session = self._get(sid)
            engine, fast = session.engine, session.native
            if session.state is not SessionState.ADDED or (engine is None and fast is None):
                return
            error_estimate = self.clock_sync.error_estimate_word()
            session.last_activity = time.monotonic()
            session.state = SessionState.STARTED
            if engine is not None:
                engine.error_estimate = error_estimate
            if fast is not None:
                fast.error_estimate = error_estimate
                fast.activate(_FOREVER_NS)

    def stop_session(self, sid: bytes) -> None:
        """Stop-Sessions: reflects on for the session's Timeout, then discards its state (RFC 5357 s3.5)."""
        with self._lock:
            _entry, session = self._get(sid)
            if session.state not in (SessionState.ADDED, SessionState.STARTED):
                return
            session.deadline = time.monotonic() + session.params.timeout
            session.state = SessionState.STOPPING
            fast = session.native
            if fast is not None:  # the C loop reflects until then, and hands later packets back
                fast.activate(int(session.deadline * 1e9))

    def remove_session(self, sid: bytes) -> None:
        """Discards a session now (its control connection is gone)."""
        with self._lock:
            found = self._by_sid.get(sid)
            if found is not None:
                self.end_session(found[0], found[1], EndReason.REMOVED, time.monotonic())

    def _get(self, sid: bytes) -> tuple[_Port, _Session]:
        found = self._by_sid.get(sid)
        if found is None or found[1].state is SessionState.ENDED:
            raise KeyError(f"no active session {sid.hex()}")
        return found

    def end_session(self, entry: _Port, session: _Session, reason: EndReason, now: float) -> None:
        with self._lock:
            if session.state is SessionState.ENDED:
                return
            session.state = SessionState.ENDED
            session.end_reason = reason
            session.engine = None  # drops the keys and the reply buffer
            if session.native is not None:
                if entry.native is not None:
                    entry.native.remove(session.native)  # waits for a batch in progress
                session.reflected += session.native.reflected
                session.native = None
            session.deadline = now + self.config.linger
            entry.last_activity = now
            snapshot = session.snapshot()
        if self.on_session_end is not None:
            try:
                self.on_session_end(snapshot)
            except Exception:
                log.exception("on_session_end callback failed")

    def forget_session(self, entry: _Port, session: _Session) -> None:
        with self._lock:
            snapshot = session.snapshot()
            if session.key is None:
                if session in entry.wildcards:
                    entry.wildcards.remove(session)
            elif entry.sessions.get(session.key) is session:
                del entry.sessions[session.key]
            entry.reflected += session.reflected
            session.reflected = 0
            found = self._by_sid.get(session.sid)
            if found is not None and found[1] is session:
                del self._by_sid[session.sid]
            self._ended[session.sid] = snapshot
            while len(self._ended) > self.config.kept_results:
                self._ended.popitem(last=False)

    # Observability ----------------------------------------------------------------------------------------

    def counters(self, sid: bytes) -> SessionCounters | None:
        found = self._by_sid.get(sid)
        if found is not None:
            return found[1].snapshot()
        return self._ended.get(sid)

    def totals(self) -> ReflectorTotals:
        with self._lock:
            retired = self._fold_retired()
            reflected = self._released_reflected
            dropped = dict(self._released_dropped)
            ports = list(self._ports.values())
            for entry in (*ports, *retired):
                reflected += entry.reflected_total()
                for reason, count in entry.dropped.items():
                    dropped[reason] += count
            active = sum(1 for _, s in self._by_sid.values() if s.state is not SessionState.ENDED)
            return ReflectorTotals(
                reflected,
                dropped,
                active,
                len(ports),
                all(e.kernel_timestamps for e in ports),
                self._released_internal + sum(e.internal_errors for e in (*ports, *retired)),
                self._released_calls[0] + sum(e.receive_calls for e in (*ports, *retired)),
                self._released_calls[1] + sum(e.send_calls for e in (*ports, *retired)),
            )

    def close(self) -> None:
        """Ends every session, stops every port thread and closes every socket."""
        with self._lock:
            self._closed = True
            now = time.monotonic()
            for entry, session in list(self._by_sid.values()):
                self.end_session(entry, session, EndReason.CLOSED, now)
            entries = list(self._ports.values())
            for entry in entries:
                self.release(entry)
        self._stop_housekeeping.set()
        housekeeper = self._housekeeper
        if housekeeper is not None and housekeeper is not threading.current_thread():
            housekeeper.join()
        for entry in entries:
            if entry.thread.is_alive() and entry.thread is not threading.current_thread():
                entry.thread.join()
            entry.sock.close()

    def __enter__(self) -> Reflector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
