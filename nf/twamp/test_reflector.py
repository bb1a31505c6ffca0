"""The Session-Reflector's per-packet logic (RFC 5357 s4.2, RFC 6038), without sockets or clocks.

A SessionReflector is built once per test session and then turns each received datagram into the reply in
a buffer it owns, so the fast path allocates nothing but the few objects the cipher library returns. The
adapter passes the arrival time and TTL in, and a clock that is read as late as the mode allows (T3 sits
inside the encrypted part in encrypted mode, in clear otherwise).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable

from nf.twamp.modes import SecurityMode
from nf.twamp.test_packets import MAX_UDP_PAYLOAD, TestPacketCodec, TestPacketError, TestPacketErrorReason
from nf.twamp.test_session import TestSessionParams

NtpClock = Callable[[], int]  # returns a 64-bit NTP timestamp
_TIMESTAMP = struct.Struct("!Q")


class DropReason(enum.Enum):
    """Why the reflector did not reflect a datagram: one counter each."""

    SHORT = "short"
    BAD_HMAC = "bad-hmac"
    TOO_LONG = "too-long"
    UNKNOWN_SENDER = "unknown-sender"
    NOT_STARTED = "not-started"
    RATE_LIMITED = "rate-limited"
    AFTER_STOP = "after-stop"
    SEND_FAILED = "send-failed"

    @classmethod
    def of(cls, error: TestPacketError) -> DropReason:
        return _FROM_PACKET_ERROR[error.reason]


_FROM_PACKET_ERROR = {
    TestPacketErrorReason.SHORT: DropReason.SHORT,
    TestPacketErrorReason.BAD_HMAC: DropReason.BAD_HMAC,
    TestPacketErrorReason.TOO_LONG: DropReason.TOO_LONG,
}


class TokenBucket:
    """Packets-per-second limit with a burst allowance; `now` is any monotonic clock in seconds."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("token bucket needs a positive rate and a burst of at least one packet")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        tokens = self._tokens + (now - self._last) * self._rate
        self._last = now
        if tokens > self._burst:
            tokens = self._burst
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False


def keep_octets(params: TestSessionParams) -> int:
    """Octets at the start of the sender's padding that a reply keeps despite truncation (RFC 6038).

    The session's Octets to be reflected and Length of padding to reflect; RFC 6038 s5.1.3 has a conforming
    sender pad by the truncation plus this length, so every such octet is there to keep. A sender that pads
    less gets back what it sent and no zero fill: a reply never outgrows its request by more than the header
    difference, so these fields cannot turn the reflector into an amplifier.
    """
    return max(params.reflect_octets, params.padding_to_reflect)


class SessionReflector:
    """Builds the replies of one test session; keeps the reflector's own sequence number."""

    __slots__ = (
        "_buf",
        "_keep_octets",
        "_mode",
        "_pack_reply",
        "_reply_crypto",
        "_reply_size",
        "_sender_crypto",
        "_sender_name",
        "_sender_size",
        "_stamp_last",
        "_truncation",
        "_unpack_sender",
        "_view",
        "error_estimate",
        "seq",
    )

    def __init__(self, params: TestSessionParams, error_estimate: int) -> None:
        codec = TestPacketCodec(params.mode, params.keys, params.symmetric)
        sender = codec.sender_layout
        # Everything the per-packet path needs, looked up once: the fast path is attribute reads only.
        head_fields = sender.fields[: [name for name, _ in sender.fields].index("error_estimate") + 1]
        self._unpack_sender = struct.Struct("!" + "".join(fmt for _, fmt in head_fields)).unpack_from
        self._sender_size = sender.size
        self._sender_name = sender.name
        self._sender_crypto = codec.sender_crypto
        self._reply_crypto = codec.reflector_crypto
        self._reply_size = codec.reflector_layout.size
        self._pack_reply = codec.reflector_layout.struct.pack_into
        self._truncation = codec.truncation
        # Authenticated mode: T3 is outside the ECB block and the HMAC, so protect first and stamp last.
        self._stamp_last = params.mode is SecurityMode.AUTHENTICATED
        self._mode = params.mode
        self._keep_octets = keep_octets(params)
        self._buf = bytearray(MAX_UDP_PAYLOAD)
        self._view = memoryview(self._buf)
        self.error_estimate = error_estimate  # raw Error Estimate word of the reflector's clock
        self.seq = 0

    def __repr__(self) -> str:
        return f"SessionReflector({self._mode.value}, seq={self.seq})"

    def reflect(
        self, data: bytearray | memoryview, nbytes: int, receive_ntp: int, ttl: int, clock: NtpClock
    ) -> memoryview:
        """The reply to the first `nbytes` of `data`, valid until the next call; raises TestPacketError."""
        size = self._sender_size
        if nbytes < size:
            raise TestPacketError(
                TestPacketErrorReason.SHORT, f"{nbytes} octets, {self._sender_name} needs {size}"
            )
        crypto = self._sender_crypto
        head = data if crypto is None else crypto.unprotect(data[:nbytes])
        sender_seq, sender_ts, sender_ee = self._unpack_sender(head)

        # RFC 5357 s4.2.1: same size both ways (truncate by the header difference); RFC 6038: the octets the
        # session reflects, which start the padding, survive the truncation, as far as the sender sent them.
        padding_in = nbytes - size
        padding_out = padding_in - self._truncation
        keep = self._keep_octets if self._keep_octets < padding_in else padding_in
        if padding_out < keep:
            padding_out = keep
        base = self._reply_size
        if base + padding_out > MAX_UDP_PAYLOAD:  # only a Reflect Octets count near 64 KiB gets here
            raise TestPacketError(
                TestPacketErrorReason.TOO_LONG, f"the reply to {nbytes} octets would not fit a UDP datagram"
            )
        buf = self._buf
        if padding_out:
            copied = padding_in if padding_in < padding_out else padding_out
            buf[base : base + copied] = data[size : size + copied]
            if padding_out > copied:
                buf[base + copied : base + padding_out] = bytes(padding_out - copied)

        seq = self.seq
        self.seq = (seq + 1) & 0xFFFFFFFF
        ee = self.error_estimate
        reply_crypto = self._reply_crypto
        if reply_crypto is None:
            self._pack_reply(buf, 0, seq, clock(), ee, receive_ntp, sender_seq, sender_ts, sender_ee, ttl)
        elif self._stamp_last:
            self._pack_reply(buf, 0, seq, 0, ee, receive_ntp, sender_seq, sender_ts, sender_ee, ttl, b"")
            reply_crypto.protect(buf)
            _TIMESTAMP.pack_into(buf, 16, clock())
        else:
            self._pack_reply(
                buf, 0, seq, clock(), ee, receive_ntp, sender_seq, sender_ts, sender_ee, ttl, b""
            )
            reply_crypto.protect(buf)
        return self._view[: base + padding_out]
