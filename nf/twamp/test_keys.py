"""Per-test-session keys (RFC 4656 s4.1): derived once per SID from the control session's keys.

The SID is the AES key and the control keys are the plaintext: Test-AES-key = AES-ECB(SID, control AES key),
Test-HMAC-key = AES-CBC(SID, IV=0, control HMAC key). The object holds prepared cipher contexts so the
reflector's fast path does no key schedule per packet, and it never hands the key bytes out.
"""

from __future__ import annotations

import hmac
from hashlib import sha1
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

if TYPE_CHECKING:
    from nf.net import _fast_reflector as _native_types

ZERO_IV = bytes(16)


class _Hmac(Protocol):
    def copy(self) -> _Hmac: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


try:  # the reflector's C fast path, built at install (nf/net/_fast_reflector.c)
    from nf.net import _fast_reflector as _native
except ImportError:  # a build without the extension: the pure-Python reflector serves
    _native = None  # type: ignore[assignment]

try:  # CPython's OpenSSL HMAC object itself: hmac.HMAC's Python wrapper costs ~2 us per copy on the fast path
    from _hashlib import hmac_new as _openssl_hmac_new

    _OPENSSL_HMAC = True
except ImportError:  # another Python: the stdlib wrapper, same results
    _OPENSSL_HMAC = False


class TestSessionKeys:
    __slots__ = ("_aes", "_ecb", "_hmac", "_native")
    __test__ = False  # not a pytest class

    def __init__(self, aes_key: bytes, hmac_key: bytes, *, native: bool = True) -> None:
        if len(aes_key) != 16 or len(hmac_key) != 32:
            raise ValueError("test session keys must be 16 (AES) and 32 (HMAC) octets")
        self._aes = algorithms.AES(aes_key)
        self._ecb = Cipher(self._aes, modes.ECB())
        self._hmac: _Hmac = (
            _openssl_hmac_new(hmac_key, digestmod="sha1")
            if _OPENSSL_HMAC
            else hmac.new(hmac_key, digestmod=sha1)
        )
        # The reflector's C fast path gets its own prepared contexts, built here where the octets are; a
        # sender's keys (native=False) go without that extra copy.
        self._native = _native.Keys(aes_key, hmac_key) if native and _native is not None else None

    @classmethod
    def derive(
        cls, control_aes_key: bytes, control_hmac_key: bytes, sid: bytes, *, native: bool = True
    ) -> TestSessionKeys:
        if len(sid) != 16 or len(control_aes_key) != 16 or len(control_hmac_key) != 32:
            raise ValueError("SID and control AES key must be 16 octets, control HMAC key 32")
        sid_cipher = algorithms.AES(sid)
        ecb = Cipher(sid_cipher, modes.ECB()).encryptor()
        aes_key = ecb.update(control_aes_key) + ecb.finalize()
        cbc = Cipher(sid_cipher, modes.CBC(ZERO_IV)).encryptor()
        hmac_key = cbc.update(control_hmac_key) + cbc.finalize()
        return cls(aes_key, hmac_key, native=native)

    def __repr__(self) -> str:
        return "TestSessionKeys(<hidden>)"

    def native(self) -> _native_types.Keys | None:
        """The same keys as an opaque object of the C fast path (None without it); it cannot reveal them."""
        return self._native

    def ecb_encrypt(self, block: bytes) -> bytes:
        enc = self._ecb.encryptor()
        return enc.update(block) + enc.finalize()

    def ecb_decrypt(self, block: bytes) -> bytes:
        dec = self._ecb.decryptor()
        return dec.update(block) + dec.finalize()

    def ecb_contexts(self) -> tuple[CipherContext, CipherContext]:
        """A reusable AES-ECB (encryptor, decryptor) pair for one thread's fast path.

        ECB keeps no state between blocks, so one pair serves every packet and saves the per-packet context
        set-up (several microseconds); the contexts are not thread-safe, so each thread asks for its own.
        """
        return self._ecb.encryptor(), self._ecb.decryptor()

    def cbc_encrypt(self, data: bytes) -> bytes:
        """AES-CBC with a zero IV, fresh per packet (RFC 4656 s4.1.2)."""
        enc = Cipher(self._aes, modes.CBC(ZERO_IV)).encryptor()
        return enc.update(data) + enc.finalize()

    def cbc_decrypt(self, data: bytes) -> bytes:
        dec = Cipher(self._aes, modes.CBC(ZERO_IV)).decryptor()
        return dec.update(data) + dec.finalize()

    def hmac16(self, data: bytes) -> bytes:
        """HMAC-SHA1 truncated to 16 octets, over the plaintext of the protected part."""
        mac = self._hmac.copy()
        mac.update(data)
        return mac.digest()[:16]
