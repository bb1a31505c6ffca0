"""Fuzz target for every TWAMP-Control message parser.

The first octet picks the parser, the rest is the message. The documented error is ControlProtocolError
(MalformedMessage); anything else escaping is a finding. A strict parse that succeeds must re-encode to the
very same octets (the Greeting's ignored "Unused" octets aside), so the codecs cannot silently drop or invent
a field.
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
        expected = bytes(12) + body[12:] if parser == ServerGreeting.decode else body  # "Unused" is ignored
        if message.encode() != expected:
            raise AssertionError(f"{type(message).__name__} does not re-encode to its input")
    if len(body) >= 16:
        with contextlib.suppress(ControlProtocolError):
            client_command_length(body[:16])
