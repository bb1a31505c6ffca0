"""AUTH payloads (PSK, RFC 7427 signatures, legacy methods), identities and certificate validation.

Certificates and keys are generated with `cryptography` at test time (session fixture); nothing is
mocked: AUTH octets come from real keymats, chains are checked by cryptography's verifier.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import os
import pathlib
import pickle
import subprocess
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nf.ike.auth import (
    SUPPORTED_HASHES,
    AuthMethod,
    HashAlgorithm,
    PreSharedKey,
    PrivateKey,
    Signer,
    create_auth,
    decode_hash_algorithms,
    encode_hash_algorithms,
    verify_auth,
    verify_signature,
)
from nf.ike.certificates import (
    TrustAnchors,
    cert_payloads,
    certificate_matches,
    certificates_from_payloads,
    check_peer_certificate,
    key_hash,
    load_certificates,
)
from nf.ike.errors import AuthenticationError, AuthReason, IKEParseError
from nf.ike.identities import ANY, Identity, IDType, dn_attributes, dn_equal, dn_text
from nf.ike.keymat import IKEKeymat
from nf.ike.payloads import AuthPayload, CertPayload, IDiPayload, IDrPayload
from nf.ike.proposals import CipherSuite, ProposalSpec

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
SPI_I, SPI_R = bytes.fromhex("a1a2a3a4a5a6a7a8"), bytes.fromhex("b1b2b3b4b5b6b7b8")
MESSAGE_I, MESSAGE_R = b"<IKE_SA_INIT request as sent>", b"<IKE_SA_INIT response as sent>"
NONCE_I, NONCE_R = os.urandom(32), os.urandom(32)


def _pair(text: str = "aes128gcm16-prfsha256-x25519") -> tuple[IKEKeymat, IKEKeymat]:
    spec = ProposalSpec.parse(text)
    suite = CipherSuite(
        spec.encrs[0], spec.prfs[0], spec.integs[0] if spec.integs else None, spec.dh_groups[0]
    )
    common = {
        "shared_secret": b"g^ir",
        "nonce_i": NONCE_I,
        "nonce_r": NONCE_R,
        "spi_i": SPI_I,
        "spi_r": SPI_R,
    }
    return (
        IKEKeymat.derive(suite, initiator=True, rng=os.urandom, **common),
        IKEKeymat.derive(suite, initiator=False, rng=os.urandom, **common),
    )


# --- PSK (method 2) --------------------------------------------------------------------------------


def test_psk_auth_known_answer() -> None:
    """AUTH = prf(prf(PSK, "Key Pad for IKEv2"), RealMessage1 | NonceRData | prf(SK_pi, IDi'))."""
    initiator, _ = _pair("aes128-sha256-x25519")
    psk = PreSharedKey(b"secret")
    idi = IDiPayload(IDType.FQDN, b"py.example")
    auth = create_auth(initiator, psk, message=MESSAGE_I, nonce=NONCE_R, id_payload=idi)
    octets = initiator.auth_octets(
        signer_is_initiator=True, message=MESSAGE_I, nonce=NONCE_R, rest_of_id=idi.rest_of_id
    )
    assert octets.startswith(MESSAGE_I + NONCE_R) and len(octets) == len(MESSAGE_I) + 32 + 32
    pad_key = hmac.new(b"secret", b"Key Pad for IKEv2", "sha256").digest()
    assert auth == AuthPayload(AuthMethod.SHARED_KEY, hmac.new(pad_key, octets, "sha256").digest())


def test_psk_auth_both_directions_and_failures() -> None:
    initiator, responder = _pair()
    psk = PreSharedKey.from_config("0x000102030405060708090a0b0c0d0e0f")
    idi, idr = IDiPayload(IDType.FQDN, b"py.example"), IDrPayload(IDType.FQDN, b"sw.example")
    auth_i = create_auth(initiator, psk, message=MESSAGE_I, nonce=NONCE_R, id_payload=idi)
    verify_auth(responder, psk, auth_i, message=MESSAGE_I, nonce=NONCE_R, id_payload=idi)
    auth_r = create_auth(responder, psk, message=MESSAGE_R, nonce=NONCE_I, id_payload=idr)
    verify_auth(initiator, psk, auth_r, message=MESSAGE_R, nonce=NONCE_I, id_payload=idr)
    assert auth_i != auth_r

    failures = [
        (PreSharedKey(b"other"), auth_i, MESSAGE_I, idi),  # wrong key
        (psk, auth_i, MESSAGE_I, IDiPayload(IDType.FQDN, b"evil.example")),  # wrong ID
        (psk, auth_i, MESSAGE_I, IDiPayload(IDType.FQDN, b"py.example", b"\x01\x00\x00")),  # RESERVED counts
        (psk, auth_i, MESSAGE_R, idi),  # wrong message
        (psk, auth_r, MESSAGE_I, idi),  # the responder's AUTH replayed as the initiator's
    ]
    for key, auth, message, id_payload in failures:
        with pytest.raises(AuthenticationError) as info:
            verify_auth(responder, key, auth, message=message, nonce=NONCE_R, id_payload=id_payload)
        assert info.value.reason is AuthReason.WRONG_AUTH_DATA
    with pytest.raises(AuthenticationError) as info:
        verify_auth(
            responder, psk, AuthPayload(14, auth_i.data), message=MESSAGE_I, nonce=NONCE_R, id_payload=idi
        )
    assert info.value.reason is AuthReason.UNSUPPORTED_METHOD


def test_psk_config_spellings_and_secrecy() -> None:
    long_ascii = "x" * 64
    raw = bytes(range(16))
    for text, secret in (
        ("0x" + raw.hex(), raw),
        ("0s" + base64.b64encode(raw).decode(), raw),
        (long_ascii, long_ascii.encode()),
    ):
        initiator, responder = _pair()
        idi = IDiPayload(IDType.FQDN, b"a")
        auth = create_auth(
            initiator, PreSharedKey.from_config(text), message=b"m", nonce=b"n", id_payload=idi
        )
        verify_auth(responder, PreSharedKey(secret), auth, message=b"m", nonce=b"n", id_payload=idi)
    psk = PreSharedKey(b"topsecret")
    assert "topsecret" not in repr(psk) + str(psk)
    with pytest.raises(TypeError):
        pickle.dumps(psk)
    for bad in ("0xzz", "0s!!!", ""):
        with pytest.raises(AuthenticationError) as info:
            PreSharedKey.from_config(bad)
        assert info.value.reason is AuthReason.BAD_CREDENTIAL


# --- signatures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    ec256: ec.EllipticCurvePrivateKey
    ec384: ec.EllipticCurvePrivateKey
    rsa2048: rsa.RSAPrivateKey
    ed: ed25519.Ed25519PrivateKey
    other_ec256: ec.EllipticCurvePrivateKey
    other_rsa: rsa.RSAPrivateKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(65537, 2048),
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(65537, 2048),
    )


# AUTH data prefixes (ASN.1 length | AlgorithmIdentifier) as strongSwan builds them (ikev2.md s5.3).
PREFIX = {
    "ec256": "0C 30 0A 06 08 2A 86 48 CE 3D 04 03 02",
    "ec384": "0C 30 0A 06 08 2A 86 48 CE 3D 04 03 03",
    "rsa": "0F 30 0D 06 09 2A 86 48 86 F7 0D 01 01 0B 05 00",
    "rsa-pss": "43 30 41 06 09 2A 86 48 86 F7 0D 01 01 0A 30 34 A0 0F 30 0D 06 09 60 86 48 01 65"
    " 03 04 02 01 05 00 A1 1C 30 1A 06 09 2A 86 48 86 F7 0D 01 01 08 30 0D 06 09 60 86 48 01 65"
    " 03 04 02 01 05 00 A2 03 02 01 20",
    "ed": "07 30 05 06 03 2B 65 70",
}


def _signer(keys: Keys, name: str) -> Signer:
    by_name: dict[str, PrivateKey] = {
        "ec256": keys.ec256,
        "ec384": keys.ec384,
        "rsa": keys.rsa2048,
        "rsa-pss": keys.rsa2048,
        "ed": keys.ed,
    }
    return Signer(by_name[name], rsa_pss=name == "rsa-pss")


@pytest.mark.parametrize("name", sorted(PREFIX))
def test_rfc7427_signature_each_scheme(keys: Keys, name: str) -> None:
    initiator, responder = _pair()
    signer = _signer(keys, name)
    idi = IDiPayload(IDType.DER_ASN1_DN, b"\x30\x00")
    auth = create_auth(
        initiator, signer, message=MESSAGE_I, nonce=NONCE_R, id_payload=idi, peer_hashes=[2, 3, 4, 5]
    )
    assert auth.method == AuthMethod.DIGITAL_SIGNATURE
    assert auth.data.startswith(bytes.fromhex(PREFIX[name]))
    verify_auth(responder, signer.public_key, auth, message=MESSAGE_I, nonce=NONCE_R, id_payload=idi)
    other_id = IDiPayload(IDType.DER_ASN1_DN, b"\x30\x01")
    for message, nonce, id_payload in (
        (MESSAGE_R, NONCE_R, idi),
        (MESSAGE_I, NONCE_I, idi),
        (MESSAGE_I, NONCE_R, other_id),
    ):
        with pytest.raises(AuthenticationError) as info:
            verify_auth(
                responder, signer.public_key, auth, message=message, nonce=nonce, id_payload=id_payload
            )
        assert info.value.reason is AuthReason.WRONG_AUTH_DATA


@pytest.mark.parametrize(
    ("name", "other", "reason"),
    [
        ("ec256", "other_ec256", AuthReason.WRONG_AUTH_DATA),
        ("rsa", "other_rsa", AuthReason.WRONG_AUTH_DATA),
        ("rsa-pss", "other_rsa", AuthReason.WRONG_AUTH_DATA),
        ("ec256", "rsa2048", AuthReason.KEY_MISMATCH),
        ("ed", "ec256", AuthReason.KEY_MISMATCH),
    ],
)
def test_signature_with_the_wrong_key_fails(keys: Keys, name: str, other: str, reason: AuthReason) -> None:
    auth = _signer(keys, name).auth_payload(b"octets", SUPPORTED_HASHES)
    wrong_key = getattr(keys, other).public_key()
    with pytest.raises(AuthenticationError) as info:
        verify_signature(wrong_key, auth, b"octets")
    assert info.value.reason is reason


def test_hash_negotiation(keys: Keys) -> None:
    ec_auth = Signer(keys.ec256).auth_payload(b"o", [HashAlgorithm.SHA2_384])
    assert ec_auth.data.startswith(
        bytes.fromhex(PREFIX["ec384"])
    )  # P-256 key, but SHA-384 was all it offered
    verify_signature(keys.ec256.public_key(), ec_auth, b"o")
    with pytest.raises(AuthenticationError) as info:
        verify_signature(keys.ec256.public_key(), ec_auth, b"o", our_hashes=[HashAlgorithm.SHA2_256])
    assert info.value.reason is AuthReason.HASH_NOT_NEGOTIATED
    rsa_auth = Signer(keys.rsa2048).auth_payload(b"o", [HashAlgorithm.SHA2_512])
    assert rsa_auth.data[1:16] == bytes.fromhex("30 0D 06 09 2A 86 48 86 F7 0D 01 01 0D 05 00")
    with pytest.raises(AuthenticationError) as info:
        Signer(keys.ed).auth_payload(b"o", [HashAlgorithm.SHA2_256])
    assert info.value.reason is AuthReason.HASH_NOT_NEGOTIATED
    # RSASSA-PSS with SHA-512: strongSwan's test_signature_params.c build vector.
    pss_auth = Signer(keys.rsa2048, rsa_pss=True).auth_payload(b"o", [HashAlgorithm.SHA2_512])
    assert pss_auth.data[:68] == bytes.fromhex(
        "43 30 41 06 09 2a 86 48 86 f7 0d 01 01 0a 30 34 a0 0f 30 0d 06 09 60 86 48 01 65 03 04 02 03"
        " 05 00 a1 1c 30 1a 06 09 2a 86 48 86 f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65 03 04 02 03"
        " 05 00 a2 03 02 01 40"
    )
    verify_signature(keys.rsa2048.public_key(), pss_auth, b"o")


def test_legacy_methods_when_peer_sent_no_hash_list(keys: Keys) -> None:
    for key, method, size in ((keys.rsa2048, 1, 256), (keys.ec256, 9, 64), (keys.ec384, 10, 96)):
        auth = Signer(key).auth_payload(b"octets", None)
        assert auth.method == method and len(auth.data) == size
        verify_signature(key.public_key(), auth, b"octets")
        with pytest.raises(AuthenticationError):
            verify_signature(key.public_key(), auth, b"other")
    with pytest.raises(AuthenticationError) as info:
        Signer(keys.ed).auth_payload(b"octets", None)
    assert info.value.reason is AuthReason.HASH_NOT_NEGOTIATED
    with pytest.raises(AuthenticationError) as info:
        verify_signature(keys.ec384.public_key(), Signer(keys.ec256).auth_payload(b"o", None), b"o")
    assert info.value.reason is AuthReason.KEY_MISMATCH


def test_rfc7427_appendix_pss_identifier_with_trailer_is_accepted(keys: Keys) -> None:
    identifier = bytes.fromhex(
        "30 46 06 09 2A 86 48 86 F7 0D 01 01 0A 30 39 A0 0F 30 0D 06 09 60 86 48 01 65 03 04 02 01 05 00"
        " A1 1C 30 1A 06 09 2A 86 48 86 F7 0D 01 01 08 30 0D 06 09 60 86 48 01 65 03 04 02 01 05 00"
        " A2 03 02 01 20 A3 03 02 01 01"
    )
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    signature = keys.rsa2048.sign(b"octets", pss, hashes.SHA256())
    auth = AuthPayload(14, bytes([len(identifier)]) + identifier + signature)
    verify_signature(keys.rsa2048.public_key(), auth, b"octets")


def test_unknown_algorithm_identifier_and_method(keys: Keys) -> None:
    identifier = bytes.fromhex("30 0A 06 08 2A 86 48 CE 3D 04 03 01")  # ecdsa-with-SHA224
    auth = AuthPayload(14, bytes([len(identifier)]) + identifier + b"sig")
    for bad in (auth, AuthPayload(3, b"dss"), AuthPayload(14, b"\x50" + bytes(10))):
        with pytest.raises(AuthenticationError) as info:
            verify_signature(keys.ec256.public_key(), bad, b"octets")
        assert info.value.reason is AuthReason.UNSUPPORTED_METHOD
    with pytest.raises(AuthenticationError) as info:
        verify_signature(keys.ec256.public_key(), AuthPayload(9, bytes(10)), b"octets")
    assert info.value.reason is AuthReason.BAD_AUTH_DATA
    with pytest.raises(AuthenticationError) as info:
        verify_signature(keys.ec256.public_key(), AuthPayload(14, b""), b"octets")
    assert info.value.reason is AuthReason.BAD_AUTH_DATA


def test_signature_hash_algorithms_notify_data() -> None:
    assert encode_hash_algorithms() == bytes.fromhex("00 02 00 03 00 04 00 05")
    assert decode_hash_algorithms(bytes.fromhex("00 02 00 03 00 04")) == (2, 3, 4)
    with pytest.raises(IKEParseError):
        decode_hash_algorithms(b"\x00\x02\x00")


def test_signer_loads_pem_and_hides_key(keys: Keys, tmp_path: pathlib.Path) -> None:
    pem = keys.ec256.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    signer = Signer.from_file(str(path))
    assert repr(signer) == "Signer(ECDSA secp256r1)"
    verify_signature(keys.ec256.public_key(), signer.auth_payload(b"x", [2]), b"x")
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    with pytest.raises(AuthenticationError) as info:
        Signer.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert info.value.reason is AuthReason.BAD_CREDENTIAL


# --- identities ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "id_type", "data"),
    [
        ("192.0.2.1", IDType.IPV4_ADDR, bytes([192, 0, 2, 1])),
        ("2001:db8::1", IDType.IPV6_ADDR, ipaddress.IPv6Address("2001:db8::1").packed),
        ("host.example", IDType.FQDN, b"host.example"),
        ("@host.example", IDType.FQDN, b"host.example"),
        ("user@example.com", IDType.RFC822_ADDR, b"user@example.com"),
        ("@@user@example.com", IDType.RFC822_ADDR, b"user@example.com"),
        ("@#0123abcd", IDType.KEY_ID, bytes.fromhex("0123abcd")),
        ("fqdn:192.0.2.1", IDType.FQDN, b"192.0.2.1"),
        ("dns:host.example", IDType.FQDN, b"host.example"),
        ("keyid:#0a0b", IDType.KEY_ID, b"\x0a\x0b"),
        ("keyid:opaque", IDType.KEY_ID, b"opaque"),
        ("asn1dn:#3000", IDType.DER_ASN1_DN, b"\x30\x00"),
        ("ipv4:192.0.2.1", IDType.IPV4_ADDR, bytes([192, 0, 2, 1])),
        ("email:a@b", IDType.RFC822_ADDR, b"a@b"),
        ("%any", IDType.ANY, b""),
    ],
)
def test_identity_strings(text: str, id_type: int, data: bytes) -> None:
    identity = Identity.parse(text)
    assert (identity.id_type, identity.data) == (id_type, data)
    assert str(identity) == text


def test_dn_identity_matches_certificate_subject_semantically() -> None:
    dn = Identity.parse("C=CH, O=strongSwan, CN=moon")
    assert dn.id_type == IDType.DER_ASN1_DN
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "strongSwan"),
            x509.NameAttribute(NameOID.COMMON_NAME, "moon"),
        ]
    )
    assert dn.data == name.public_bytes()
    assert Identity.from_name(name).matches(dn) and dn.matches(Identity.from_name(name))
    for bad in ("C=CH, XX=bad", "keyid:#zz", "ipv4:2001:db8::1", "ipv6:nope"):
        with pytest.raises(AuthenticationError) as info:
            Identity.parse(bad)
        assert info.value.reason is AuthReason.BAD_IDENTITY


def test_identity_matching_rules() -> None:
    assert ANY.matches(Identity.parse("a.example"))
    assert Identity.parse("A.Example").matches(Identity.parse("a.example"))
    assert not Identity.parse("a.example").matches(Identity.parse("b.example"))
    assert not Identity.parse("192.0.2.1").matches(Identity.parse("fqdn:192.0.2.1"))
    assert Identity.from_payload(Identity.parse("x@y").to_idi()) == Identity.parse("x@y")
    assert Identity.parse("x@y").to_idr().rest_of_id == bytes([3, 0, 0, 0]) + b"x@y"
    with pytest.raises(ValueError):
        ANY.to_idi()


# --- certificates ----------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "twamp-nf test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: x509.Name,
    key: PrivateKey,
    issuer: x509.Name,
    issuer_key: PrivateKey,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
    days: int = 365,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=30))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


@dataclass(frozen=True)
class Pki:
    ca: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate  # EC P-256, issued by the intermediate, with SANs
    leaf_key: ec.EllipticCurvePrivateKey
    rsa_leaf: x509.Certificate  # issued by the CA directly, no SAN
    rogue_ca: x509.Certificate
    rogue_leaf: x509.Certificate
    expired_leaf: x509.Certificate


@pytest.fixture(scope="session")
def pki(keys: Keys) -> Pki:
    ca_key, mid_key, rogue_key = (ec.generate_private_key(ec.SECP384R1()) for _ in range(3))
    ca = _cert(_name("Test Root"), ca_key, _name("Test Root"), ca_key, ca=True)
    mid = _cert(_name("Test Intermediate"), mid_key, ca.subject, ca_key, ca=True)
    san: list[x509.GeneralName] = [
        x509.DNSName("py.example"),
        x509.RFC822Name("py@example.org"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::7")),
    ]
    leaf = _cert(_name("py"), keys.ec256, mid.subject, mid_key, san=san)
    rsa_leaf = _cert(_name("sw"), keys.rsa2048, ca.subject, ca_key)
    rogue_ca = _cert(_name("Test Root"), rogue_key, _name("Test Root"), rogue_key, ca=True)
    rogue_leaf = _cert(_name("py"), keys.ec256, rogue_ca.subject, rogue_key, san=san)
    expired = _cert(_name("py"), keys.ec256, ca.subject, ca_key, days=-1)
    return Pki(ca, mid, leaf, keys.ec256, rsa_leaf, rogue_ca, rogue_leaf, expired)


def test_chain_through_intermediate_is_trusted(pki: Pki) -> None:
    trust = TrustAnchors([pki.ca])
    chain = trust.verify(pki.leaf, [pki.intermediate], now=NOW)
    assert [c.subject for c in chain] == [pki.leaf.subject, pki.intermediate.subject, pki.ca.subject]
    trust.verify(pki.rsa_leaf, [], now=NOW)


@pytest.mark.parametrize(
    "case", ["rogue", "missing-intermediate", "expired", "not-yet-valid", "leaf-as-anchor"]
)
def test_untrusted_chains_are_refused(pki: Pki, case: str) -> None:
    trust = TrustAnchors([pki.ca])
    leaf, intermediates, now = pki.leaf, [pki.intermediate], NOW
    if case == "rogue":
        leaf, intermediates = pki.rogue_leaf, []
    elif case == "missing-intermediate":
        intermediates = []
    elif case == "expired":
        leaf, intermediates = pki.expired_leaf, []
    elif case == "not-yet-valid":
        now = NOW - datetime.timedelta(days=365)
    else:
        trust = TrustAnchors([pki.rogue_leaf])
    with pytest.raises(AuthenticationError) as info:
        trust.verify(leaf, intermediates, now=now)
    assert info.value.reason is AuthReason.UNTRUSTED_CERTIFICATE


@pytest.mark.parametrize(
    ("identity", "matches"),
    [
        ("py.example", True),
        ("PY.example", True),
        ("py@example.org", True),
        ("192.0.2.7", True),
        ("2001:db8::7", True),
        ("O=twamp-nf test, CN=py", True),
        ("sw.example", False),
        ("192.0.2.8", False),
        ("O=twamp-nf test, CN=sw", False),
        ("@#0102", False),
    ],
)
def test_identity_binds_to_subject_or_san(pki: Pki, identity: str, matches: bool) -> None:
    assert certificate_matches(pki.leaf, Identity.parse(identity)) is matches


def test_received_dn_id_matches_exact_subject(pki: Pki) -> None:
    assert certificate_matches(
        pki.rsa_leaf, Identity(IDType.DER_ASN1_DN, pki.rsa_leaf.subject.public_bytes())
    )
    assert not certificate_matches(
        pki.rsa_leaf, Identity(IDType.DER_ASN1_DN, pki.leaf.subject.public_bytes())
    )
    assert not certificate_matches(pki.rsa_leaf, Identity.parse("sw.example"))  # no SAN at all


def test_cert_and_certreq_payloads(pki: Pki) -> None:
    payloads = cert_payloads([pki.leaf, pki.intermediate])
    assert [p.encoding for p in payloads] == [4, 4]
    assert certificates_from_payloads(payloads) == [pki.leaf, pki.intermediate]
    for bad in (CertPayload(4, b"not der"), CertPayload(12, payloads[0].data)):
        with pytest.raises(AuthenticationError) as info:
            certificates_from_payloads([bad])
        assert info.value.reason is AuthReason.BAD_CERTIFICATE
    spki = pki.ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_hash(pki.ca) == hashlib.sha1(spki).digest()
    request = TrustAnchors([pki.ca, pki.rogue_ca]).certreq_payload()
    assert request.encoding == 4 and request.authorities == (key_hash(pki.ca), key_hash(pki.rogue_ca))


def test_load_certificates_from_pem(pki: Pki, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "chain.pem"
    path.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (pki.leaf, pki.intermediate))
    )
    assert load_certificates(str(path)) == [pki.leaf, pki.intermediate]
    assert TrustAnchors.from_files(str(path)).certreq_payload().authorities[0] == key_hash(pki.leaf)
    path.write_bytes(b"garbage")
    with pytest.raises(AuthenticationError):
        load_certificates(str(path))


def test_certificate_authentication_end_to_end(pki: Pki) -> None:
    """Initiator signs with its cert key; responder validates CERTs, binds IDi, verifies AUTH."""
    initiator, responder = _pair("aes256-sha384-ecp384")
    identity = Identity.parse("py.example")
    idi = identity.to_idi()
    certs = cert_payloads([pki.leaf, pki.intermediate])
    auth = create_auth(
        initiator,
        Signer(pki.leaf_key),
        message=MESSAGE_I,
        nonce=NONCE_R,
        id_payload=idi,
        peer_hashes=SUPPORTED_HASHES,
    )
    trust = TrustAnchors([pki.ca])
    received = certificates_from_payloads(certs)
    public_key = check_peer_certificate(trust, received, Identity.from_payload(idi), now=NOW)
    verify_auth(responder, public_key, auth, message=MESSAGE_I, nonce=NONCE_R, id_payload=idi)

    with pytest.raises(AuthenticationError) as info:
        check_peer_certificate(trust, received, Identity.parse("sw.example"), now=NOW)
    assert info.value.reason is AuthReason.ID_MISMATCH
    with pytest.raises(AuthenticationError) as info:
        check_peer_certificate(TrustAnchors([pki.rogue_ca]), received, Identity.from_payload(idi), now=NOW)
    assert info.value.reason is AuthReason.UNTRUSTED_CERTIFICATE
    with pytest.raises(AuthenticationError) as info:
        check_peer_certificate(trust, [], identity, now=NOW)
    assert info.value.reason is AuthReason.UNTRUSTED_CERTIFICATE
    rsa_key = check_peer_certificate(trust, [pki.rsa_leaf], Identity.from_name(pki.rsa_leaf.subject), now=NOW)
    with pytest.raises(AuthenticationError) as info:
        verify_auth(responder, rsa_key, auth, message=MESSAGE_I, nonce=NONCE_R, id_payload=idi)
    assert info.value.reason is AuthReason.KEY_MISMATCH


# --- DER DNs: reading, comparing like strongSwan, printing -------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([tag, len(body)]) + body


def _der_dn(*attributes: tuple[str, int, bytes]) -> bytes:
    """A DER Name with chosen string tags (0x13 PrintableString, 0x0C UTF8String), one RDN per attribute."""
    oids = {"C": bytes.fromhex("550406"), "O": bytes.fromhex("55040a"), "CN": bytes.fromhex("550403")}
    rdns = b"".join(
        _der(0x31, _der(0x30, _der(0x06, oids[key]) + _der(tag, value))) for key, tag, value in attributes
    )
    return _der(0x30, rdns)


DN_KEYS = ["O", "OU", "CN", "L", "ST", "DC", "SN", "GN", "UID", "SERIALNUMBER"]
dn_values = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\="),
    min_size=1,
    max_size=20,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(DN_KEYS), dn_values), min_size=1, max_size=6))
def test_dn_text_round_trip(parts: list[tuple[str, str]]) -> None:
    text = ", ".join(f"{key}={value.replace(',', chr(92) + ',')}" for key, value in parts)
    identity = Identity.parse(text)
    attributes = dn_attributes(identity.data)
    assert attributes is not None
    assert [value for _, _, value in attributes] == [value.encode() for _, value in parts]
    assert Identity.parse(dn_text(identity.data) or "").data == identity.data
    assert str(Identity(IDType.DER_ASN1_DN, identity.data)) == dn_text(identity.data)
    assert dn_equal(identity.data, identity.data)


def test_dn_comparison_follows_strongswan() -> None:
    printable = _der_dn(("C", 0x13, b"CH"), ("O", 0x13, b"strongSwan"), ("CN", 0x13, b"moon"))
    assert Identity.parse("C=CH, O=strongSwan, CN=moon").matches(Identity(IDType.DER_ASN1_DN, printable))
    assert dn_equal(printable, _der_dn(("C", 0x13, b"ch"), ("O", 0x13, b"STRONGSWAN"), ("CN", 0x13, b"Moon")))
    utf8 = _der_dn(("C", 0x13, b"CH"), ("O", 0x0C, b"strongSwan"), ("CN", 0x0C, b"moon"))
    assert dn_equal(printable, utf8)  # string type alone does not matter
    assert not dn_equal(
        printable, _der_dn(("C", 0x13, b"CH"), ("O", 0x0C, b"strongswan"), ("CN", 0x0C, b"moon"))
    )
    assert not dn_equal(
        printable, _der_dn(("C", 0x13, b"CH"), ("CN", 0x13, b"moon"), ("O", 0x13, b"strongSwan"))
    )
    assert not dn_equal(printable, _der_dn(("C", 0x13, b"CH"), ("O", 0x13, b"strongSwan")))
    assert str(Identity(IDType.DER_ASN1_DN, printable)) == "C=CH, O=strongSwan, CN=moon"


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30",
        b"\x31\x00",
        _der_dn(("CN", 0x0C, b"x")) + b"\x00",
        _der_dn(("CN", 0x0C, b"x"))[:-1],
        bytes.fromhex("30 07 31 05 30 03 06 01 55"),  # attribute without a value
        bytes.fromhex("30 09 31 07 30 05 02 01 01 0c 00"),  # INTEGER where the OID belongs
        bytes.fromhex("30 84 00 00 00 00"),  # 4-octet length form
    ],
)
def test_malformed_dns_are_refused(der: bytes) -> None:
    assert dn_attributes(der) is None
    assert not dn_equal(der, _der_dn(("CN", 0x0C, b"x")))
    assert str(Identity(IDType.DER_ASN1_DN, der)) == f"asn1dn:#{der.hex()}"


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=80))
def test_dn_reader_never_raises(data: bytes) -> None:
    dn_attributes(data)
    dn_equal(data, data + b"\x00")
    str(Identity(IDType.DER_ASN1_DN, data))


def test_certificate_subject_matches_configured_dn(pki: Pki) -> None:
    subject = pki.rsa_leaf.subject.public_bytes()
    assert certificate_matches(pki.rsa_leaf, Identity.parse("O=twamp-nf test, CN=sw"))
    assert certificate_matches(pki.rsa_leaf, Identity(IDType.DER_ASN1_DN, subject))
    assert not certificate_matches(
        pki.rsa_leaf, Identity.parse("O=twamp-nf test, CN=SW")
    )  # UTF8: case counts


# --- credentials made by strongSwan's own `pki` tool ---------------------------------------------------


@dataclass(frozen=True)
class StrongSwanPki:
    ca: list[x509.Certificate]
    moon: x509.Certificate  # RSA, DN + SANs
    sun: x509.Certificate  # Ed25519, DN only
    moon_key: str
    sun_key: str


def _pki(directory: pathlib.Path, *args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["pki", *args], input=stdin, capture_output=True, timeout=120, check=True, cwd=directory
    )
    return result.stdout


@pytest.fixture(scope="module")
def strongswan_pki(tmp_path_factory: pytest.TempPathFactory) -> StrongSwanPki:
    d = tmp_path_factory.mktemp("sw-pki")
    (d / "ca.key").write_bytes(_pki(d, "--gen", "--type", "ecdsa", "--size", "384", "--outform", "pem"))
    (d / "ca.pem").write_bytes(
        _pki(
            d,
            "--self",
            "--ca",
            "--lifetime",
            "30",
            "--in",
            "ca.key",
            "--dn",
            "C=CH, O=strongSwan, CN=Root",
            "--outform",
            "pem",
        )
    )
    issued: dict[str, bytes] = {}
    for name, key_type, extra in (
        (
            "moon",
            ["--type", "rsa", "--size", "2048"],
            ["--san", "moon.example", "--san", "moon@strongswan.org", "--san", "192.0.2.9"],
        ),
        ("sun", ["--type", "ed25519"], []),
    ):
        (d / f"{name}.key").write_bytes(_pki(d, "--gen", *key_type, "--outform", "pem"))
        public = _pki(d, "--pub", "--in", f"{name}.key")
        issued[name] = _pki(
            d,
            "--issue",
            "--lifetime",
            "30",
            "--cacert",
            "ca.pem",
            "--cakey",
            "ca.key",
            "--dn",
            f"C=CH, O=strongSwan, CN={name}",
            *extra,
            "--outform",
            "pem",
            stdin=public,
        )
    return StrongSwanPki(
        load_certificates(str(d / "ca.pem")),
        x509.load_pem_x509_certificate(issued["moon"]),
        x509.load_pem_x509_certificate(issued["sun"]),
        str(d / "moon.key"),
        str(d / "sun.key"),
    )


@pytest.mark.strongswan
def test_strongswan_pki_credentials(strongswan_pki: StrongSwanPki) -> None:
    """Chains, DN/SAN binding and keys exactly as an operator's `pki`-made files arrive."""
    now = datetime.datetime.now(datetime.UTC)
    trust = TrustAnchors(strongswan_pki.ca)
    moon, sun = strongswan_pki.moon, strongswan_pki.sun
    assert len(trust.verify(moon, [], now=now)) == 2 and len(trust.verify(sun, [], now=now)) == 2
    attributes = dn_attributes(moon.subject.public_bytes())
    assert attributes is not None and {tag for _, tag, _ in attributes} == {
        0x13
    }  # pki writes PrintableStrings
    for text in ("C=CH, O=strongSwan, CN=moon", "moon.example", "moon@strongswan.org", "192.0.2.9"):
        assert certificate_matches(moon, Identity.parse(text)), text
    assert not certificate_matches(moon, Identity.parse("C=CH, O=strongSwan, CN=sun"))
    assert str(Identity.from_payload(IDiPayload(IDType.DER_ASN1_DN, moon.subject.public_bytes()))) == (
        "C=CH, O=strongSwan, CN=moon"
    )
    initiator, responder = _pair()
    for cert, key_path in ((moon, strongswan_pki.moon_key), (sun, strongswan_pki.sun_key)):
        idi = IDiPayload(IDType.DER_ASN1_DN, cert.subject.public_bytes())
        signer = Signer.from_file(key_path)
        auth = create_auth(
            initiator, signer, message=MESSAGE_I, nonce=NONCE_R, id_payload=idi, peer_hashes=SUPPORTED_HASHES
        )
        public_key = check_peer_certificate(trust, [cert], Identity.from_payload(idi), now=now)
        verify_auth(responder, public_key, auth, message=MESSAGE_I, nonce=NONCE_R, id_payload=idi)
