"""Fuzz target: HOST:PORT parsing (nf.net.hostport) only ever raises ValueError, and what it accepts
formats back to something it parses to the same pair."""

from __future__ import annotations

from nf.net.hostport import format_hostport, parse_hostport


def fuzz_one(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        host, port = parse_hostport(text, 862)
    except ValueError:
        return
    assert 0 <= port <= 65535
    assert parse_hostport(format_hostport(host, port)) == (host, port)
