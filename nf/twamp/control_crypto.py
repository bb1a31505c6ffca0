"""Cryptography of a TWAMP-Control connection (RFC 4656 s3.1-3.4, RFC 5357 s3.1; RFC 7717 changes only the
secret).

- The Token (Set-Up-Response) is Challenge | AES session key | HMAC session key, AES-128-CBC with IV zero
  under the KEK = PBKDF2-HMAC-SHA1(secret, Salt, Count, 16) (owamp capi.c/sapi.c do the same).
- After setup every control octet except the clear parts of Server-Start is AES-128-CBC with the AES session
  key, one continuous CBC stream per direction (Client-IV, Server-IV), in authenticated, encrypted and mixed
  modes alike.
- Each direction keeps one running HMAC-SHA1 keyed with the HMAC session key: plaintext blocks are appended,
  a message's HMAC field carries the first 16 digest octets of everything appended since the previous HMAC
  field, and the context restarts after each field (owamp io.c _OWPSendHMACDigestClear /
  _OWPRecvHMACCheckClear). Server-Start's encrypted block is appended without a field of its own, so it is
  covered by the server's next HMAC.

ControlKeys is the only holder of the session keys; it hands out operations (streams, Token, per-SID test
keys), never the bytes. The Outbound/Inbound channels do the per-direction buffering so both machines
share one implementation; unauthenticated mode uses the same channels with protection switched off.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from hashlib import sha1

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from nf.twamp.control_events import ControlFailure, IntegrityError
from nf.twamp.keysource import SharedSecret
from nf.twamp.test_keys import TestSessionKeys

BLOCK = 16
HMAC_LEN = 16
TOKEN_LEN = 64
ZERO_IV = bytes(16)

Rng = Callable[[int], bytes]


def _cbc(key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(iv))


class ControlKeys:
    """The AES (16) and HMAC (32) session keys of one control connection; repr and str never show them."""

    __slots__ = ("_aes", "_hmac")

    def __init__(self, aes_key: bytes, hmac_key: bytes) -> None:
        if len(aes_key) != 16 or len(hmac_key) != 32:
            raise ValueError("control session keys must be 16 (AES) and 32 (HMAC) octets")
        self._aes = aes_key
        self._hmac = hmac_key

    def __repr__(self) -> str:
        return "ControlKeys(<hidden>)"

    __str__ = __repr__

    @classmethod
    def generate(cls, rng: Rng) -> ControlKeys:
        """Fresh session keys from the injected random source (client side)."""
        return cls(rng(16), rng(32))

    def seal_token(self, secret: SharedSecret, salt: bytes, count: int, challenge: bytes) -> bytes:
        """The 64-octet Token of Set-Up-Response."""
        if len(challenge) != 16:
            raise ValueError("Challenge must be 16 octets")
        enc = _cbc(secret.derive_kek(salt, count), ZERO_IV).encryptor()
        return enc.update(challenge + self._aes + self._hmac) + enc.finalize()

    @classmethod
    def open_token(
        cls, secret: SharedSecret, salt: bytes, count: int, token: bytes, challenge: bytes
    ) -> ControlKeys:
        """Server side: decrypt the Token; it must carry our Challenge (proof the client holds the key)."""
        if len(token) != TOKEN_LEN:
            raise IntegrityError(ControlFailure.BAD_TOKEN, "Token must be 64 octets")
        dec = _cbc(secret.derive_kek(salt, count), ZERO_IV).decryptor()
        plain = dec.update(token) + dec.finalize()
        if not hmac.compare_digest(plain[:16], challenge):
            raise IntegrityError(ControlFailure.BAD_TOKEN, "Token does not carry the Challenge we sent")
        return cls(plain[16:32], plain[32:64])

    def test_session_keys(self, sid: bytes, *, reflector: bool) -> TestSessionKeys:
        """Per-SID TWAMP-Test keys (RFC 4656 s4.1); only for authenticated and encrypted modes. Only the
        reflector's side gets the C fast path's copy (the sender never reflects)."""
        return TestSessionKeys.derive(self._aes, self._hmac, sid, native=reflector)

    def _encryptor(self, iv: bytes) -> CipherContext:
        return _cbc(self._aes, iv).encryptor()

    def _decryptor(self, iv: bytes) -> CipherContext:
        return _cbc(self._aes, iv).decryptor()

    def _mac(self) -> hmac.HMAC:
        return hmac.new(self._hmac, digestmod=sha1)


class _RunningHmac:
    """One direction's HMAC context: append blocks, then take the 16-octet digest and restart."""

    __slots__ = ("_base", "_ctx")

    def __init__(self, base: hmac.HMAC) -> None:
        self._base = base
        self._ctx = base.copy()

    def __repr__(self) -> str:
        return "_RunningHmac(<hidden>)"

    def add(self, data: bytes) -> None:
        self._ctx.update(data)

    def digest_and_restart(self) -> bytes:
        digest = self._ctx.digest()[:HMAC_LEN]
        self._ctx = self._base.copy()
        return digest


class Outbound:
    """Octets this side sends, in order: clear setup octets, then (once protected) the CBC+HMAC stream."""

    __slots__ = ("_buffer", "_cipher", "_mac")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._cipher: CipherContext | None = None
        self._mac: _RunningHmac | None = None

    def __repr__(self) -> str:
        return f"Outbound(protected={self.protected}, pending={len(self._buffer)})"

    @property
    def protected(self) -> bool:
        return self._cipher is not None

    def protect(self, keys: ControlKeys, iv: bytes) -> None:
        """From now on every octet is encrypted with the stream that starts at `iv`."""
        self._cipher = keys._encryptor(iv)
        self._mac = _RunningHmac(keys._mac())

    def send_clear(self, data: bytes) -> None:
        self._buffer += data

    def send_carried(self, blocks: bytes) -> None:
        """Blocks covered by the next message's HMAC without a field of their own (Server-Start 32-47)."""
        if self._cipher is None or self._mac is None:
            self._buffer += blocks
            return
        self._mac.add(blocks)
        self._buffer += self._cipher.update(blocks)

    def send_message(self, message: bytes) -> None:
        """A message whose last block is its HMAC field: fill it (protected) or zero it (open), then send."""
        body = message[:-HMAC_LEN]
        if self._cipher is None or self._mac is None:
            self._buffer += body + bytes(HMAC_LEN)
            return
        self._mac.add(body)
        self._buffer += self._cipher.update(body + self._mac.digest_and_restart())

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class Inbound:
    """Octets received, in order: clear setup octets, then (once protected) the decrypted stream.

    Decryption runs ahead in whole blocks as data arrives; the machine takes plaintext a message at a time.
    """

    __slots__ = ("_cipher", "_mac", "_open", "_plain", "_raw")

    def __init__(self) -> None:
        self._raw = bytearray()
        self._plain = bytearray()
        self._open = False
        self._cipher: CipherContext | None = None
        self._mac: _RunningHmac | None = None

    def __repr__(self) -> str:
        return f"Inbound(protected={self.protected}, buffered={self.buffered})"

    @property
    def protected(self) -> bool:
        return self._cipher is not None

    @property
    def buffered(self) -> int:
        return len(self._raw) + len(self._plain)

    def feed(self, data: bytes) -> None:
        if self._open:
            self._plain += data
            return
        self._raw += data
        self._decrypt_ready()

    def protect(self, keys: ControlKeys, iv: bytes) -> None:
        """Everything not yet taken as clear octets is from now on the peer's CBC stream starting at `iv`."""
        self._cipher = keys._decryptor(iv)
        self._mac = _RunningHmac(keys._mac())
        self._decrypt_ready()

    def unprotected(self) -> None:
        """Open mode: the rest of the connection is plaintext and HMAC fields are ignored."""
        self._open = True
        self._plain += self._raw
        self._raw.clear()

    def _decrypt_ready(self) -> None:
        if self._cipher is None:
            return
        whole = len(self._raw) - len(self._raw) % BLOCK
        if whole:
            self._plain += self._cipher.update(bytes(self._raw[:whole]))
            del self._raw[:whole]

    def take_clear(self, size: int) -> bytes | None:
        """`size` octets from before protection starts (setup messages), or None until they have arrived."""
        if len(self._raw) < size:
            return None
        data = bytes(self._raw[:size])
        del self._raw[:size]
        return data

    def peek_clear(self, size: int) -> bytes | None:
        if len(self._raw) < size:
            return None
        return bytes(self._raw[:size])

    def peek(self, size: int) -> bytes | None:
        """The first `size` octets of the (decrypted) stream without consuming them."""
        if len(self._plain) < size:
            return None
        return bytes(self._plain[:size])

    def take(self, size: int) -> bytes | None:
        if len(self._plain) < size:
            return None
        data = bytes(self._plain[:size])
        del self._plain[:size]
        return data

    def carry(self, blocks: bytes) -> None:
        """Append blocks to the running HMAC without checking (Server-Start 32-47 on the client)."""
        if self._mac is not None:
            self._mac.add(blocks)

    def verify(self, message: bytes) -> None:
        """Check the HMAC field (last block) of a plaintext message; open mode ignores it."""
        if self._mac is None:
            return
        self._mac.add(message[:-HMAC_LEN])
        if not hmac.compare_digest(self._mac.digest_and_restart(), message[-HMAC_LEN:]):
            raise IntegrityError(ControlFailure.BAD_HMAC, "control message HMAC does not verify")
