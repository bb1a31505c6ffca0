"""`twamp-nf demo` as a user runs it: four real child processes (two runtimes, two NETCONF servers) on
loopback, configured over NETCONF by ncclient, an IKE SA with certificates, TWAMP keyed by it (RFC 7717).

Each run is a real subprocess; the tests check what it printed, that every child it started is gone (by
pid) and that its temporary directory is removed, or kept with private permissions when asked.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from nf.demo.configuration import TWAMP_NS
from nf.demo.credentials import create_credentials
from nf.demo.report import summary_from_results
from nf.ike.certificates import TrustAnchors, check_peer_certificate, load_certificates
from nf.ike.errors import AuthenticationError
from nf.ike.identities import Identity
from nf.runtime.events import results_json
from nf.twamp.results import DelayStats, Summary, VariationStats
from nf_netconf.users import load_users
from tests.conftest import CLI, ROOT, run_cli

pytestmark = pytest.mark.timeout(300)  # four Python children on a loaded machine: bounded, generously
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _alive(pid: int) -> bool:
    """True if `pid` is still one of the demo's children (a recycled pid running something else is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"nf.cli" in cmdline and (b"run" in cmdline or b"netconf" in cmdline)


def _timed(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_cli(args, timeout=240)
    elapsed = time.monotonic() - started
    print(f"twamp-nf {' '.join(args)}: {elapsed:.1f} s")  # a figure, not an assertion
    return result, elapsed


def test_demo_measures_over_netconf_with_ikev2_derived_keys() -> None:
    result, _ = _timed(["demo", "--count", "20", "--json"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"].split() == ["authenticated", "ikev2-derived"]
    assert report["mode_value"] == 130
    sa = report["ike_sa"]
    assert HEX16.match(sa["spi_i"]) and HEX16.match(sa["spi_r"])
    assert sa["role"] == "initiator" and sa["peer"] == "gw-a"
    assert sa["algorithms"]["dh-group"] == "ecp-256"
    assert report["key_source"] == {"spi_i": sa["spi_i"], "spi_r": sa["spi_r"], "ike_peer": "gw-a"}
    assert (report["sent"], report["received"], report["lost"], report["loss_ratio"]) == (20, 20, 0, 0.0)
    rtt = report["rtt_ms"]
    assert 0 < rtt["min"] <= rtt["median"] <= rtt["max"]
    assert rtt["mean"] > 0 and report["ipdv_ms"] is not None
    assert len(report["sid"]) == 32
    assert len(report["pids"]) == 4
    assert not any(_alive(pid) for pid in report["pids"])
    assert not os.path.exists(report["directory"])
    # the progress lines went to stderr, in order
    progress = result.stderr
    assert (
        progress.index("IKE SA up: SPIi " + sa["spi_i"])
        < progress.index("Mode 130")
        < progress.index("completed, SID")
    )


def test_demo_table_in_encrypted_mode_and_kept_directory() -> None:
    result, _ = _timed(["demo", "--count", "5", "--mode", "encrypted", "--keep-dir"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    kept = re.search(r"files kept in (\S+)", out)
    assert kept is not None, out
    directory = Path(kept.group(1).rstrip(";"))
    try:
        for words in (
            "IKE SA up: SPIi",
            "Mode 132 (encrypted ikev2-derived)",
            "rtt ms",
            "forward ms",
            "backward ms",
            "ipdv ms",
            "sent 5  received 5  lost 0",
            "clocks synchronized",
            "all processes stopped",
        ):
            assert words in out, words
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for key in directory.glob("*.key.pem"):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            body = key.read_text().splitlines()[1]
            assert body not in out and body not in result.stderr  # never print a key
        assert "PRIVATE KEY" not in out + result.stderr
        pids = [int(p) for p in re.findall(r"pid (\d+)", out)]
        assert len(pids) == 4 and not any(_alive(pid) for pid in pids)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_failing_step_is_named_with_the_stderr_and_everything_is_cleaned_up(tmp_path: Path) -> None:
    # a temp dir so deep that the runtimes' Unix socket path cannot be bound: the runtime exits at start
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    result = subprocess.run(
        [*CLI, "demo", "--count", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ, TMPDIR=str(deep)),
        check=False,
    )
    assert result.returncode == 1
    assert "step 'start the runtimes' failed" in result.stderr
    assert "runtime gw-a exited with status 1" in result.stderr
    assert "last lines of runtime gw-a's stderr" in result.stderr
    assert list(deep.iterdir()) == []  # the demo's directory is gone
    assert _children_in(deep) == []  # and no child it started (their socket paths are in it) runs


def test_a_terminated_demo_stops_its_instances_and_removes_its_directory() -> None:
    demo = subprocess.Popen(
        [*CLI, "demo", "--count", "100000", "--interval", "0.01"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:  # the demo flushes each progress line
            lines.append(line)
            if "Mode 130" in line:  # the test session is running now
                break
        out = "".join(lines)
        assert "Mode 130" in out, out + (demo.stderr.read() if demo.stderr else "")
        demo.send_signal(signal.SIGTERM)
        _, err = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 1
    assert "interrupted; stopping the instances" in err
    pids = [int(p) for p in re.findall(r"pid (\d+)", out)]
    assert len(pids) == 4 and not any(_alive(pid) for pid in pids)
    directory = re.search(r"certificates\) in (\S+)", out)
    assert directory is not None and not os.path.exists(directory.group(1))


def _children_in(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(directory).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_local_demo_measures_an_authenticated_session() -> None:
    result = run_cli(["demo", "--local", "--count", "30", "--interval", "0.005", "--json"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "authenticated"
    assert report["sent"] == 30 and report["received"] + report["lost"] == 30 and report["received"] > 0
    rtt = report["rtt_ms"]
    assert 0 <= rtt["min"] <= rtt["median"] <= rtt["max"]


def test_demo_rejects_a_bad_count() -> None:
    result = run_cli(["demo", "--count", "0"])
    assert result.returncode == 2
    assert "--count" in result.stderr


def _xml(tag: str, value: Any) -> etree._Element:
    """RFC 7951 JSON (as nf.runtime.events produces it) -> the XML a NETCONF notification carries."""
    element = etree.Element(f"{{{TWAMP_NS}}}{tag}")
    if isinstance(value, dict):
        element.extend(_xml(k, v) for k, v in value.items())
    else:
        element.text = str(value).lower() if isinstance(value, bool) else str(value)
    return element


@pytest.mark.parametrize(
    "summary",
    [
        Summary(
            20,
            19,
            1,
            0.05,
            0,
            2,
            DelayStats(0.012, 0.05, 0.2, 0.3, 0.35, 0.07),
            VariationStats(0.004, 0.1, 0.2),
            DelayStats(0.006, 0.02, 0.1, 0.2, 0.25, 0.03),
            DelayStats(0.006, 0.03, 0.1, 0.1, 0.1, 0.04),
            True,
        ),
        Summary(5, 0, 5, 1.0, 0, 0, None, None, None, None, False),
    ],
)
def test_results_read_back_from_the_notification_are_the_runtime_summary(summary: Summary) -> None:
    assert summary_from_results(_xml("results", results_json(summary))) == summary


@pytest.mark.strongswan
def test_credentials_chain_to_the_demo_ca_and_stay_private(tmp_path: Path) -> None:
    credentials = create_credentials(tmp_path, {"gw-a": "gw-a.example", "gw-b": "gw-b.example"})
    trust = TrustAnchors.from_files(str(credentials.ca_certificate))
    now = datetime.datetime.now(datetime.UTC)
    for name, files in credentials.instances.items():
        certs = load_certificates(str(files.certificate))
        check_peer_certificate(trust, certs, Identity.parse(files.fqdn), now=now)
        other = "gw-b.example" if name == "gw-a" else "gw-a.example"
        with pytest.raises(AuthenticationError):
            check_peer_certificate(trust, certs, Identity.parse(other), now=now)
        # an independent verifier agrees: strongSwan's pki builds the chain up to the demo CA
        verified = subprocess.run(
            ["pki", "--verify", "--in", str(files.certificate), "--cacert", str(credentials.ca_certificate)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert 'using trusted ca certificate "O=twamp-nf demo, CN=twamp-nf demo CA"' in verified.stderr
        assert "certificate trusted, lifetimes valid" in verified.stdout
        for secret in (files.private_key, files.host_key):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    users, _ = load_users(credentials.users_file.read_text())
    login = credentials.login
    password = login.ncclient_arguments()["password"]
    assert users[login.username].check_password(password)
    assert password not in repr(login) and password not in str(login)
    assert password not in credentials.users_file.read_text()
