"""Where a TWAMP endpoint gets the shared secret for a Key ID.

Pre-shared key-chains (perfSONAR pfs files, YANG key-chain) and IKEv2-derived secrets (RFC 7717) both
implement KeySource, so the control state machines never know where a secret came from. A SharedSecret
never reveals its bytes: it only performs the PBKDF2 step the control protocol needs.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC


class SharedSecret:
    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("empty shared secret")
        self._secret = secret

    def __repr__(self) -> str:
        return "SharedSecret(<hidden>)"

    def __eq__(self, other: object) -> bool:
        """Constant-time comparison, so tests can check a derived secret without reading it."""
        if not isinstance(other, SharedSecret):
            return NotImplemented
        return hmac.compare_digest(self._secret, other._secret)

    __hash__ = None  # type: ignore[assignment]

    def derive_kek(self, salt: bytes, count: int) -> bytes:
        """The 16-octet key that wraps the Token (RFC 4656 s3.1: PBKDF2-HMAC-SHA1 with Salt and Count)."""
        kdf = PBKDF2HMAC(algorithm=hashes.SHA1(), length=16, salt=salt, iterations=count)
        return kdf.derive(self._secret)


class KeySource(Protocol):
    """Supplies the shared secret that a Key ID names, or None when it names nothing known."""

    def secret_for(self, key_id: bytes) -> SharedSecret | None: ...


class KeyChain:
    """Pre-shared secrets by key-id (the identity field of Set-Up-Response, UTF-8, at most 80 octets)."""

    def __init__(self, secrets: dict[str, bytes] | None = None) -> None:
        self._secrets: dict[bytes, SharedSecret] = {}
        for key_id, secret in (secrets or {}).items():
            self.add(key_id, secret)

    def __repr__(self) -> str:
        return f"KeyChain(key_ids={sorted(k.decode() for k in self._secrets)!r})"

    def add(self, key_id: str, secret: bytes) -> None:
        encoded = key_id.encode("utf-8")
        if not 0 < len(encoded) <= 80:
            raise ValueError(f"key-id {key_id!r} must be 1..80 octets of UTF-8")
        if b"\0" in encoded:  # the 80-octet Key ID field is zero-padded: a NUL would cut the identity short
            raise ValueError(f"key-id {key_id!r} contains NUL")
        self._secrets[encoded] = SharedSecret(secret)

    def key_ids(self) -> list[str]:
        return sorted(k.decode() for k in self._secrets)

    def secret_for(self, key_id: bytes) -> SharedSecret | None:
        return self._secrets.get(key_id.rstrip(b"\0"))

    @classmethod
    def from_pfs_file(cls, path: str) -> KeyChain:
        """perfSONAR pfs format: 'key-id hex-secret' per line; '#' starts a comment."""
        with open(path, "rb") as handle:
            raw = handle.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text (octet {exc.start})") from None
        return cls.from_pfs_text(text, path)

    @classmethod
    def from_pfs_text(cls, text: str, source: str = "<pfs>") -> KeyChain:
        """The parser behind from_pfs_file; errors name `source` and the line, never the secret."""
        chain = cls()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{source}:{number}: expected 'key-id hex-secret'")
            try:
                secret = bytes.fromhex(parts[1])
            except ValueError:
                raise ValueError(f"{source}:{number}: secret is not hex") from None
            if parts[0].encode("utf-8") in chain._secrets:
                raise ValueError(f"{source}:{number}: key-id {parts[0]!r} appears twice")
            try:
                chain.add(parts[0], secret)
            except ValueError as exc:
                raise ValueError(f"{source}:{number}: {exc}") from None
        return chain
