"""IKEKeymat: the only holder of SKEYSEED and SK_* (RFC 7296 s2.13/s2.14/s2.18), modelled on keymat_v2.

It derives the keys and then offers operations only: protect/unprotect the SK payload, the MACed ID for
AUTH (prf(SK_p, IDx')), a rekeyed successor, and `ippm_secret()` = prf(SK_d, "IPPM") (RFC 7717 s5.1),
which is the only way anything derived from SK_d leaves the object. There is no accessor for any key,
repr shows SPIs and algorithm names only, and instances refuse to be pickled.

Rekey (s2.18): SKEYSEED' = prf(SK_d(old), g^ir(new) | Ni' | Nr'), expanded with prf+ of the OLD SA's
PRF, as strongSwan does ("use OLD SAs PRF functions for both prf_plus and prf"); RFC 7296 names the new
PRF for prf+. Both agree unless a rekey changes the PRF, which callers should not offer.
"""

from __future__ import annotations

from nf.ike.errors import IKEParseError, ParseReason
from nf.ike.proposals import CipherSuite
from nf.ike.transforms import PrfAlgorithm, Rng
from nf.twamp.keysource import SharedSecret

IPPM_LABEL = b"IPPM"  # RFC 7717 s5.1
SPI_SIZE = 8


class IKEKeymat:
    __slots__ = (
        "_gcm_counter",
        "_initiator",
        "_rng",
        "_sk_ai",
        "_sk_ar",
        "_sk_d",
        "_sk_ei",
        "_sk_er",
        "_sk_pi",
        "_sk_pr",
        "_spi_i",
        "_spi_r",
        "_suite",
    )

    def __init__(
        self,
        suite: CipherSuite,
        expand_prf: PrfAlgorithm,
        skeyseed: bytes,
        *,
        nonce_i: bytes,
        nonce_r: bytes,
        spi_i: bytes,
        spi_r: bytes,
        initiator: bool,
        rng: Rng,
    ) -> None:
        """Internal: use `derive` or `derive_rekeyed`, which compute SKEYSEED."""
        if len(spi_i) != SPI_SIZE or len(spi_r) != SPI_SIZE:
            raise ValueError("IKE SPIs are 8 octets")
        self._suite = suite
        self._spi_i = spi_i
        self._spi_r = spi_r
        self._initiator = initiator
        self._rng = rng
        self._gcm_counter = 0
        integ_size = suite.integ.key_size if suite.integ is not None else 0
        encr_size, prf_size = suite.encr.key_size, suite.prf.size
        sizes = (prf_size, integ_size, integ_size, encr_size, encr_size, prf_size, prf_size)
        stream = expand_prf.prf_plus(skeyseed, nonce_i + nonce_r + spi_i + spi_r, sum(sizes))
        keys: list[bytes] = []
        offset = 0
        for size in sizes:  # s2.14: SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr
            keys.append(stream[offset : offset + size])
            offset += size
        self._sk_d, self._sk_ai, self._sk_ar, self._sk_ei, self._sk_er, self._sk_pi, self._sk_pr = keys

    @classmethod
    def derive(
        cls,
        suite: CipherSuite,
        *,
        shared_secret: bytes,
        nonce_i: bytes,
        nonce_r: bytes,
        spi_i: bytes,
        spi_r: bytes,
        initiator: bool,
        rng: Rng,
    ) -> IKEKeymat:
        """Keys of a new IKE SA after IKE_SA_INIT: SKEYSEED = prf(Ni | Nr, g^ir).

        `initiator` is our role (the original initiator sends with SK_ei/SK_ai); `rng` supplies CBC IVs.
        """
        skeyseed = suite.prf.prf(nonce_i + nonce_r, shared_secret)
        return cls(
            suite, suite.prf, skeyseed,
            nonce_i=nonce_i, nonce_r=nonce_r, spi_i=spi_i, spi_r=spi_r, initiator=initiator, rng=rng,
        )

    def derive_rekeyed(
        self,
        suite: CipherSuite,
        *,
        shared_secret: bytes,
        nonce_i: bytes,
        nonce_r: bytes,
        spi_i: bytes,
        spi_r: bytes,
        initiator: bool,
        rng: Rng | None = None,
    ) -> IKEKeymat:
        """The keymat of the new IKE SA from a CREATE_CHILD_SA rekey (see the module doc on the PRF).

        Nonces and SPIs are the new SA's, the rekey initiator's first; `initiator` is True when we
        started the rekey (we become the new SA's original initiator).
        """
        old_prf = self._suite.prf
        skeyseed = old_prf.prf(self._sk_d, shared_secret + nonce_i + nonce_r)
        return IKEKeymat(
            suite, old_prf, skeyseed,
            nonce_i=nonce_i, nonce_r=nonce_r, spi_i=spi_i, spi_r=spi_r, initiator=initiator,
            rng=rng if rng is not None else self._rng,
        )

    @property
    def suite(self) -> CipherSuite:
        return self._suite

    @property
    def spi_i(self) -> bytes:
        return self._spi_i

    @property
    def spi_r(self) -> bytes:
        return self._spi_r

    @property
    def initiator(self) -> bool:
        """True when we are the original initiator of this IKE SA."""
        return self._initiator

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        spis = f"spi_i={self._spi_i.hex()}, spi_r={self._spi_r.hex()}"
        return f"IKEKeymat({spis}, suite={self._suite.name}, {role})"

    def __reduce__(self) -> str:
        raise TypeError("IKEKeymat holds keys and cannot be serialized")

    # --- SK payload (RFC 7296 s3.14, RFC 5282) -------------------------------------------------------

    def _padded(self, inner_length: int) -> int:
        block = self._suite.encr.block_size
        return -(-(inner_length + 1) // block) * block

    def _icv_size(self) -> int:
        encr, integ = self._suite.encr, self._suite.integ
        return encr.icv_size if encr.aead or integ is None else integ.icv_size

    def sk_body_length(self, inner_length: int) -> int:
        """Octets of IV | ciphertext | ICV for `inner_length` octets of inner payloads (minimal padding)."""
        return self._suite.encr.iv_size + self._padded(inner_length) + self._icv_size()

    def protect(self, aad: bytes, inner: bytes) -> bytes:
        """Encrypt our outgoing inner payloads; `aad` is the IKE header through the SK generic header.

        Returns IV | ciphertext | ICV. GCM IVs come from a per-keymat counter (never repeated under
        one key, RFC 5282); CBC IVs from the injected rng.
        """
        encr, integ = self._suite.encr, self._suite.integ
        pad = self._padded(len(inner)) - len(inner) - 1
        plaintext = inner + bytes(pad) + bytes([pad])
        key = self._sk_ei if self._initiator else self._sk_er
        if encr.aead or integ is None:
            self._gcm_counter += 1
            if self._gcm_counter >= 1 << 64:
                raise OverflowError("GCM IV space exhausted: rekey the IKE SA")
            iv = self._gcm_counter.to_bytes(8, "big")
            return iv + encr.encrypt(key, iv, plaintext, aad)
        iv = self._rng(encr.iv_size)
        ciphertext = encr.encrypt(key, iv, plaintext, aad)
        icv = integ.mac(self._sk_ai if self._initiator else self._sk_ar, aad + iv + ciphertext)
        return iv + ciphertext + icv

    def unprotect(self, aad: bytes, body: bytes) -> bytes:
        """Verify and decrypt the peer's SK body; returns the inner payload chain without padding.

        The ICV is checked (constant time) before anything is decrypted. Raises IKEParseError with
        INTEGRITY_CHECK_FAILED, TRUNCATED, BAD_LENGTH or BAD_PADDING.
        """
        encr, integ = self._suite.encr, self._suite.integ
        iv_size, icv_size = encr.iv_size, self._icv_size()
        if len(body) < iv_size + icv_size + 1:
            raise IKEParseError(ParseReason.TRUNCATED, f"SK body of {len(body)} octets")
        iv = body[:iv_size]
        key = self._sk_er if self._initiator else self._sk_ei
        if encr.aead or integ is None:
            plaintext = encr.decrypt(key, iv, body[iv_size:], aad)
        else:
            ciphertext, icv = body[iv_size:-icv_size], body[-icv_size:]
            if not integ.verify(self._sk_ar if self._initiator else self._sk_ai, aad + iv + ciphertext, icv):
                raise IKEParseError(ParseReason.INTEGRITY_CHECK_FAILED, "SK ICV mismatch")
            plaintext = encr.decrypt(key, iv, ciphertext, aad)
        pad = plaintext[-1]
        if pad + 1 > len(plaintext):
            raise IKEParseError(ParseReason.BAD_PADDING, f"Pad Length {pad} exceeds the plaintext")
        return plaintext[: len(plaintext) - pad - 1]

    # --- AUTH and RFC 7717 ---------------------------------------------------------------------------

    def auth_octets(
        self, *, signer_is_initiator: bool, message: bytes, nonce: bytes, rest_of_id: bytes
    ) -> bytes:
        """The signed octets of RFC 7296 s2.15 for the side that signs.

        message = that side's IKE_SA_INIT message as sent (no non-ESP marker), nonce = the OTHER side's
        Nonce Data, rest_of_id = that side's ID payload minus its generic header (RESERVED as received).
        """
        key = self._sk_pi if signer_is_initiator else self._sk_pr
        return message + nonce + self._suite.prf.prf(key, rest_of_id)

    def ippm_secret(self) -> SharedSecret:
        """prf(SK_d, "IPPM") with this SA's PRF (RFC 7717 s5.1): the TWAMP shared secret for SPIi | SPIr."""
        return SharedSecret(self._suite.prf.prf(self._sk_d, IPPM_LABEL))
