"""IKEv2 payload codecs and proposals: round trips, known octets, critical bit, strict lengths, selection."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nf.ike.errors import IKEParseError, ParseReason, ProposalError, ProposalReason
from nf.ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    DeletePayload,
    IDiPayload,
    IDrPayload,
    KEPayload,
    NoncePayload,
    NotifyPayload,
    NotifyType,
    OpaquePayload,
    Payload,
    PayloadType,
    SAPayload,
    VendorIdPayload,
    decode_payloads,
    encode_payloads,
)
from nf.ike.proposals import (
    Attribute,
    CipherSuite,
    Proposal,
    ProposalSpec,
    ProtocolId,
    Transform,
    check_reply,
    offer,
    parse_proposals,
    select_proposal,
)
from nf.ike.transforms import DhId, EncrId, IntegId, PrfId, TransformType

# --- strategies ------------------------------------------------------------------------------------

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
small = st.binary(max_size=40)

attributes = st.one_of(
    st.builds(Attribute, st.integers(0, 0x7FFF), st.binary(min_size=2, max_size=2), st.just(True)),
    st.builds(Attribute, st.integers(0, 0x7FFF), st.binary(max_size=24), st.just(False)),
)
transforms = st.builds(Transform, u8, u16, st.lists(attributes, max_size=3).map(tuple))
proposals = st.builds(Proposal, u8, u8, st.binary(max_size=16), st.lists(transforms, max_size=6).map(tuple))


@st.composite
def deletes(draw: st.DrawFn) -> DeletePayload:
    size = draw(st.integers(0, 16))
    count = draw(st.integers(0, 5)) if size else 0
    spis = tuple(draw(st.binary(min_size=size, max_size=size)) for _ in range(count))
    return DeletePayload(draw(u8), spis, size)


payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(SAPayload, st.lists(proposals, min_size=1, max_size=4).map(tuple)),
    st.builds(KEPayload, u16, st.binary(max_size=300)),
    st.builds(NoncePayload, st.binary(min_size=16, max_size=256)),
    st.builds(IDiPayload, u8, small, st.binary(min_size=3, max_size=3)),
    st.builds(IDrPayload, u8, small, st.binary(min_size=3, max_size=3)),
    st.builds(CertPayload, u8, st.binary(max_size=600)),
    st.builds(CertReqPayload, u8, small),
    st.builds(AuthPayload, u8, st.binary(min_size=1, max_size=300)),
    st.builds(NotifyPayload, u16, small, u8, st.binary(max_size=16)),
    deletes(),
    st.builds(VendorIdPayload, small),
    st.builds(
        OpaquePayload,
        st.sampled_from([PayloadType.TSI, PayloadType.TSR, PayloadType.CP, PayloadType.EAP]).map(int),
        small,
    ),
)


# --- round trips -----------------------------------------------------------------------------------


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, max_size=8))
def test_payload_chain_round_trip(chain: list[Payload]) -> None:
    first, data = encode_payloads(chain)
    assert decode_payloads(first, data) == chain


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_single_payload_round_trip_and_length(payload: Payload) -> None:
    first, data = encode_payloads([payload])
    assert first == payload.payload_type
    assert struct.unpack("!H", data[2:4])[0] == len(data)
    assert data[0] == PayloadType.NONE and data[1] == 0  # no next payload, critical bit never sent
    assert decode_payloads(first, data) == [payload]


# --- known octets (RFC 7296 s3.3.5, s3.11; ikev2.md s3) --------------------------------------------


def test_aes_cbc_128_transform_octets() -> None:
    proposal = Proposal(
        1,
        ProtocolId.IKE,
        b"",
        (
            Transform.make(TransformType.ENCR, EncrId.AES_CBC, 128),
            Transform.make(TransformType.DH, DhId.ECP_256),
        ),
    )
    _, data = encode_payloads([SAPayload((proposal,))])
    assert bytes.fromhex("03 00 00 0C 01 00 00 0C 80 0E 00 80") in data
    assert data[4:12] == bytes.fromhex("00 00 00 1C 01 01 00 02")  # last proposal, len 28, #1, IKE, no SPI


def test_ike_delete_octets() -> None:
    assert encode_payloads([DeletePayload(ProtocolId.IKE)]) == (
        PayloadType.DELETE,
        bytes.fromhex("00 00 00 08 01 00 00 00"),
    )


def test_notify_octets_and_error_flag() -> None:
    first, data = encode_payloads([NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, b"\x00\x13")])
    assert data == bytes.fromhex("00 00 00 0A 00 00 00 11 00 13")
    notify = decode_payloads(first, data)[0]
    assert isinstance(notify, NotifyPayload) and notify.is_error
    assert not NotifyPayload(NotifyType.CHILDLESS_IKEV2_SUPPORTED).is_error


def test_id_rest_of_payload_keeps_received_reserved_octets() -> None:
    raw = bytes.fromhex("00 00 00 0F 02 AA BB CC") + b"example"
    payload = decode_payloads(PayloadType.IDI, raw)[0]
    assert isinstance(payload, IDiPayload)
    assert payload.rest_of_id == bytes.fromhex("02 AA BB CC") + b"example"


def test_certreq_authorities_split_into_sha1_hashes() -> None:
    assert CertReqPayload(4, bytes(20) + b"\x01" * 20).authorities == (bytes(20), b"\x01" * 20)


# --- critical bit (RFC 7296 s2.5) ------------------------------------------------------------------


def _raw(kind_next: int, flags: int, body: bytes) -> bytes:
    return struct.pack("!BBH", kind_next, flags, 4 + len(body)) + body


def test_unknown_non_critical_payload_is_skipped() -> None:
    nonce = NoncePayload(bytes(range(16)))
    _, nonce_raw = encode_payloads([nonce])
    data = _raw(PayloadType.NONCE, 0, b"whatever") + nonce_raw
    assert decode_payloads(99, data) == [nonce]


def test_unknown_critical_payload_names_its_type() -> None:
    data = _raw(PayloadType.NONE, 0x80, b"x")
    with pytest.raises(IKEParseError) as info:
        decode_payloads(120, data)
    assert info.value.reason is ParseReason.UNSUPPORTED_CRITICAL_PAYLOAD
    assert info.value.payload_type == 120


def test_critical_bit_ignored_on_known_payload() -> None:
    data = _raw(PayloadType.NONE, 0x80, bytes(16))
    assert decode_payloads(PayloadType.NONCE, data) == [NoncePayload(bytes(16))]


# --- strict lengths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "data", "reason"),
    [
        (PayloadType.NONCE, b"\x00\x00\x00", ParseReason.TRUNCATED),
        (PayloadType.NONCE, struct.pack("!BBH", 0, 0, 3), ParseReason.BAD_LENGTH),
        (PayloadType.NONCE, struct.pack("!BBH", 0, 0, 40) + bytes(16), ParseReason.BAD_LENGTH),
        (PayloadType.NONCE, _raw(0, 0, bytes(16)) + b"\x00", ParseReason.BAD_LENGTH),
        (PayloadType.NONCE, _raw(0, 0, bytes(15)), ParseReason.BAD_PAYLOAD),
        (PayloadType.NONCE, _raw(0, 0, bytes(257)), ParseReason.BAD_PAYLOAD),
        (PayloadType.KE, _raw(0, 0, b"\x00\x13\x00"), ParseReason.BAD_PAYLOAD),
        (PayloadType.NOTIFY, _raw(0, 0, bytes.fromhex("00 08 40 06")), ParseReason.BAD_PAYLOAD),
        (PayloadType.DELETE, _raw(0, 0, bytes.fromhex("03 04 00 02") + bytes(7)), ParseReason.BAD_PAYLOAD),
        (PayloadType.AUTH, _raw(0, 0, bytes.fromhex("02 00 00 00")), ParseReason.BAD_PAYLOAD),
        (PayloadType.SA, _raw(0, 0, b""), ParseReason.BAD_PAYLOAD),
        (
            PayloadType.NONCE,
            _raw(PayloadType.SK, 0, bytes(16)) + _raw(0, 0, b"x") + b"!",
            ParseReason.SK_NOT_LAST,
        ),
    ],
)
def test_malformed_chains_raise_specific_reasons(first: int, data: bytes, reason: ParseReason) -> None:
    with pytest.raises(IKEParseError) as info:
        decode_payloads(first, data)
    assert info.value.reason is reason


def test_sa_substructure_consistency_is_checked() -> None:
    good = SAPayload((Proposal(1, 1, b"", (Transform(1, 12, ()), Transform(4, 19, ()))),)).encode_body()
    wrong_count = bytearray(good)
    wrong_count[7] = 3  # Num Transforms says 3, only 2 present
    wrong_last = bytearray(good)
    wrong_last[8] = 0  # first transform claims to be the last
    more_proposals = bytearray(good)
    more_proposals[0] = 2  # "more proposals follow" but none do
    for body in (wrong_count, wrong_last, more_proposals):
        with pytest.raises(IKEParseError) as info:
            SAPayload.decode_body(bytes(body))
        assert info.value.reason is ParseReason.BAD_PAYLOAD


def test_nested_sk_is_rejected() -> None:
    with pytest.raises(IKEParseError) as info:
        decode_payloads(PayloadType.SK, _raw(0, 0, bytes(20)), allow_sk=False)
    assert info.value.reason is ParseReason.SK_NOT_LAST


# --- proposals: strongSwan strings, selection, reply check (RFC 7296 s3.3.6) -----------------------


def test_strongswan_proposal_strings() -> None:
    gcm = ProposalSpec.parse("aes256gcm16-prfsha384-ecp384")
    assert [(e.transform_id, e.key_bits) for e in gcm.encrs] == [(EncrId.AES_GCM_16, 256)]
    assert gcm.integs == () and [p.transform_id for p in gcm.prfs] == [PrfId.HMAC_SHA2_384]
    assert [g.transform_id for g in gcm.dh_groups] == [DhId.ECP_384]
    cbc = ProposalSpec.parse("aes128-sha256-modp2048")
    assert [i.transform_id for i in cbc.integs] == [IntegId.HMAC_SHA2_256_128]
    assert [p.transform_id for p in cbc.prfs] == [PrfId.HMAC_SHA2_256]  # implied by the integrity algorithm
    x = ProposalSpec.parse("aes256-sha512-x25519")
    assert [p.transform_id for p in x.prfs] == [PrfId.HMAC_SHA2_512]
    assert [g.transform_id for g in x.dh_groups] == [DhId.CURVE25519]
    assert (
        ProposalSpec.parse("aes128-sha256-x448").dh_groups
        == ProposalSpec.parse("aes128-sha256-curve448").dh_groups
    )
    assert [g.transform_id for g in ProposalSpec.parse("aes128-sha256-x448").dh_groups] == [DhId.CURVE448]
    both = parse_proposals("aes128-aes256-sha256-sha384-ecp256-curve25519, aes128gcm16-prfsha256-ecp256")
    assert len(both) == 2 and len(both[0].encrs) == 2 and len(both[0].prfs) == 2


@pytest.mark.parametrize(
    "text",
    [
        "aes128-sha256",
        "aes128gcm16-ecp256",
        "aes128gcm16-sha256-prfsha256-ecp256",
        "aes128-aes128gcm16-sha256-ecp256",
        "aes128-md5-ecp256",
        "sha256-ecp256",
        "",
    ],
)
def test_bad_proposal_strings(text: str) -> None:
    with pytest.raises(ProposalError) as info:
        parse_proposals(text)
    assert info.value.reason is ProposalReason.BAD_PROPOSAL_STRING


def test_encoded_offer_carries_key_length_only_on_ciphers() -> None:
    (proposal,) = offer(parse_proposals("aes128-sha256-ecp256"))
    by_type = {t.transform_type: t for t in proposal.transforms}
    assert by_type[TransformType.ENCR].key_length == 128
    assert all(not t.attributes for t in proposal.transforms if t.transform_type != TransformType.ENCR)


def test_responder_prefers_its_own_order() -> None:
    ours = parse_proposals("aes256gcm16-prfsha384-ecp384, aes128-sha256-x25519")
    theirs = offer(parse_proposals("aes128-sha256-x25519, aes256gcm16-prfsha384-ecp384"))
    reply, suite = select_proposal(ours, theirs)
    assert reply.number == 2 and suite.name == "aes256gcm16-prfsha384-ecp384"
    assert check_reply(theirs, reply) == suite


def test_responder_takes_the_ke_group_when_acceptable() -> None:
    ours = parse_proposals("aes128-sha256-ecp256-x25519")
    theirs = offer(parse_proposals("aes128-sha256-x25519-ecp256"))
    assert select_proposal(ours, theirs)[1].dh.transform_id == DhId.ECP_256
    assert select_proposal(ours, theirs, ke_group=DhId.CURVE25519)[1].dh.transform_id == DhId.CURVE25519


def test_no_acceptable_proposal() -> None:
    with pytest.raises(ProposalError) as info:
        select_proposal(
            parse_proposals("aes256-sha512-modp2048"), offer(parse_proposals("aes128-sha256-x25519"))
        )
    assert info.value.reason is ProposalReason.NO_PROPOSAL_CHOSEN


def test_unknown_transform_type_or_attribute_makes_only_that_unacceptable() -> None:
    ours = parse_proposals("aes128-sha256-x25519")
    good = offer(ours)[0]
    odd_type = Proposal(1, ProtocolId.IKE, b"", (*good.transforms, Transform(9, 1)))
    odd_attr = Transform(
        TransformType.ENCR, EncrId.AES_CBC, (Attribute(14, b"\x00\x80"), Attribute(99, b"\x00\x01"))
    )
    with_odd_attr = Proposal(2, ProtocolId.IKE, b"", (odd_attr, *good.transforms))
    second = Proposal(3, ProtocolId.IKE, b"", good.transforms)
    reply, _ = select_proposal(ours, [odd_type, with_odd_attr, second])
    assert reply.number == 2  # proposal 1 unusable; in 2 the odd ENCR is skipped for the good one
    no_key_length = Transform(TransformType.ENCR, EncrId.AES_CBC)
    bare = Proposal(1, ProtocolId.IKE, b"", (no_key_length, *good.transforms[1:]))
    with pytest.raises(ProposalError):
        select_proposal(ours, [bare])


def test_aead_with_integrity_transform_is_not_accepted() -> None:
    ours = parse_proposals("aes128gcm16-prfsha256-x25519")
    mixed = Proposal(
        1, ProtocolId.IKE, b"", (*offer(ours)[0].transforms, Transform.make(TransformType.INTEG, 12))
    )
    with pytest.raises(ProposalError):
        select_proposal(ours, [mixed])


def test_reply_that_we_did_not_offer_is_rejected() -> None:
    ours = offer(parse_proposals("aes128-aes256-sha256-x25519"))
    foreign = CipherSuite.from_proposal(offer(parse_proposals("aes256-sha512-ecp384"))[0]).to_proposal(1)
    narrowed = [t for t in ours[0].transforms if t.key_length != 256]
    unnumbered = Proposal(7, ProtocolId.IKE, b"", tuple(narrowed))
    for reply in (foreign, unnumbered, ours[0]):  # ours[0] still has two ENCR transforms
        with pytest.raises(ProposalError) as info:
            check_reply(ours, reply)
        assert info.value.reason is ProposalReason.BAD_REPLY


# --- properties of proposal strings and selection ----------------------------------------------------

_ENCR_WORDS = ["aes128", "aes192", "aes256"]
_AEAD_WORDS = ["aes128gcm16", "aes192gcm16", "aes256gcm16"]
_INTEG_WORDS = ["sha1", "sha256", "sha384", "sha512"]
_PRF_WORDS = ["prfsha1", "prfsha256", "prfsha384", "prfsha512"]
_DH_WORDS = ["modp2048", "modp3072", "modp4096", "ecp256", "ecp384", "ecp521", "x25519", "curve448"]


def _some(words: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(words), min_size=1, max_size=len(words), unique=True)


proposal_texts = st.one_of(
    st.tuples(_some(_ENCR_WORDS), _some(_INTEG_WORDS), _some(_PRF_WORDS), _some(_DH_WORDS)),
    st.tuples(_some(_AEAD_WORDS), st.just([]), _some(_PRF_WORDS), _some(_DH_WORDS)),
).map(lambda parts: "-".join(word for group in parts for word in group))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proposal_texts)
def test_proposal_string_round_trip(text: str) -> None:
    spec = ProposalSpec.parse(text)
    assert ProposalSpec.parse(spec.name) == spec
    (proposal,) = offer([spec])
    first, data = encode_payloads([SAPayload((proposal,))])
    assert decode_payloads(first, data) == [SAPayload((proposal,))]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(proposal_texts, min_size=1, max_size=3), st.lists(proposal_texts, min_size=1, max_size=3))
def test_selection_picks_something_both_sides_allow(ours_text: list[str], theirs_text: list[str]) -> None:
    ours = parse_proposals(",".join(ours_text))
    theirs = offer(parse_proposals(",".join(theirs_text)))
    try:
        reply, suite = select_proposal(ours, theirs)
    except ProposalError as exc:
        assert exc.reason is ProposalReason.NO_PROPOSAL_CHOSEN
        return
    assert check_reply(theirs, reply) == suite  # the initiator accepts what the responder picked
    assert any(
        suite.encr in spec.encrs
        and suite.prf in spec.prfs
        and suite.dh in spec.dh_groups
        and (suite.integ in spec.integs if suite.integ else not spec.integs)
        for spec in ours
    )


def test_duplicate_proposal_numbers_from_a_peer_do_not_confuse_the_reply_check() -> None:
    ours = parse_proposals("aes128gcm16-prfsha256-x25519")
    other = offer(parse_proposals("aes256-sha512-modp2048"))[0]
    wanted = offer(ours)[0]
    theirs = [other, Proposal(1, ProtocolId.IKE, b"", wanted.transforms)]  # both numbered 1
    reply, suite = select_proposal(ours, theirs)
    assert check_reply(theirs, reply) == suite


def test_cipher_suite_refuses_cbc_without_integrity_and_aead_with_it() -> None:
    cbc, gcm = ProposalSpec.parse("aes128-sha256-x25519"), ProposalSpec.parse("aes128gcm16-prfsha256-x25519")
    with pytest.raises(ValueError):
        CipherSuite(cbc.encrs[0], cbc.prfs[0], None, cbc.dh_groups[0])
    with pytest.raises(ValueError):
        CipherSuite(gcm.encrs[0], gcm.prfs[0], cbc.integs[0], gcm.dh_groups[0])
