"""Fuzz target for the reflector's batched-receive parsers: control messages and source addresses.

Both read kernel-written buffers at offsets, so the property is bounds: parse_control never reports data past
the length it was given nor raises, and decode_name either decodes or raises OSError (its documented error).
"""

from __future__ import annotations

import contextlib

from nf.net import batch_io


def fuzz_one(data: bytes) -> None:
    data = data[:256]
    length = data[0] if data else 0
    body = memoryview(data[1:])
    for offset in (0, 8):
        if offset > len(body):
            continue
        within = min(length, len(body) - offset, 64)
        for _level, _kind, found in batch_io.parse_control(body, offset, length):
            if len(found) > within:
                raise AssertionError("control data longer than the buffer given")
    with contextlib.suppress(OSError):  # its documented error
        batch_io.decode_name(body, 0, length)
