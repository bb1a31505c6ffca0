"""NETCONF message framing over SSH (RFC 6242), sans-IO: end-of-message (base:1.0) and chunked (base:1.1).

Bytes in, messages out, with a size limit: a message over `max_message` octets is consumed and dropped (the
session answers `too-big` and keeps going) instead of being buffered; a broken chunk header is a
`FramingError`, after which RFC 6242 section 4.2 requires the session to be closed.
"""

from __future__ import annotations

from dataclasses import dataclass

EOM = b"]]>]]>"
MAX_CHUNK_HEADER = len(b"\n#4294967295\n")
MAX_CHUNK = 4294967295


class FramingError(Exception):
    """The peer broke RFC 6242 framing; the reason names how (never the content)."""


@dataclass(frozen=True)
class Message:
    data: bytes


@dataclass(frozen=True)
class Oversized:
    """A whole message that went over the limit and was dropped; `size` is what had arrived."""

    size: int


Event = Message | Oversized


def encode(message: bytes, chunked: bool) -> bytes:
    if chunked:
        if not message:
            raise ValueError("a chunked message cannot be empty")
        return b"\n#%d\n" % len(message) + message + b"\n##\n"
    if EOM in message:
        raise ValueError("a base:1.0 message cannot contain ]]>]]>")
    return message + EOM


class FrameDecoder:
    """Feed bytes with `feed()`, take messages with `next_event(chunked)`.

    `chunked` is passed per call because a session switches from end-of-message to chunked framing right
    after the hello exchange, and bytes of the first chunked message may already be buffered.
    """

    def __init__(self, max_message: int) -> None:
        if max_message < 1:
            raise ValueError("max_message must be positive")
        self.max_message = max_message
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._size = 0  # octets of the current message seen so far
        self._dropping = False
        self._chunk_left = 0  # octets still expected in the current chunk

    def feed(self, data: bytes) -> None:
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self, chunked: bool) -> Event | None:
        return self._next_chunked() if chunked else self._next_eom()

    def _finish(self) -> Event:
        size, parts, dropping = self._size, self._parts, self._dropping
        self._parts, self._size, self._dropping = [], 0, False
        if dropping:
            return Oversized(size)
        return Message(b"".join(parts))

    def _take(self, data: bytes) -> None:
        self._size += len(data)
        if self._dropping:
            return
        if self._size > self.max_message:
            self._dropping = True
            self._parts = []
            return
        self._parts.append(data)

    def _next_eom(self) -> Event | None:
        idx = self._buf.find(EOM)
        if idx >= 0:
            self._take(bytes(self._buf[:idx]))
            del self._buf[: idx + len(EOM)]
            return self._finish()
        # keep what could be the start of a marker; account the rest now so memory stays bounded
        keep = len(EOM) - 1
        if len(self._buf) > keep:
            self._take(bytes(self._buf[:-keep]))
            del self._buf[:-keep]
        return None

    def _next_chunked(self) -> Event | None:
        while True:
            if self._chunk_left:
                if not self._buf:
                    return None
                take = min(self._chunk_left, len(self._buf))
                self._take(bytes(self._buf[:take]))
                del self._buf[:take]
                self._chunk_left -= take
                continue
            if len(self._buf) < 4:
                return None
            if self._buf[:2] != b"\n#":
                raise FramingError("expected a chunk header (LF #)")
            if self._buf[2:4] == b"#\n":
                del self._buf[:4]
                if not self._size and not self._dropping and not self._parts:
                    raise FramingError("end-of-chunks before any chunk")
                return self._finish()
            end = self._buf.find(b"\n", 2)
            if end < 0:
                if len(self._buf) >= MAX_CHUNK_HEADER:
                    raise FramingError("chunk size too long")
                return None
            digits = bytes(self._buf[2:end])
            if not digits.isdigit() or digits[:1] == b"0" or len(digits) > 10:
                raise FramingError("chunk size is not a positive decimal number")
            size = int(digits)
            if size > MAX_CHUNK:
                raise FramingError("chunk size above 4294967295")
            del self._buf[: end + 1]
            self._chunk_left = size
