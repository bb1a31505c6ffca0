"""Measure delay, jitter and loss to a TWAMP server (RFC 5357), like perfSONAR's twping."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from nf.net.control_connector import ControlClientError, MeasurementConfig, SessionPlan, measure
from nf.net.hostport import parse_hostport
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import SecurityMode
from nf.twamp.results import DelayStats, Summary, summarize

HELP = "measure round-trip delay, one-way delay, jitter and loss to a TWAMP server"
TWAMP_PORT = 862


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="HOST:PORT", help="TWAMP server; port 862 when omitted; [::1]:862 for IPv6"
    )
    parser.add_argument(
        "--mode",
        choices=[m.value for m in SecurityMode],
        default=SecurityMode.UNAUTHENTICATED.value,
        help="security mode of the control connection and test packets (default: unauthenticated)",
    )
    parser.add_argument("--key-id", help="key-id (identity) for authenticated, encrypted and mixed modes")
    parser.add_argument("--keys", metavar="FILE", help="perfSONAR pfs key file: 'key-id hex-secret' lines")
    parser.add_argument(
        "--count", type=_positive_int, default=10, help="test packets per session (default 10)"
    )
    parser.add_argument("--interval", type=_non_negative_float, default=0.1, help="seconds between packets")
    parser.add_argument("--padding", type=_non_negative_int, default=0, help="octets of padding per packet")
    parser.add_argument(
        "--dscp", type=int, choices=range(64), default=0, metavar="0-63", help="DSCP of test packets"
    )
    parser.add_argument(
        "--reflect-octets",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="ask the reflector to return the first N padding octets (RFC 6038)",
    )
    parser.add_argument("--symmetric", action="store_true", help="symmetrical-size sender packets (RFC 6038)")
    parser.add_argument("--sessions", type=_positive_int, default=1, help="test sessions in parallel")
    parser.add_argument(
        "--individual",
        action="store_true",
        help="start and stop each session on its own with Start-N/Stop-N-Sessions (RFC 5938)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for any control reply")
    parser.add_argument(
        "--wait",
        type=_non_negative_float,
        default=2.0,
        help="seconds to wait for late replies after the last packet (also the session Timeout)",
    )
    parser.add_argument(
        "--max-count-exponent",
        type=int,
        default=20,
        metavar="N",
        help="refuse a server whose PBKDF2 Count exceeds 2^N (default 20)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the control exchange to stderr")


def config_from_args(args: argparse.Namespace) -> MeasurementConfig:
    """Everything ping needs, checked before any socket opens (so usage errors never reach the wire)."""
    host, port = parse_hostport(args.target, TWAMP_PORT)
    mode = SecurityMode(args.mode)
    keys = None
    if mode is not SecurityMode.UNAUTHENTICATED:
        if not args.key_id or not args.keys:
            raise ValueError(f"mode {mode.value} needs --key-id and --keys")
        keys = KeyChain.from_pfs_file(args.keys)
        if keys.secret_for(args.key_id.encode("utf-8")) is None:
            raise ValueError(f"key-id {args.key_id!r} is not in {args.keys}")
    plan = SessionPlan(
        count=args.count,
        interval=args.interval,
        padding=args.padding,
        dscp=args.dscp,
        reflect_octets=args.reflect_octets,
        symmetric=args.symmetric,
        wait=args.wait,
    )
    return MeasurementConfig(
        host=host,
        port=port,
        mode=mode,
        key_id=args.key_id if keys is not None else None,
        keys=keys,
        sessions=args.sessions,
        individual=args.individual,
        plan=plan,
        timeout=args.timeout,
        max_count_exponent=args.max_count_exponent,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(summary: Summary, mode: SecurityMode, target: str) -> str:
    """The human report: counts first, then one row per delay figure."""
    lines = [
        f"TWAMP {target}  mode {mode.value}",
        f"sent {summary.sent}  received {summary.received}  lost {summary.lost} "
        f"({summary.loss_ratio * 100:.2f}%)  duplicates {summary.duplicates}  reordered {summary.reordered}",
        f"{'':<14}{'min':>10}{'median':>10}{'p95':>10}{'p99':>10}{'max':>10}{'mean':>10}",
    ]
    rows: list[tuple[str, DelayStats | None]] = [
        ("rtt ms", summary.rtt_ms),
        ("forward ms", summary.forward_ms),
        ("backward ms", summary.backward_ms),
    ]
    for label, stats in rows:
        if stats is None:
            lines.append(f"{label:<14}{'-':>10}{'-':>10}{'-':>10}{'-':>10}{'-':>10}{'-':>10}")
        else:
            cells = (stats.min, stats.median, stats.p95, stats.p99, stats.max, stats.mean)
            lines.append(f"{label:<14}" + "".join(f"{_fmt(c):>10}" for c in cells))
    ipdv = summary.ipdv_ms
    median, p95, worst = (ipdv.median, ipdv.p95, ipdv.max) if ipdv else (None, None, None)
    lines.append(f"{'ipdv ms':<14}{'':>10}{_fmt(median):>10}{_fmt(p95):>10}{'':>10}{_fmt(worst):>10}")
    sync = "yes" if summary.clock_synchronized else "no (one-way delays include the clock offset)"
    lines.append(f"clocks synchronized: {sync}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"twamp-nf ping: {exc}", file=sys.stderr)
        return 2
    try:
        sessions = asyncio.run(measure(config))
    except ControlClientError as exc:
        print(f"twamp-nf ping: {exc}", file=sys.stderr)
        return 1
    summary = summarize(sessions)
    if args.json:
        print(json.dumps({**summary.as_dict(), "mode": config.mode.value}))
    else:
        print(format_table(summary, config.mode, args.target))
    return 0
