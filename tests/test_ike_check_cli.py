"""`twamp-nf ike-check` as an operator runs it: a subprocess against a private strongSwan charon."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.strongswan_peer import Charon, CharonPKI, Connection, free_udp_port, make_pki

pytestmark = pytest.mark.strongswan

PSK = bytes(range(100, 132))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CharonPKI:
    return make_pki(tmp_path_factory.mktemp("pki"), {"sw.test": "rsa", "cli.test": "ecdsa"})


@pytest.fixture(scope="module")
def charon(pki: CharonPKI) -> Iterator[Charon]:
    with Charon("cli") as instance:
        yield instance


def _psk_file(tmp_path: Path, secret: bytes) -> Path:
    path = tmp_path / "psk"
    path.write_text(f"0x{secret.hex()}\n")
    return path


def _load(
    charon: Charon, pki: CharonPKI, port: int, auth: str = "psk", proposals: str = "aes128-sha256-x25519"
) -> None:
    cert = pki.identity("sw.test") if auth == "pubkey" else None
    charon.load(
        [
            Connection(
                "cli", charon.port, port, "sw.test", "cli.test", proposals=proposals, auth=auth, cert=cert
            )
        ],
        psk=PSK,
        pki=pki,
    )


def _check(charon: Charon, local_port: int | None, *options: str) -> subprocess.CompletedProcess[str]:
    """ike-check as cli.test against charon's sw.test; `local_port` None: the route picks our address."""
    local = ["--local", f"127.0.0.1:{local_port}"] if local_port is not None else []
    return run_cli(
        [
            "ike-check",
            "--peer",
            f"127.0.0.1:{charon.port}",
            *local,
            "--local-id",
            "cli.test",
            "--remote-id",
            "sw.test",
            *options,
        ]
    )


def test_psk_success_prints_spis_algorithms_and_peer_never_a_key(
    charon: Charon, pki: CharonPKI, tmp_path: Path
) -> None:
    port = free_udp_port()
    _load(charon, pki, port)
    result = _check(
        charon,
        port,
        "--psk-file",
        str(_psk_file(tmp_path, PSK)),
        "--proposal",
        "aes128-sha256-x25519",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "established" and report["deleted"] is True
    assert report["algorithms"] == "aes128-sha256-prfsha256-x25519" and report["peer_id"] == "sw.test"
    spis = (bytes.fromhex(report["spi_i"]), bytes.fromhex(report["spi_r"]))
    logged = charon.keys_for(spis)  # charon saw exactly this SA ...
    charon.wait_gone(spis)  # ... and the Delete removed it
    everything = (result.stdout + result.stderr).lower()
    assert PSK.hex() not in everything
    assert (
        logged.secrets["Sk_d"].hex() not in everything and logged.ippm_secret_bytes().hex() not in everything
    )


def test_certificate_success_text_output(charon: Charon, pki: CharonPKI) -> None:
    port = free_udp_port()
    _load(charon, pki, port, auth="pubkey", proposals="aes256gcm16-prfsha384-ecp256")
    ident = pki.identity("cli.test")
    result = _check(
        charon,
        port,
        "--cert",
        str(ident.cert),
        "--key",
        str(ident.key),
        "--ca",
        str(pki.ca_cert),
        "--proposal",
        "aes256gcm16-prfsha384-ecp256",
    )
    assert result.returncode == 0, result.stderr
    assert "IKE SA established" in result.stdout and "aes256gcm16-prfsha384-ecp256" in result.stdout
    assert "peer id     sw.test" in result.stdout and "deleted     yes" in result.stdout


@pytest.mark.parametrize(
    ("secret", "proposal", "reason"),
    [
        (b"wrong secret", "aes128-sha256-x25519", "authentication failed"),
        (PSK, "aes256gcm16-prfsha512-ecp384", "no proposal chosen"),
    ],
)
def test_failure_names_the_reason(
    charon: Charon, pki: CharonPKI, tmp_path: Path, secret: bytes, proposal: str, reason: str
) -> None:
    port = free_udp_port()
    _load(charon, pki, port)
    result = _check(
        charon,
        port,
        "--psk-file",
        str(_psk_file(tmp_path, secret)),
        "--proposal",
        proposal,
    )
    assert result.returncode == 1
    assert reason in result.stderr and result.stdout == ""


def test_timeout_and_bad_arguments(tmp_path: Path) -> None:
    psk = _psk_file(tmp_path, PSK)
    silent = free_udp_port()
    result = run_cli(
        [
            "ike-check",
            "--peer",
            f"127.0.0.1:{silent}",
            "--local-id",
            "cli.test",
            "--remote-id",
            "x",
            "--psk-file",
            str(psk),
            "--timeout",
            "2",
            "--json",
        ]
    )
    assert result.returncode == 1 and json.loads(result.stdout)["reason"] == "timeout"
    result = run_cli(["ike-check", "--peer", "127.0.0.1:500", "--local-id", "cli.test", "--remote-id", "x"])
    assert result.returncode == 2 and "--psk-file" in result.stderr
    result = run_cli(
        [
            "ike-check",
            "--peer",
            "127.0.0.1:500",
            "--local-id",
            "a",
            "--remote-id",
            "b",
            "--psk-file",
            str(psk),
            "--proposal",
            "aes128-md5-modp768",
        ]
    )
    assert result.returncode == 2 and "md5" in result.stderr


def test_a_psk_file_that_is_not_utf8_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "psk"
    path.write_bytes(b"secret-\xfe\xfd-rest-of-the-secret")
    arguments = ["--peer", "127.0.0.1:500", "--local-id", "a", "--remote-id", "b", "--psk-file", str(path)]
    result = run_cli(["ike-check", *arguments])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"ike-check: {path}: not UTF-8 text\n"


def test_without_local_binds_the_route_source_address(charon: Charon, pki: CharonPKI, tmp_path: Path) -> None:
    _load(charon, pki, free_udp_port())  # charon as responder matches by address and IDs, not our port
    result = _check(
        charon,
        None,
        "--psk-file",
        str(_psk_file(tmp_path, PSK)),
        "--proposal",
        "aes128-sha256-x25519",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["local"].startswith("127.0.0.1:") and report["deleted"] is True
    # charon saw our NAT-D hashes match, so it did not think we were behind a NAT
    assert "remote host is behind NAT" not in charon.log_text()
