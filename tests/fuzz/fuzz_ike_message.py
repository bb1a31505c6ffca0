"""Fuzz target for the IKE message parser: plain decoding, and SK decryption with a fixed keymat.

The parser's documented error is IKEParseError; anything else escaping is a finding. Inputs that start
with a fixed, valid SK-protected header also exercise the keymat's integrity/padding checks. Every SA
payload that decodes is also run through proposal selection, whose documented error is ProposalError,
and every ID payload through identity printing and DN comparison, which must never raise.
"""

from __future__ import annotations

import contextlib
import os

from nf.ike.errors import IKEParseError, ProposalError
from nf.ike.identities import Identity
from nf.ike.keymat import IKEKeymat
from nf.ike.message import decode_header, decode_message, encode_message, unframe
from nf.ike.payloads import IDiPayload, IDrPayload, SAPayload, decode_payloads
from nf.ike.proposals import CipherSuite, ProposalSpec, check_reply, parse_proposals, select_proposal

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
_CONFIGURED_DN = Identity.parse("C=CH, O=strongSwan, CN=moon")
_POLICY = parse_proposals("aes256gcm16-prfsha384-ecp384-x25519, aes128-aes256-sha256-sha1-modp2048-ecp256")


def _negotiate(sa: SAPayload) -> None:
    """Selection on hostile offers: a reply, if any, must pass the initiator's own check."""
    try:
        reply, suite = select_proposal(_POLICY, sa.proposals, ke_group=31)
    except ProposalError:
        return
    if check_reply(sa.proposals, reply) != suite:
        raise AssertionError("selected proposal fails the initiator's reply check")


def fuzz_one(data: bytes) -> None:
    with contextlib.suppress(IKEParseError):
        unframe(data, 4500, 4500)
    for keymat in (None, *_KEYMATS):
        try:
            message = decode_message(data, keymat)
        except IKEParseError:
            continue
        for sa in message.all(SAPayload):
            _negotiate(sa)
        id_payloads: list[IDiPayload | IDrPayload] = [*message.all(IDiPayload), *message.all(IDrPayload)]
        for id_payload in id_payloads:
            received = Identity.from_payload(id_payload)
            str(received)
            _CONFIGURED_DN.matches(received)
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
