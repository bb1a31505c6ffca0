"""`twamp-nf ping` argument handling and its human report (no network needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from nf.commands import ping
from nf.net.control_connector import ControlClientError, accept_text
from nf.twamp.modes import Accept, SecurityMode
from nf.twamp.results import Reply, SessionRecords, summarize


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ping.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_config_from_arguments(pfs_keys: Path) -> None:
    args = parse(
        "[::1]:8620",
        *("--mode", "encrypted", "--key-id", "bob", "--keys", str(pfs_keys)),
        *("--count", "7", "--interval", "0.5", "--padding", "9", "--dscp", "10", "--sessions", "2"),
        *("--reflect-octets", "2", "--symmetric", "--individual"),
    )
    config = ping.config_from_args(args)
    assert (config.host, config.port, config.mode) == ("::1", 8620, SecurityMode.ENCRYPTED)
    assert config.key_id == "bob" and config.keys is not None
    assert (config.sessions, config.individual) == (2, True)
    plan = config.plan
    assert (plan.count, plan.interval, plan.padding, plan.dscp, plan.reflect_octets, plan.symmetric) == (
        7,
        0.5,
        9,
        10,
        2,
        True,
    )
    assert "fedcba9876543210" not in repr(config)  # the secret never shows in a repr


def test_default_port_is_862() -> None:
    assert ping.config_from_args(parse("127.0.0.1")).port == 862


def test_unknown_key_id_is_a_usage_error(pfs_keys: Path) -> None:
    args = parse("127.0.0.1:1", "--mode", "authenticated", "--key-id", "mallory", "--keys", str(pfs_keys))
    with pytest.raises(ValueError, match="'mallory' is not in"):
        ping.config_from_args(args)


@pytest.mark.parametrize("argv", [["h", "--count", "0"], ["h", "--dscp", "64"], ["h", "--mode", "fast"]])
def test_bad_values_are_rejected_by_the_parser(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_table_with_and_without_samples() -> None:
    empty = ping.format_table(summarize([SessionRecords(3, [])]), SecurityMode.MIXED, "h:1")
    assert "lost 3 (100.00%)" in empty
    assert "rtt ms" in empty and "-" in empty
    reply = Reply(0, 10.0, 10.001, 10.0011, 10.002, True, True)
    full = ping.format_table(summarize([SessionRecords(1, [reply])]), SecurityMode.MIXED, "h:1")
    assert "received 1" in full
    assert "clocks synchronized: yes" in full
    assert "1.900" in full  # rtt = 2 ms - 0.1 ms residence


def test_accept_values_have_names() -> None:
    assert accept_text(Accept.TEMPORARY_RESOURCE_LIMITATION) == "Accept=5 (temporary resource limitation)"
    assert accept_text(Accept.UNKNOWN_SA) == "Accept=6 (no IKEv2 SA for the Key ID)"
    assert accept_text(None) == "no Accept value"
    assert str(ControlClientError("x", accept=Accept.FAILURE)) == "x"
