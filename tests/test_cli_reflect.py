"""`twamp-nf reflect` as an operator uses it: arguments, startup errors, signals and the stats file."""

from __future__ import annotations

import argparse
import re
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from nf.commands.reflect import parse_modes, parse_port_range
from nf.twamp.modes import Modes
from tests.conftest import run_cli


def test_parse_modes() -> None:
    assert (
        parse_modes("unauthenticated,individual") == Modes.UNAUTHENTICATED | Modes.INDIVIDUAL_SESSION_CONTROL
    )
    assert parse_modes(" encrypted , mixed ") == Modes.ENCRYPTED | Modes.MIXED
    with pytest.raises(argparse.ArgumentTypeError, match="unknown mode 'fast'"):
        parse_modes("fast")


@pytest.mark.parametrize(("text", "expected"), [("20000-20010", (20000, 20010)), ("5000", (5000, 5000))])
def test_parse_port_range(text: str, expected: tuple[int, int]) -> None:
    assert parse_port_range(text) == expected


@pytest.mark.parametrize("text", ["10-5", "0-10", "1-70000", "a-b", ""])
def test_parse_port_range_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_port_range(text)


def test_protected_modes_need_keys() -> None:
    result = run_cli(["reflect", "--listen", "127.0.0.1:0", "--modes", "authenticated"])
    assert result.returncode == 2
    assert "need --keys" in result.stderr


def test_missing_key_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(["reflect", "--listen", "127.0.0.1:0", "--keys", str(tmp_path / "absent.pfs")])
    assert result.returncode == 2
    assert "absent.pfs" in result.stderr


def test_busy_port_fails_with_a_reason() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["reflect", "--listen", f"127.0.0.1:{port}"], timeout=60)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_writes_stats(reflector_factory: Any, sig: signal.Signals) -> None:
    reflector = reflector_factory()
    assert reflector.stats()["dump_seq"] == 1  # SIGUSR1 dump while running
    assert reflector.stop(sig) == 0
    final = reflector._read()
    assert final is not None and final["dump_seq"] == 2
    assert final["active_connections"] == 0


def test_listens_on_several_addresses(reflector_factory: Any) -> None:
    reflector = reflector_factory("--listen", "[::1]:0")
    v6 = reflector.out.wait_for(re.compile(r"listening on (\[::1\]:\d+)")).group(1)
    for address in (reflector.address, v6):
        result = run_cli(["ping", address, "--count", "2", "--interval", "0.01"])
        assert result.returncode == 0, result.stderr
    assert reflector.final_stats()["connections"]["accepted"] == 2
