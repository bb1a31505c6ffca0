"""Stateless IKEv2 cookies (RFC 7296 s2.6): the responder's defence against half-open SA floods.

Cookie = version octet | HMAC-SHA256(secret[version], Ni | IPi | SPIi) truncated to 16 octets. The responder
keeps no per-request state: a returning initiator proves it can receive at its address. The secret rotates
every `rotate_after` seconds and the previous one is still honoured, so a cookie handed out just before a
rotation stays valid (s2.6: "old secret honoured briefly"). Randomness and time are injected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

COOKIE_MAC_SIZE = 16
COOKIE_SIZE = 1 + COOKIE_MAC_SIZE  # within 1..64 octets (s2.6)
SECRET_SIZE = 32


class CookieJar:
    __slots__ = ("_created", "_previous", "_rng", "_rotate_after", "_secret", "_version")

    def __init__(self, rng: Callable[[int], bytes], now: float, rotate_after: float = 60.0) -> None:
        if rotate_after <= 0:
            raise ValueError("rotate_after must be positive")
        self._rng = rng
        self._rotate_after = rotate_after
        self._version = 0
        self._secret = rng(SECRET_SIZE)
        self._previous: bytes | None = None
        self._created = now

    def __repr__(self) -> str:
        return f"CookieJar(version={self._version}, rotate_after={self._rotate_after})"

    def _rotate(self, now: float) -> None:
        if now - self._created >= 2 * self._rotate_after:
            self._previous = None  # idle for two periods: the old cookies are stale too
            self._secret = self._rng(SECRET_SIZE)
            self._version = (self._version + 1) % 256
            self._created = now
        elif now - self._created >= self._rotate_after:
            self._previous = self._secret
            self._secret = self._rng(SECRET_SIZE)
            self._version = (self._version + 1) % 256
            self._created = now

    @staticmethod
    def _mac(secret: bytes, nonce_i: bytes, address: bytes, spi_i: bytes) -> bytes:
        data = len(nonce_i).to_bytes(2, "big") + nonce_i + address + spi_i
        return hmac.new(secret, data, hashlib.sha256).digest()[:COOKIE_MAC_SIZE]

    def make(self, nonce_i: bytes, address: bytes, spi_i: bytes, now: float) -> bytes:
        """The COOKIE notify data for this initiator (address = packed IP octets)."""
        self._rotate(now)
        return bytes([self._version]) + self._mac(self._secret, nonce_i, address, spi_i)

    def verify(self, cookie: bytes, nonce_i: bytes, address: bytes, spi_i: bytes, now: float) -> bool:
        """True when the cookie was made by us, for this Ni/IP/SPIi, with the current or previous secret."""
        self._rotate(now)
        if len(cookie) != COOKIE_SIZE:
            return False
        if cookie[0] == self._version:
            secret: bytes | None = self._secret
        elif cookie[0] == (self._version - 1) % 256:
            secret = self._previous
        else:
            secret = None
        if secret is None:
            return False
        return hmac.compare_digest(cookie[1:], self._mac(secret, nonce_i, address, spi_i))
