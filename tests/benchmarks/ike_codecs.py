"""Per-operation cost of the IKEv2 building blocks: codecs, SK protection, key exchange, keymat, AUTH.

Prints microseconds per operation (median of several timed batches), so regressions in the hot paths of
an IKE SA setup show up as numbers rather than test failures. Bounded: each figure takes about
`--seconds` of wall time.

    .venv/bin/python -m tests.benchmarks.ike_codecs [--seconds S]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import statistics
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from nf.ike.auth import SUPPORTED_HASHES, PreSharedKey, Signer, verify_signature
from nf.ike.certificates import TrustAnchors
from nf.ike.keymat import IKEKeymat
from nf.ike.message import decode_message, encode_message, plain, protected
from nf.ike.payloads import (
    AuthPayload,
    IDiPayload,
    KEPayload,
    NoncePayload,
    NotifyPayload,
    NotifyType,
    SAPayload,
)
from nf.ike.proposals import CipherSuite, ProposalSpec, offer, parse_proposals, select_proposal
from nf.ike.transforms import DH_GROUPS, DhGroup

SUITES = [
    "aes128-sha256-x25519",
    "aes256-sha512-ecp384",
    "aes128gcm16-prfsha256-x25519",
    "aes256gcm16-prfsha384-ecp384",
]


def measure(operation: Callable[[], object], seconds: float) -> float:
    """Median microseconds per call over batches sized to take about seconds/5 each."""
    batch = 1
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            operation()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 20 or batch >= 1 << 20:
            break
        batch *= 2
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(batch):
            operation()
        samples.append((time.perf_counter() - start) / batch)
    return statistics.median(samples) * 1e6


def dh_round(group: DhGroup, peer: bytes) -> bytes:
    return group.generate(os.urandom).shared_secret(peer)


def suite_of(text: str) -> CipherSuite:
    spec = ProposalSpec.parse(text)
    return CipherSuite(
        spec.encrs[0], spec.prfs[0], spec.integs[0] if spec.integs else None, spec.dh_groups[0]
    )


def keymat_pair(suite: CipherSuite) -> tuple[IKEKeymat, IKEKeymat]:
    common = {
        "shared_secret": os.urandom(32),
        "nonce_i": os.urandom(32),
        "nonce_r": os.urandom(32),
        "spi_i": os.urandom(8),
        "spi_r": os.urandom(8),
    }
    return (
        IKEKeymat.derive(suite, initiator=True, rng=os.urandom, **common),
        IKEKeymat.derive(suite, initiator=False, rng=os.urandom, **common),
    )


def _cert(
    key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca" if ca else "leaf")])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per figure")
    seconds = parser.parse_args().seconds
    rows: list[tuple[str, float]] = []

    specs = parse_proposals(",".join(SUITES))
    init = plain(
        os.urandom(8),
        bytes(8),
        34,
        0,
        is_response=False,
        from_initiator=True,
        payloads=[
            SAPayload(offer(specs)),
            KEPayload(31, os.urandom(32)),
            NoncePayload(os.urandom(32)),
            NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, bytes.fromhex("000200030004")),
        ],
    )
    raw_init = encode_message(init)
    rows.append(("IKE_SA_INIT request encode", measure(lambda: encode_message(init), seconds)))
    rows.append(("IKE_SA_INIT request decode", measure(lambda: decode_message(raw_init), seconds)))
    sa = init.first(SAPayload)
    assert sa is not None
    rows.append(
        (
            "proposal selection (4 offers)",
            measure(lambda: select_proposal(specs[::-1], sa.proposals), seconds),
        )
    )

    inner = [IDiPayload(2, b"py.example"), AuthPayload(2, os.urandom(32))]
    for text in SUITES:
        sender, receiver = keymat_pair(suite_of(text))
        msg = protected(
            sender.spi_i, sender.spi_r, 35, 1, is_response=False, from_initiator=True, payloads=inner
        )
        raw = encode_message(msg, sender)
        rows.append(
            (
                f"IKE_AUTH encode+protect {text}",
                measure(functools.partial(encode_message, msg, sender), seconds),
            )
        )
        rows.append(
            (
                f"IKE_AUTH unprotect+decode {text}",
                measure(functools.partial(decode_message, raw, receiver), seconds),
            )
        )

    for group in DH_GROUPS.values():
        peer = group.generate(os.urandom).public_value
        rows.append(
            (
                f"DH {group.name} generate+shared",
                measure(functools.partial(dh_round, group, peer), seconds / 2),
            )
        )

    suite = suite_of("aes256gcm16-prfsha384-ecp384")
    rows.append(("keymat derive (SHA-384, GCM-256)", measure(lambda: keymat_pair(suite), seconds)))

    psk, prf, octets = PreSharedKey(os.urandom(32)), suite.prf, os.urandom(600)
    rows.append(("PSK AUTH compute", measure(lambda: psk.auth_payload(prf, octets), seconds)))
    for label, key in (
        ("ECDSA P-256", ec.generate_private_key(ec.SECP256R1())),
        ("RSA-2048", rsa.generate_private_key(65537, 2048)),
        ("Ed25519", ed25519.Ed25519PrivateKey.generate()),
    ):
        signer = Signer(key)
        auth = signer.auth_payload(octets, SUPPORTED_HASHES)
        rows.append(
            (
                f"{label} AUTH sign",
                measure(functools.partial(signer.auth_payload, octets, SUPPORTED_HASHES), seconds / 2),
            )
        )
        rows.append(
            (
                f"{label} AUTH verify",
                measure(functools.partial(verify_signature, key.public_key(), auth, octets), seconds / 2),
            )
        )

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca, leaf = _cert(ca_key, ca_key, True), _cert(leaf_key, ca_key, False)
    trust, now = TrustAnchors([ca]), datetime.datetime.now(datetime.UTC)
    rows.append(
        ("certificate chain verify (1 CA)", measure(lambda: trust.verify(leaf, [], now=now), seconds / 2))
    )

    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  us/op")
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
