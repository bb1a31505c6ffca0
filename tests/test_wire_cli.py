"""`twamp-nf ping` against `twamp-nf reflect`, both as real processes on loopback (IPv4 and IPv6).

Each combination of security mode and RFC 6038 feature runs a full control session and test session over
real sockets; the reflector's counters (read through --stats-file) must agree with what the client saw.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Reflector, run_cli

MODES = ["unauthenticated", "authenticated", "encrypted", "mixed"]
FEATURES = {
    "plain": [],
    "reflect-octets": ["--reflect-octets", "4", "--padding", "32"],
    "symmetric": ["--symmetric", "--padding", "16"],
}
COUNT = 12


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.pfs"
    path.write_text("alice 00112233445566778899aabbccddeeff\n")
    return path


@pytest.fixture(scope="module")
def shared_reflector(tmp_path_factory: pytest.TempPathFactory, keys_file: Path) -> Iterator[Reflector]:
    stats = tmp_path_factory.mktemp("stats") / "stats.json"
    reflector = Reflector(["--keys", str(keys_file)], stats)
    try:
        yield reflector
    finally:
        reflector.stop()


MODE_BITS = {"unauthenticated": 1, "authenticated": 2, "encrypted": 4, "mixed": 8}
FEATURE_BITS = {"plain": 0, "reflect-octets": 32, "symmetric": 64}


def ping_logged(target: str, *args: str) -> tuple[dict[str, Any], str]:
    """The JSON report and the -v log (which names the negotiated Mode word and each session)."""
    argv = ["ping", target, "--json", "--count", str(COUNT), "--interval", "0.005", *args]
    result = run_cli(argv)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report, result.stderr


def ping(target: str, *args: str) -> dict[str, Any]:
    return ping_logged(target, *args)[0]


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("mode", MODES)
def test_ping_each_mode_and_feature(
    shared_reflector: Reflector, keys_file: Path, mode: str, feature: str
) -> None:
    before = shared_reflector.stats()
    report, log = ping_logged(
        shared_reflector.address,
        "--mode",
        mode,
        "--key-id",
        "alice",
        "--keys",
        str(keys_file),
        "-v",
        *FEATURES[feature],
    )
    after = shared_reflector.stats()
    assert report["mode"] == mode
    assert f": mode {MODE_BITS[mode] | FEATURE_BITS[feature]:#x} ({mode})" in log, log
    if feature == "reflect-octets":
        assert "padding 32, reflect octets 4\n" in log, log  # granted in Accept-Session
    if feature == "symmetric":
        assert "padding 16, reflect octets 0, symmetrical size" in log, log
    assert report["sent"] == COUNT
    assert report["received"] + report["lost"] == COUNT
    assert report["received"] >= COUNT - 2  # loopback; tolerate a rare drop on a loaded machine
    assert report["duplicates"] == 0
    for key in ("rtt_ms", "forward_ms", "backward_ms"):
        assert set(report[key]) == {"min", "median", "p95", "p99", "max", "mean"}
    assert set(report["ipdv_ms"]) == {"median", "p95", "max"}
    assert report["rtt_ms"]["min"] >= 0
    assert after["modes"].get(mode, 0) == before["modes"].get(mode, 0) + 1
    assert after["reflector"]["reflected"] - before["reflector"]["reflected"] >= report["received"]
    assert after["sessions"]["stopped"] == before["sessions"].get("stopped", 0) + 1
    assert after["bad_input"] == before["bad_input"]


def test_table_output(shared_reflector: Reflector) -> None:
    result = run_cli(["ping", shared_reflector.address, "--count", "5", "--interval", "0.005"])
    assert result.returncode == 0, result.stderr
    assert "sent 5" in result.stdout
    assert "rtt ms" in result.stdout


def test_ipv6(reflector_factory: Any) -> None:
    if not _has_ipv6_loopback():
        pytest.fail("IPv6 loopback (::1) is required by the wire tests")
    reflector = reflector_factory(listen="[::1]:0")
    assert reflector.address.startswith("[::1]:")
    report = ping(reflector.address)
    assert report["received"] >= COUNT - 2
    stats = reflector.final_stats()
    assert stats["sessions"]["accepted"] == 1


def test_busy_polling_realtime_reflector(reflector_factory: Any) -> None:
    """--busy-poll and --realtime-priority tune the port threads; without CAP_SYS_NICE the priority is
    refused with a log line, and either way every packet comes back."""
    reflector = reflector_factory("--busy-poll", "200", "--realtime-priority", "5")
    report = ping(reflector.address, "--count", "40", "--interval", "0.001")
    assert report["received"] == 40 and report["lost"] == 0
    assert reflector.final_stats()["sessions"]["accepted"] == 1


@pytest.mark.parametrize("batch", ["1", "64"])
def test_batch_sizes_reach_the_port(reflector_factory: Any, batch: str) -> None:
    """--receive-batch/--send-batch: with 1 every datagram costs one receive and one send call; with 64
    a call may carry several, never more calls than datagrams."""
    reflector = reflector_factory("--receive-batch", batch, "--send-batch", batch)
    report = ping(reflector.address, "--count", "40", "--interval", "0.0005")
    assert report["received"] == 40
    stats = reflector.final_stats()["reflector"]
    assert stats["reflected"] == 40
    if batch == "1":
        assert stats["receive_calls"] == stats["send_calls"] == 40
    else:
        assert 1 <= stats["receive_calls"] <= 40 and 1 <= stats["send_calls"] <= 40


def test_several_sessions_in_parallel(shared_reflector: Reflector) -> None:
    report = ping(shared_reflector.address, "--sessions", "3")
    assert report["sent"] == 3 * COUNT
    assert report["received"] >= 3 * COUNT - 3


def test_usage_errors_exit_2_without_touching_the_network() -> None:
    result = run_cli(["ping", "127.0.0.1:9", "--mode", "authenticated"])
    assert result.returncode == 2
    assert "needs --key-id and --keys" in result.stderr
    result = run_cli(["ping", "[::1]9"])
    assert result.returncode == 2
    assert "expected ':PORT'" in result.stderr


def test_connection_refused_is_reported_in_words() -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = run_cli(["ping", f"127.0.0.1:{port}", "--timeout", "5"])
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
