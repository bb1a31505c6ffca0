"""Whole IKE messages: header codec, plain and SK-protected round trips per cipher suite, tampering,
direction of keys, and the non-ESP marker framing."""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nf.ike.errors import IKEParseError, ParseReason
from nf.ike.keymat import IKEKeymat
from nf.ike.message import (
    ExchangeType,
    HeaderFlags,
    Message,
    decode_header,
    decode_message,
    encode_message,
    frame,
    plain,
    protected,
    unframe,
)
from nf.ike.payloads import (
    AuthPayload,
    DeletePayload,
    IDiPayload,
    KEPayload,
    NoncePayload,
    NotifyPayload,
    NotifyType,
    Payload,
    PayloadType,
    SAPayload,
    encode_payloads,
)
from nf.ike.proposals import CipherSuite, ProposalSpec, offer
from tests.test_ike_payloads import payloads

SUITES = [
    "aes128-sha256-x25519",
    "aes192-sha384-ecp256",
    "aes256-sha512-ecp384",
    "aes128-sha1-modp2048",
    "aes128gcm16-prfsha256-x25519",
    "aes256gcm16-prfsha384-ecp384",
]
SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("1112131415161718")


def _first_suite(text: str) -> CipherSuite:
    spec = ProposalSpec.parse(text)
    return CipherSuite(
        spec.encrs[0], spec.prfs[0], spec.integs[0] if spec.integs else None, spec.dh_groups[0]
    )


@functools.cache
def keymats(text: str) -> tuple[IKEKeymat, IKEKeymat]:
    """(initiator, responder) keymats of one SA, agreed through a real key exchange."""
    suite = _first_suite(text)
    ours, theirs = suite.dh.generate(os.urandom), suite.dh.generate(os.urandom)
    secret = ours.shared_secret(theirs.public_value)
    assert secret == theirs.shared_secret(ours.public_value)
    nonce_i, nonce_r = os.urandom(32), os.urandom(32)
    common = {"shared_secret": secret, "nonce_i": nonce_i, "nonce_r": nonce_r, "spi_i": SPI_I, "spi_r": SPI_R}
    initiator = IKEKeymat.derive(suite, initiator=True, rng=os.urandom, **common)
    responder = IKEKeymat.derive(suite, initiator=False, rng=os.urandom, **common)
    return initiator, responder


chains = st.lists(payloads, max_size=5)
headers = st.tuples(
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=8, max_size=8),
    st.sampled_from(list(ExchangeType)),
    st.integers(0, 0xFFFFFFFF),
    st.booleans(),
    st.booleans(),
)


# --- header ----------------------------------------------------------------------------------------


def test_header_octets_and_fields() -> None:
    msg = plain(
        SPI_I,
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        0,
        is_response=False,
        from_initiator=True,
        payloads=[NoncePayload(bytes(32))],
    )
    raw = encode_message(msg)
    assert raw[:28] == struct.pack(
        "!8s8sBBBBII", SPI_I, bytes(8), PayloadType.NONCE, 0x20, 34, 0x08, 0, 28 + 36
    )
    header = decode_header(raw)
    assert (header.major_version, header.minor_version, header.exchange) == (2, 0, 34)
    assert header.from_initiator and not header.is_response and header.length == len(raw)


def test_minor_version_is_ignored_and_major_checked() -> None:
    raw = bytearray(
        encode_message(plain(SPI_I, SPI_R, 37, 5, is_response=True, from_initiator=False, payloads=[]))
    )
    raw[17] = 0x2F
    assert decode_message(bytes(raw)).message_id == 5
    raw[17] = 0x30
    with pytest.raises(IKEParseError) as info:
        decode_header(bytes(raw))
    assert info.value.reason is ParseReason.UNSUPPORTED_MAJOR_VERSION


@pytest.mark.parametrize(("cut", "reason"), [(10, ParseReason.TRUNCATED), (30, ParseReason.BAD_LENGTH)])
def test_header_length_must_match_datagram(cut: int, reason: ParseReason) -> None:
    raw = encode_message(
        plain(SPI_I, SPI_R, 37, 1, is_response=False, from_initiator=True, payloads=[NoncePayload(bytes(16))])
    )
    with pytest.raises(IKEParseError) as info:
        decode_message(raw[:cut])
    assert info.value.reason is reason
    with pytest.raises(IKEParseError):
        decode_message(raw + b"\x00")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers, chains)
def test_plain_message_round_trip(
    header: tuple[bytes, bytes, int, int, bool, bool], chain: list[Payload]
) -> None:
    spi_i, spi_r, exchange, mid, response, initiator = header
    msg = plain(spi_i, spi_r, exchange, mid, is_response=response, from_initiator=initiator, payloads=chain)
    raw = encode_message(msg)
    assert decode_message(raw) == msg
    flags = raw[19]
    assert bool(flags & HeaderFlags.RESPONSE) == response and bool(flags & HeaderFlags.INITIATOR) == initiator
    assert not flags & HeaderFlags.VERSION


# --- SK protection ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers, chain=chains)
def test_protected_round_trip_each_suite(
    suite: str, header: tuple[bytes, bytes, int, int, bool, bool], chain: list[Payload]
) -> None:
    initiator, responder = keymats(suite)
    _, _, exchange, mid, response, _ = header
    msg = protected(SPI_I, SPI_R, exchange, mid, is_response=response, from_initiator=True, payloads=chain)
    raw = encode_message(msg, initiator)
    assert decode_header(raw).next_payload == PayloadType.SK
    assert decode_message(raw, responder) == msg
    reply = protected(SPI_I, SPI_R, exchange, mid, is_response=True, from_initiator=False, payloads=chain)
    assert decode_message(encode_message(reply, responder), initiator) == reply


@pytest.mark.parametrize("suite", SUITES)
def test_sk_layout_lengths(suite: str) -> None:
    initiator, _ = keymats(suite)
    inner = [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)]
    raw = encode_message(
        protected(SPI_I, SPI_R, 35, 1, is_response=True, from_initiator=True, payloads=inner), initiator
    )
    sk_next, sk_flags, sk_length = struct.unpack("!BBH", raw[28:32])
    assert (sk_next, sk_flags, sk_length) == (PayloadType.NOTIFY, 0, len(raw) - 28)
    encr = initiator.suite.encr
    icv = encr.icv_size if encr.aead else initiator.suite.integ.icv_size  # type: ignore[union-attr]
    _, inner_raw = encode_payloads(inner)
    body = len(raw) - 32 - encr.iv_size - icv
    assert body == (len(inner_raw) + 1 if encr.aead else 16)  # minimal padding: 8 + 1 -> one AES block


@pytest.mark.parametrize("suite", SUITES)
def test_each_message_gets_a_fresh_iv(suite: str) -> None:
    initiator, responder = keymats(suite)
    msg = protected(SPI_I, SPI_R, 37, 2, is_response=False, from_initiator=True, payloads=[DeletePayload(1)])
    first, second = encode_message(msg, initiator), encode_message(msg, initiator)
    iv_size = initiator.suite.encr.iv_size
    assert first[32 : 32 + iv_size] != second[32 : 32 + iv_size]
    assert decode_message(first, responder) == decode_message(second, responder) == msg


@pytest.mark.parametrize("suite", SUITES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_tampering_is_detected(suite: str, data: st.DataObject) -> None:
    initiator, responder = keymats(suite)
    msg = protected(SPI_I, SPI_R, 37, 9, is_response=False, from_initiator=True, payloads=[DeletePayload(1)])
    raw = bytearray(encode_message(msg, initiator))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_message(bytes(raw), responder)
    except IKEParseError:
        return
    # Only a rewritten Next Payload can make the SK bytes parse as some unprotected payload; such a
    # message is then not "encrypted", which exchanges treat as unauthenticated.
    assert not decoded.encrypted


@pytest.mark.parametrize("suite", SUITES)
def test_own_keys_do_not_open_own_messages(suite: str) -> None:
    initiator, _ = keymats(suite)
    raw = encode_message(
        protected(SPI_I, SPI_R, 37, 2, is_response=False, from_initiator=True, payloads=[]), initiator
    )
    with pytest.raises(IKEParseError) as info:
        decode_message(raw, initiator)
    assert info.value.reason is ParseReason.INTEGRITY_CHECK_FAILED


def test_other_sa_keys_fail_integrity() -> None:
    a, _ = keymats("aes128-sha256-x25519")
    other = IKEKeymat.derive(
        a.suite,
        shared_secret=bytes(32),
        nonce_i=bytes(16),
        nonce_r=bytes(16),
        spi_i=SPI_I,
        spi_r=SPI_R,
        initiator=False,
        rng=os.urandom,
    )
    raw = encode_message(
        protected(SPI_I, SPI_R, 37, 2, is_response=False, from_initiator=True, payloads=[]), a
    )
    with pytest.raises(IKEParseError) as info:
        decode_message(raw, other)
    assert info.value.reason is ParseReason.INTEGRITY_CHECK_FAILED


def test_sk_needs_keys_and_must_stand_alone() -> None:
    initiator, responder = keymats("aes128gcm16-prfsha256-x25519")
    raw = encode_message(
        protected(SPI_I, SPI_R, 37, 2, is_response=False, from_initiator=True, payloads=[]), initiator
    )
    with pytest.raises(IKEParseError) as info:
        decode_message(raw)
    assert info.value.reason is ParseReason.SK_WITHOUT_KEYS
    # An unprotected Notify in front of SK: rebuild the chain by hand.
    _, notify = encode_payloads([NotifyPayload(NotifyType.COOKIE, b"c")], last_next=PayloadType.SK)
    body = raw[28:]
    spliced = bytearray(raw[:28] + notify + body)
    spliced[16] = PayloadType.NOTIFY
    spliced[24:28] = struct.pack("!I", len(spliced))
    with pytest.raises(IKEParseError) as info:
        decode_message(bytes(spliced), responder)
    assert info.value.reason is ParseReason.BAD_PAYLOAD


def test_message_helpers() -> None:
    msg = Message(
        SPI_I,
        SPI_R,
        34,
        0,
        True,
        False,
        (
            NotifyPayload(NotifyType.COOKIE, b"1"),
            NoncePayload(bytes(16)),
            NotifyPayload(NotifyType.COOKIE, b"2"),
        ),
    )
    assert msg.first(NoncePayload) == NoncePayload(bytes(16))
    assert msg.first(DeletePayload) is None
    assert [n.data for n in msg.notifies(NotifyType.COOKIE)] == [b"1", b"2"]
    assert msg.flags == HeaderFlags.RESPONSE


# --- non-ESP marker --------------------------------------------------------------------------------


def test_non_esp_marker_only_when_neither_port_is_500() -> None:
    raw = b"\x01" * 28
    assert frame(raw, 500, 50500) == raw and unframe(raw, 50500, 500) == raw
    assert frame(raw, 4500, 50500) == bytes(4) + raw
    assert unframe(bytes(4) + raw, 4500, 50500) == raw
    with pytest.raises(IKEParseError) as info:
        unframe(raw, 4500, 50500)  # an ESP packet (non-zero SPI) on a NAT-T port
    assert info.value.reason is ParseReason.NON_ESP_MARKER


# --- independent check: Wireshark decrypts and dissects what we encode -----------------------------

# Wireshark's names for ikev2_decryption_table (as strongSwan's save-keys plugin writes them).
WIRESHARK_ENCR = {
    "aes128": "AES-CBC-128 [RFC3602]",
    "aes192": "AES-CBC-192 [RFC3602]",
    "aes256": "AES-CBC-256 [RFC3602]",
    "aes128gcm16": "AES-GCM-128 with 16 octet ICV [RFC5282]",
    "aes256gcm16": "AES-GCM-256 with 16 octet ICV [RFC5282]",
}
WIRESHARK_INTEG = {
    "sha1": "HMAC_SHA1_96 [RFC2404]",
    "sha256": "HMAC_SHA2_256_128 [RFC4868]",
    "sha384": "HMAC_SHA2_384_192 [RFC4868]",
    "sha512": "HMAC_SHA2_512_256 [RFC4868]",
}


def _pcap(datagrams: list[bytes]) -> bytes:
    """A classic pcap of IPv4/UDP 127.0.0.1:500 -> 127.0.0.1:500 frames (LINKTYPE_IPV4)."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 228)
    for number, payload in enumerate(datagrams):
        udp = struct.pack("!HHHH", 500, 500, 8 + len(payload), 0) + payload
        ip = (
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                number,
                0x4000,
                64,
                17,
                0,
                bytes([127, 0, 0, 1]),
                bytes([127, 0, 0, 1]),
            )
            + udp
        )
        out += struct.pack("<IIII", 1_700_000_000 + number, 0, len(ip), len(ip)) + ip
    return out


def _table_row(suite: CipherSuite, keys: bytes, spi_i: bytes, spi_r: bytes) -> str:
    d, a, e = suite.prf.size, suite.integ.key_size if suite.integ else 0, suite.encr.key_size
    ai, ar, ei, er = (
        keys[d : d + a],
        keys[d + a : d + 2 * a],
        keys[d + 2 * a : d + 2 * a + e],
        keys[d + 2 * a + e :],
    )
    integ = WIRESHARK_INTEG[suite.integ.name] if suite.integ else "NONE [RFC4306]"
    return (
        f'{spi_i.hex()},{spi_r.hex()},{ei.hex()},{er[:e].hex()},"{WIRESHARK_ENCR[suite.encr.name]}",'
        f'{ai.hex()},{ar.hex()},"{integ}"'
    )


@pytest.mark.tshark
def test_wireshark_decrypts_and_dissects_our_messages(tmp_path: pathlib.Path) -> None:
    suites = [
        "aes128-sha256-x25519",
        "aes192-sha384-ecp256",
        "aes256-sha512-ecp384",
        "aes128-sha1-modp2048",
        "aes128gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha384-ecp384",
    ]
    datagrams: list[bytes] = []
    rows: list[str] = []
    inner = [
        IDiPayload(2, b"py.example"),
        AuthPayload(2, bytes(32)),
        NotifyPayload(NotifyType.INITIAL_CONTACT),
        DeletePayload(1),
    ]
    for index, text in enumerate([*suites, "aes128-sha256-x25519"]):
        suite = _first_suite(text)
        spi_i, spi_r = bytes([index + 1]) * 8, bytes([index + 0x81]) * 8
        nonce_i, nonce_r, secret = os.urandom(32), os.urandom(32), os.urandom(32)
        keymat = IKEKeymat.derive(
            suite,
            shared_secret=secret,
            nonce_i=nonce_i,
            nonce_r=nonce_r,
            spi_i=spi_i,
            spi_r=spi_r,
            initiator=True,
            rng=os.urandom,
        )
        integ_size = suite.integ.key_size if suite.integ else 0
        sizes = 3 * suite.prf.size + 2 * integ_size + 2 * suite.encr.key_size
        stream = suite.prf.prf_plus(
            suite.prf.prf(nonce_i + nonce_r, secret), nonce_i + nonce_r + spi_i + spi_r, sizes
        )
        keys = stream[: sizes - 2 * suite.prf.size]
        if index == len(suites):  # negative control: Wireshark gets a wrong SK_ai for the last SA
            keys = keys[: suite.prf.size] + bytes(integ_size) + keys[suite.prf.size + integ_size :]
        rows.append(_table_row(suite, keys, spi_i, spi_r))
        init_msg = plain(
            spi_i,
            bytes(8),
            34,
            0,
            is_response=False,
            from_initiator=True,
            payloads=[
                SAPayload(offer([ProposalSpec.parse(text)])),
                KEPayload(suite.dh.transform_id, bytes(suite.dh.public_size)),
                NoncePayload(nonce_i),
                NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, bytes.fromhex("0002 0003 0004")),
            ],
        )
        datagrams.append(encode_message(init_msg))
        auth_msg = protected(spi_i, spi_r, 35, 1, is_response=False, from_initiator=True, payloads=inner)
        datagrams.append(encode_message(auth_msg, keymat))
    (tmp_path / "wireshark").mkdir()
    (tmp_path / "wireshark" / "ikev2_decryption_table").write_text("\n".join(rows) + "\n")
    (tmp_path / "ike.pcap").write_bytes(_pcap(datagrams))
    fields = [
        "frame.number",
        "isakmp.exchangetype",
        "isakmp.nextpayload",
        "isakmp.notify.msgtype",
        "isakmp.id.type",
        "isakmp.id.data.fqdn",
        "isakmp.auth.method",
        "isakmp.tf.id.encr",
        "isakmp.ike2.attr.key_length",
        "_ws.malformed",
        "_ws.expert.message",
    ]
    result = subprocess.run(
        [
            "tshark",
            "-r",
            str(tmp_path / "ike.pcap"),
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "separator=|",
            *(arg for f in fields for arg in ("-e", f)),
        ],
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * len(suites) + 2
    for index, text in enumerate(suites):
        spec = ProposalSpec.parse(text)
        init = dict(zip(fields, lines[2 * index].split("|"), strict=True))
        assert init["isakmp.exchangetype"] == "34" and init["isakmp.notify.msgtype"] == "16431"
        assert init["isakmp.tf.id.encr"] == str(spec.encrs[0].transform_id)
        assert init["isakmp.ike2.attr.key_length"] == str(spec.encrs[0].key_bits)
        auth = dict(zip(fields, lines[2 * index + 1].split("|"), strict=True))
        assert auth["isakmp.nextpayload"] == "46,35,39,41,42,0", text  # SK, then the decrypted inner chain
        assert (auth["isakmp.id.type"], auth["isakmp.id.data.fqdn"]) == ("2", "py.example")
        assert auth["isakmp.auth.method"] == "2" and auth["isakmp.notify.msgtype"] == "16384"
        assert not init["_ws.malformed"] and not auth["_ws.malformed"], text
        assert not init["_ws.expert.message"] and not auth["_ws.expert.message"], text
    control = dict(zip(fields, lines[-1].split("|"), strict=True))
    assert "Integrity Checksum Data is incorrect" in control["_ws.expert.message"]


# --- robustness: arbitrary octets only ever raise the documented error -----------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from(SUITES))
def test_random_octets_raise_only_parse_errors(data: bytes, suite: str) -> None:
    """Random datagrams, and random SK bodies behind a valid header, fail only with IKEParseError."""
    _, responder = keymats(suite)
    header = struct.pack("!8s8sBBBBII", SPI_I, SPI_R, PayloadType.SK, 0x20, 37, 0x08, 3, 28 + len(data))
    with contextlib.suppress(IKEParseError):
        decoded = decode_message(data)
        assert decode_message(encode_message(decoded)) == decoded  # what decodes, re-encodes the same
    with pytest.raises(IKEParseError):
        decode_message(header + data, responder)  # forging an ICV/tag by chance does not happen
