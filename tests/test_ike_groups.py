"""The constants behind the key exchange groups, each checked against a source independent of our table.

MODP primes: against OpenSSL's built-in named groups (the `openssl` command's own copy, not the one inside
`cryptography`) and against the RFC 3526 construction from pi, computed here with integers. Curve orders:
against OpenSSL's explicit curve parameters. Then what the groups added for gateways (ECP-521, Curve448,
MODP-3072/4096) must do beyond the generic agreement and refusal tests in test_ike_keymat.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nf.ike.errors import KeyExchangeError, KeyExchangeReason
from nf.ike.transforms import (
    _P256_ORDER,
    _P384_ORDER,
    _P521_ORDER,
    DH_GROUPS,
    MODP_2048_PRIME,
    MODP_3072_PRIME,
    MODP_4096_PRIME,
    DhId,
)

OPENSSL = shutil.which("openssl")

# (group, our prime, OpenSSL's name for it, k of RFC 3526, security strength in bits per SP 800-57)
MODP = [
    pytest.param(DhId.MODP_2048, MODP_2048_PRIME, "modp_2048", 124476, 112, id="modp2048"),
    pytest.param(DhId.MODP_3072, MODP_3072_PRIME, "modp_3072", 1690314, 128, id="modp3072"),
    pytest.param(DhId.MODP_4096, MODP_4096_PRIME, "modp_4096", 240904, 152, id="modp4096"),
]


def openssl_integers(*args: str) -> list[int]:
    """The INTEGERs of the PEM that an openssl command prints, read back with `openssl asn1parse`."""
    if OPENSSL is None:
        pytest.fail("the openssl command is missing: tests/setup --test installs it")
    pem = subprocess.run([OPENSSL, *args], capture_output=True, check=True, timeout=60)
    parsed = subprocess.run(
        [OPENSSL, "asn1parse"], input=pem.stdout, capture_output=True, check=True, timeout=60
    )
    return [int(h, 16) for h in re.findall(r"prim: INTEGER\s+:([0-9A-F]+)", parsed.stdout.decode())]


def _arctan_inverse(x: int, one: int) -> int:
    """arctan(1/x) in fixed point (scaled by `one`), by its alternating series."""
    total, term, n, sign = 0, one // x, 1, 1
    while term:
        total += sign * (term // n)
        term //= x * x
        n, sign = n + 2, -sign
    return total


def floor_pi_times_2_to(bits: int) -> int:
    """floor(2^bits * pi) by Machin's formula, pi = 16 arctan(1/5) - 4 arctan(1/239), with guard bits.

    Integers only, so the check needs nothing beyond Python (mpmath is not in the venv). The truncation
    error of the series is a few units in 2^-(bits+64); pi is irrational, so no floor sits that close.
    """
    guard = 64
    one = 1 << (bits + guard)
    pi = 16 * _arctan_inverse(5, one) - 4 * _arctan_inverse(239, one)
    return pi >> guard


@pytest.mark.parametrize(("group", "prime", "name", "k", "strength"), MODP)
def test_modp_prime_is_openssls_named_group(
    group: DhId, prime: int, name: str, k: int, strength: int
) -> None:
    p, g = openssl_integers("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", f"group:{name}")
    assert (p, g) == (prime, 2)
    assert prime.bit_length() == 8 * DH_GROUPS[group].public_size


@pytest.mark.parametrize(("group", "prime", "name", "k", "strength"), MODP)
def test_modp_prime_follows_the_rfc3526_construction(
    group: DhId, prime: int, name: str, k: int, strength: int
) -> None:
    """p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) * pi) + k)."""
    n = 8 * DH_GROUPS[group].public_size
    assert prime == 2**n - 2 ** (n - 64) - 1 + 2**64 * (floor_pi_times_2_to(n - 130) + k)


def test_pi_is_pi() -> None:
    """The helper itself, on the digits everyone knows: 3.14159265358979323846..."""
    assert floor_pi_times_2_to(200) * 10**20 >> 200 == 314159265358979323846


@pytest.mark.parametrize(
    ("curve", "order"), [("prime256v1", _P256_ORDER), ("secp384r1", _P384_ORDER), ("secp521r1", _P521_ORDER)]
)
def test_curve_order_is_openssls(curve: str, order: int) -> None:
    *_, n, cofactor = openssl_integers("ecparam", "-name", curve, "-param_enc", "explicit")
    assert (n, cofactor) == (order, 1)


@pytest.mark.parametrize(("group", "prime", "name", "k", "strength"), MODP)
def test_modp_exponent_is_twice_the_strength_and_gives_two_to_the_x(
    group: DhId, prime: int, name: str, k: int, strength: int
) -> None:
    """The private exponent's randomness covers 2x the group's strength; g^x checked with Python ints."""
    asked: list[int] = []

    def rng(n: int) -> bytes:
        asked.append(n)
        return bytes(range(200, 200 - n, -1))

    ours = DH_GROUPS[group].generate(rng)
    (octets,) = asked
    assert 8 * octets >= 2 * strength
    exponent = int.from_bytes(rng(octets), "big") % (prime - 3) + 2
    assert ours.public_value == pow(2, exponent, prime).to_bytes(DH_GROUPS[group].public_size, "big")


def test_ecp521_ke_is_x_then_y_and_g_ir_is_the_66_octet_x() -> None:
    group = DH_GROUPS[DhId.ECP_521]
    seed = bytes(range(1, 75))
    ours = group.generate(lambda n: seed[:n])
    scalar = int.from_bytes(seed, "big") % (_P521_ORDER - 1) + 1
    numbers = ec.derive_private_key(scalar, ec.SECP521R1()).public_key().public_numbers()
    assert ours.public_value == numbers.x.to_bytes(66, "big") + numbers.y.to_bytes(66, "big")
    # g^ir is the x coordinate of peer's point times our scalar: with the peer being G itself, our own x
    generator = ec.derive_private_key(1, ec.SECP521R1()).public_key().public_numbers()
    g = generator.x.to_bytes(66, "big") + generator.y.to_bytes(66, "big")
    assert ours.shared_secret(g) == ours.public_value[:66]


def test_ecp521_refuses_coordinates_beyond_the_field() -> None:
    """A valid point with x (or y) plus p still fits 66 octets; OpenSSL must not reduce it for us."""
    p = 2**521 - 1
    ours, peer = DH_GROUPS[DhId.ECP_521].generate(os.urandom), DH_GROUPS[DhId.ECP_521].generate(os.urandom)
    x, y = int.from_bytes(peer.public_value[:66], "big"), int.from_bytes(peer.public_value[66:], "big")
    assert ours.shared_secret(peer.public_value)  # the honest point is fine
    for bad in ((x + p, y), (x, y + p)):
        with pytest.raises(KeyExchangeError) as info:
            ours.shared_secret(bad[0].to_bytes(66, "big") + bad[1].to_bytes(66, "big"))
        assert info.value.reason is KeyExchangeReason.BAD_PUBLIC_VALUE


def test_x448_rfc7748_vector() -> None:
    alice = bytes.fromhex(
        "9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf5"
        "74a9419744897391006382a6f127ab1d9ac2d8c0a598726b"
    )
    bob_public = bytes.fromhex(
        "3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b43027d8b972"
        "fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609"
    )
    ours = DH_GROUPS[DhId.CURVE448].generate(lambda n: alice)
    assert ours.public_value.hex() == (
        "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c22c5d9bb"
        "c836647241d953d40c5b12da88120d53177f80e532c41fa0"
    )
    assert ours.shared_secret(bob_public).hex() == (
        "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282bb60c0b56"
        "fd2464c335543936521c24403085d59a449a5037514a879d"
    )


@pytest.mark.parametrize("u", [0, 1, 2**448 - 2**224 - 2, 2**448 - 2**224 - 1])
def test_x448_small_order_points_give_zero_and_are_refused(u: int) -> None:
    """u = 0, 1, p-1 (and p, which is 0) have small order: the result would be all zero (RFC 7748 s6.2)."""
    with pytest.raises(KeyExchangeError) as info:
        DH_GROUPS[DhId.CURVE448].generate(os.urandom).shared_secret(u.to_bytes(56, "little"))
    assert info.value.reason is KeyExchangeReason.ZERO_SHARED_SECRET
