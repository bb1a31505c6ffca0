"""The private-charon harness itself: two charons set up childless SAs and their logged keys agree.

This is what every interop test relies on: if SK_d extraction picked the wrong dump (wrong SA, wrong rekey
generation), both logs would disagree or a rekey would appear to keep its key.
"""

from __future__ import annotations

import hmac
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.strongswan_peer import Charon, CharonPKI, Connection, make_pki, parse_key_log

pytestmark = pytest.mark.strongswan

PSK = bytes(range(32))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CharonPKI:
    return make_pki(tmp_path_factory.mktemp("pki"), {"a.test": "ecdsa", "b.test": "rsa", "e.test": "ed25519"})


@pytest.fixture(scope="module")
def pair(pki: CharonPKI) -> Iterator[tuple[Charon, Charon]]:
    with Charon("a") as a, Charon("b") as b:
        a.load(
            [
                Connection("psk", a.port, b.port, "a.test", "b.test", proposals="aes128-sha256-modp2048"),
                Connection("ec", a.port, b.port, "a.test", "b.test", proposals="aes256gcm16-prfsha384-ecp256",
                           auth="pubkey", cert=pki.identity("a.test")),
                Connection("ed", a.port, b.port, "e.test", "b.test", proposals="aes128gcm16-prfsha512-x25519",
                           auth="pubkey", cert=pki.identity("e.test")),
            ],
            psk=PSK,
            pki=pki,
        )
        b.load(
            [
                Connection("psk", b.port, a.port, "b.test", "a.test", proposals="aes128-sha256-modp2048"),
                Connection("ec", b.port, a.port, "b.test", "a.test", proposals="aes256gcm16-prfsha384-ecp256",
                           auth="pubkey", cert=pki.identity("b.test")),
                Connection("ed", b.port, a.port, "b.test", "e.test", proposals="aes128gcm16-prfsha512-x25519",
                           auth="pubkey", cert=pki.identity("b.test")),
            ],
            psk=PSK,
            pki=pki,
        )
        yield a, b


@pytest.mark.parametrize(
    ("conn", "prf_size", "dh"),
    [("psk", 32, "MODP_2048"), ("ec", 48, "ECP_256"), ("ed", 64, "CURVE_25519")],
)
def test_charon_pair_logs_identical_sk_d(
    pair: tuple[Charon, Charon], conn: str, prf_size: int, dh: str
) -> None:
    a, b = pair
    out = a.initiate(conn)
    assert "initiate completed successfully" in out
    sa = next(s for s in a.list_sas() if s.conn == conn)
    assert sa.state == "ESTABLISHED" and sa.initiator and sa.dh == dh
    spis = (sa.spi_i, sa.spi_r)
    b.wait_sa(spis=spis)
    keys_a, keys_b = a.keys_for(spis), b.keys_for(spis)
    assert len(keys_a.secrets["Sk_d"]) == prf_size
    assert hmac.compare_digest(keys_a.ippm_secret_bytes(), keys_b.ippm_secret_bytes())
    # AEAD suites derive no SK_a* (RFC 5282); CBC ones do
    assert ("Sk_ai" in keys_a.secrets) == (conn == "psk")

    a.rekey(sa.uniqueid)
    a.wait_gone(spis)
    new = next(s for s in a.list_sas() if s.conn == conn)
    new_spis = (new.spi_i, new.spi_r)
    assert new_spis != spis and new.state == "ESTABLISHED"
    b.wait_sa(spis=new_spis)
    b.wait_gone(spis)
    rekeyed_a, rekeyed_b = a.keys_for(new_spis), b.keys_for(new_spis)
    assert hmac.compare_digest(rekeyed_a.ippm_secret_bytes(), rekeyed_b.ippm_secret_bytes())
    assert not hmac.compare_digest(rekeyed_a.ippm_secret_bytes(), keys_a.ippm_secret_bytes())

    a.terminate(new.uniqueid)
    b.wait_gone(new_spis)
    assert not [s for s in a.list_sas() if s.conn == conn]


def test_charon_leaves_no_process_files_or_kernel_state(pki: CharonPKI) -> None:
    before_xfrm, before_rules = _ip("xfrm", "state"), _ip("rule")
    with Charon("x") as x:
        directory = x.dir
        assert x.running
        x.load([Connection("psk", x.port, x.port + 1, "x.test", "y.test")], psk=PSK, pki=pki)
    assert not x.running
    assert not Path(directory).exists()
    assert not Path("/run/charon.pid").exists() or Path("/run/charon.pid").read_text().strip() == ""
    assert _ip("xfrm", "state") == before_xfrm
    assert _ip("rule") == before_rules


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False).stdout


def test_key_log_parser_attributes_rekey_to_new_sa() -> None:
    """charon's rekey initiator logs the new keys under the old SA's prefix, then names the new id."""
    log = "\n".join(
        [
            "10:00:00 05[IKE] <c|3> natd_chunk => 22 bytes @ 0x1",
            "10:00:00 05[IKE] <c|3>    0: 01 01 01 01 01 01 01 01 02 02 02 02 02 02 02 02  ................",
            "10:00:00 05[IKE] <c|3>   16: 7F 00 00 01 3A 98                                ....:.",
            "10:00:00 05[IKE] <c|3> Sk_d secret => 32 bytes @ 0x2",
            "10:00:00 05[IKE] <c|3>    0: " + "AA " * 16 + " ................",
            "10:00:00 05[IKE] <c|3>   16: " + "AA " * 16 + " ................",
            "10:00:01 12[IKE] <c|3> Sk_d secret => 32 bytes @ 0x3",
            "10:00:01 12[IKE] <c|3>    0: " + "BB " * 16 + " ................",
            "10:00:01 12[IKE] <c|3>   16: " + "BB " * 16 + " ................",
            "10:00:01 12[IKE] <c|3> IKE_SA c[4] rekeyed between 127.0.0.1[a]...127.0.0.1[b]",
        ]
    )
    first, second = parse_key_log(log)
    assert (first.uid, first.spis, first.secrets["Sk_d"]) == (3, (b"\1" * 8, b"\2" * 8), b"\xaa" * 32)
    assert (second.uid, second.spis, second.secrets["Sk_d"]) == (4, None, b"\xbb" * 32)


def test_a_taken_port_is_detected_and_another_one_used() -> None:
    """charon binds 0.0.0.0:port; when someone else got there first the harness must not run it deaf."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("0.0.0.0", 0))
        taken = squatter.getsockname()[1]
        with Charon("t", port=taken) as charon:
            assert charon.port != taken and charon.running
            assert "unable to bind socket" not in charon.log_text()
