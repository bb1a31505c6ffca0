"""Fuzz target for every TWAMP-Control message parser.

The first octet picks the parser, the rest is the message. The documented error is ControlProtocolError
(MalformedMessage); anything else escaping is a finding. A strict parse that succeeds must re-encode to the
very same octets, so the codecs cannot silently drop or invent a field; the two documented normalisations
aside: the Greeting's ignored "Unused" octets, and an undefined Accept value, read as 1 (RFC 4656 s3.3).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

from nf.twamp.control_events import ControlProtocolError
from nf.twamp.control_messages import (
    AcceptSession,
    NSessionsMessage,
    RequestTwSession,
    ServerGreeting,
    ServerStart,
    SetupResponse,
    StartAck,
    StartSessions,
    StopSessions,
    client_command_length,
    decode_client_command,
)
from nf.twamp.modes import Accept


class _Encodable(Protocol):
    def encode(self) -> bytes: ...


_PARSERS: tuple[Callable[[bytes], _Encodable], ...] = (
    ServerGreeting.decode,
    SetupResponse.decode,
    ServerStart.decode,
    RequestTwSession.decode,
    AcceptSession.decode,
    StartSessions.decode,
    StartAck.decode,
    StopSessions.decode,
    NSessionsMessage.decode,
    decode_client_command,
)


# Where each message carries an Accept octet (RFC 4656 s3.1/s3.5, RFC 5357 s3.8, RFC 5938 acks).
_ACCEPT_OFFSET: dict[type, int] = {
    ServerStart: 15,
    AcceptSession: 0,
    StartAck: 0,
    StopSessions: 1,
    NSessionsMessage: 1,
}
_DEFINED_ACCEPTS = frozenset(int(value) for value in Accept)


def _expected_encoding(message: _Encodable, body: bytes) -> bytes:
    expected = bytearray(body)
    if isinstance(message, ServerGreeting):
        expected[:12] = bytes(12)  # "Unused" is ignored
    offset = _ACCEPT_OFFSET.get(type(message))
    if offset is not None and expected[offset] not in _DEFINED_ACCEPTS:
        expected[offset] = Accept.FAILURE
    return bytes(expected)


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    parser = _PARSERS[data[0] % len(_PARSERS)]
    body = data[1:]
    try:
        message = parser(body)
    except ControlProtocolError:
        pass
    else:
        if message.encode() != _expected_encoding(message, body):
            raise AssertionError(f"{type(message).__name__} does not re-encode to its input")
    if len(body) >= 16:
        with contextlib.suppress(ControlProtocolError):
            client_command_length(body[:16])
