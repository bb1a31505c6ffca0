"""Fuzz target: the NETCONF frame decoder (nf_netconf.framing) fed random octets in random pieces, in both
framings, only ever raises FramingError, never returns a message over its limit, keeps its buffer bounded."""

from __future__ import annotations

from nf_netconf.framing import FrameDecoder, FramingError, Message

LIMIT = 512


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    chunked = bool(data[0] & 1)
    step = 1 + data[0] % 17
    decoder = FrameDecoder(LIMIT)
    try:
        for i in range(1, len(data), step):
            decoder.feed(data[i : i + step])
            while (event := decoder.next_event(chunked)) is not None:
                if isinstance(event, Message):
                    assert len(event.data) <= LIMIT
            if not chunked:
                assert decoder.buffered() < 6
    except FramingError:
        return
