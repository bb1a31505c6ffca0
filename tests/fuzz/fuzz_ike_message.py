"""Fuzz target for the IKE message parser: plain decoding, and SK decryption with a fixed keymat.

The parser's documented error is IKEParseError; anything else escaping is a finding. Inputs that start
with a fixed, valid SK-protected header also exercise the keymat's integrity/padding checks.
"""

from __future__ import annotations

import contextlib
import os

from nf.ike.errors import IKEParseError
from nf.ike.keymat import IKEKeymat
from nf.ike.message import decode_header, decode_message, encode_message, unframe
from nf.ike.payloads import decode_payloads
from nf.ike.proposals import CipherSuite, ProposalSpec

_SPEC_CBC = ProposalSpec.parse("aes128-sha256-x25519")
_SPEC_GCM = ProposalSpec.parse("aes128gcm16-prfsha256-x25519")


def _keymat(spec: ProposalSpec) -> IKEKeymat:
    suite = CipherSuite(
        spec.encrs[0], spec.prfs[0], spec.integs[0] if spec.integs else None, spec.dh_groups[0]
    )
    return IKEKeymat.derive(
        suite,
        shared_secret=bytes(32),
        nonce_i=bytes(16),
        nonce_r=bytes(16),
        spi_i=b"\x01" * 8,
        spi_r=b"\x02" * 8,
        initiator=False,
        rng=os.urandom,
    )


_KEYMATS = (_keymat(_SPEC_CBC), _keymat(_SPEC_GCM))


def fuzz_one(data: bytes) -> None:
    with contextlib.suppress(IKEParseError):
        unframe(data, 4500, 4500)
    for keymat in (None, *_KEYMATS):
        try:
            message = decode_message(data, keymat)
        except IKEParseError:
            continue
        if not message.encrypted:
            # Whatever decodes must encode back to something that decodes the same way.
            again = decode_message(encode_message(message))
            if again != message:
                raise AssertionError("plain message does not survive a re-encode")
    if data:
        with contextlib.suppress(IKEParseError):
            decode_payloads(data[0], data[1:])
    with contextlib.suppress(IKEParseError):
        decode_header(data)
