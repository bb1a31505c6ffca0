"""HOST:PORT parsing used by `reflect --listen` and `ping` (nf.net.hostport)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nf.net.hostport import format_hostport, parse_hostport


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:862", ("127.0.0.1", 862)),
        ("[::1]:4000", ("::1", 4000)),
        ("localhost:0", ("localhost", 0)),
        ("::1", ("::1", 862)),
        ("[fe80::1]", ("fe80::1", 862)),
        ("example.net", ("example.net", 862)),
    ],
)
def test_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, 862) == expected


@pytest.mark.parametrize(
    "text", ["", ":80", "[::1", "[::1]x", "[nothost]:1", "h:99999", "h:-1", "h:x", "1:2:3:zz"]
)
def test_parse_rejects_with_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse_hostport(text, 862)


def test_port_required_without_default() -> None:
    with pytest.raises(ValueError, match="missing :PORT"):
        parse_hostport("127.0.0.1")


@given(st.ip_addresses(), st.integers(0, 65535))
def test_round_trip(address: object, port: int) -> None:
    host = str(address)
    assert parse_hostport(format_hostport(host, port)) == (host, port)
