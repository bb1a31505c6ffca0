"""`twamp-nf demo` as a user runs it: a real reflector and client on loopback in one process."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_demo_measures_an_authenticated_session() -> None:
    result = run_cli(["demo", "--count", "30", "--interval", "0.005", "--json"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "authenticated"
    assert report["sent"] == 30
    assert report["received"] + report["lost"] == 30
    assert report["received"] > 0
    rtt = report["rtt_ms"]
    assert 0 <= rtt["min"] <= rtt["median"] <= rtt["max"]


def test_demo_table_names_delay_jitter_and_loss() -> None:
    result = run_cli(["demo", "--count", "10", "--interval", "0.005"])
    assert result.returncode == 0, result.stderr
    for word in ("rtt ms", "ipdv ms", "lost", "mode authenticated"):
        assert word in result.stdout


def test_demo_rejects_a_bad_count() -> None:
    result = run_cli(["demo", "--count", "0"])
    assert result.returncode == 2
    assert "--count" in result.stderr
