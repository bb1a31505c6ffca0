"""Stateless cookies (RFC 7296 s2.6): bound to Ni, IP and SPIi, survive one secret rotation, not two."""

from __future__ import annotations

import os
import re

from hypothesis import given
from hypothesis import strategies as st

from nf.ike.cookies import COOKIE_SIZE, CookieJar

nonces = st.binary(min_size=16, max_size=256)
addresses = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))
spis = st.binary(min_size=8, max_size=8)


@given(nonces, addresses, spis)
def test_round_trip_and_binding(nonce: bytes, address: bytes, spi: bytes) -> None:
    jar = CookieJar(os.urandom, now=0.0, rotate_after=60.0)
    cookie = jar.make(nonce, address, spi, now=1.0)
    assert 1 <= len(cookie) == COOKIE_SIZE <= 64
    assert jar.verify(cookie, nonce, address, spi, now=2.0)
    assert not jar.verify(cookie, nonce + b"x", address, spi, now=2.0)
    assert not jar.verify(cookie, nonce, bytes(a ^ 1 for a in address), spi, now=2.0)
    assert not jar.verify(cookie, nonce, address, bytes(8) if any(spi) else b"\1" * 8, now=2.0)


@given(st.binary(max_size=80), nonces, spis)
def test_foreign_cookies_are_refused(cookie: bytes, nonce: bytes, spi: bytes) -> None:
    jar = CookieJar(os.urandom, now=0.0)
    genuine = jar.make(nonce, b"\x7f\0\0\1", spi, now=0.0)
    assert jar.verify(cookie, nonce, b"\x7f\0\0\1", spi, now=0.0) == (cookie == genuine)


@given(nonces, spis, st.integers(0, len(bytes(COOKIE_SIZE)) - 1))
def test_any_bit_flip_is_refused(nonce: bytes, spi: bytes, index: int) -> None:
    jar = CookieJar(os.urandom, now=0.0)
    cookie = bytearray(jar.make(nonce, b"\x7f\0\0\1", spi, now=0.0))
    cookie[index] ^= 0x01
    assert not jar.verify(bytes(cookie), nonce, b"\x7f\0\0\1", spi, now=0.0)


def test_rotation_keeps_the_previous_secret_only() -> None:
    jar = CookieJar(os.urandom, now=0.0, rotate_after=10.0)
    old = jar.make(b"n" * 32, b"\x7f\0\0\1", b"s" * 8, now=0.0)
    assert jar.verify(old, b"n" * 32, b"\x7f\0\0\1", b"s" * 8, now=12.0)  # rotated once: still honoured
    fresh = jar.make(b"n" * 32, b"\x7f\0\0\1", b"s" * 8, now=12.0)
    assert fresh != old
    assert not jar.verify(old, b"n" * 32, b"\x7f\0\0\1", b"s" * 8, now=23.0)  # second rotation: gone
    assert jar.verify(fresh, b"n" * 32, b"\x7f\0\0\1", b"s" * 8, now=23.0)
    assert not jar.verify(fresh, b"n" * 32, b"\x7f\0\0\1", b"s" * 8, now=100.0)  # idle for long: all gone
    assert re.fullmatch(r"CookieJar\(version=\d+, rotate_after=10\.0\)", repr(jar))
