"""`twamp-nf demo`: the product's main job end to end on one machine.

Two function instances on loopback (each a `twamp-nf run` and a `twamp-nf netconf`), configured over NETCONF
only, set up an IKEv2 SA authenticated with throwaway certificates and run TWAMP in IKEv2-derived mode
(RFC 7717); the delay, jitter and loss B measured towards A come back as a NETCONF notification and are
printed. The steps live in nf.demo.scenario; `--local` runs a reflector and a client in this process
instead (no NETCONF, no IKE, a random in-memory key).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from typing import Any

from nf.commands.ping import format_table
from nf.demo.configuration import SECURITY_BITS
from nf.demo.local import run_local
from nf.demo.report import mode_value
from nf.demo.scenario import Demo, DemoFailure, Options, Outcome
from nf.net.control_connector import ControlClientError, SessionPlan
from nf.twamp.modes import SecurityMode

HELP = (
    "two instances on loopback, configured over NETCONF, measure delay, jitter and loss with "
    "IKEv2-derived TWAMP keys"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=100, help="test packets (default 100)")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between packets (default 0.01)")
    parser.add_argument(
        "--mode",
        choices=list(SECURITY_BITS),
        default="authenticated",
        help="TWAMP security mode, IKEv2-derived (default authenticated: Mode 130)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--keep-dir", action="store_true", help="keep the temporary directory (credentials, logs) afterwards"
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="reflector and client in this process with a random key: no NETCONF, no IKE",
    )


def _outcome_json(outcome: Outcome, elapsed: float) -> dict[str, Any]:
    summary = outcome.completion.summary
    assert summary is not None
    sa, connection = outcome.ike_sa, outcome.connection
    return {
        **summary.as_dict(),
        "mode": outcome.mode,
        "mode_value": mode_value(outcome.mode),
        "ike_sa": {
            "spi_i": sa.spi_i,
            "spi_r": sa.spi_r,
            "peer": sa.peer,
            "role": sa.role,
            "algorithms": sa.algorithms,
        },
        "key_source": {"spi_i": connection.spi_i, "spi_r": connection.spi_r, "ike_peer": connection.ike_peer},
        "sid": outcome.completion.sid,
        "instances": outcome.instances,
        "pids": outcome.pids,
        "directory": outcome.directory,
        "elapsed_s": round(elapsed, 3),
    }


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run_local(args: argparse.Namespace) -> int:
    mode = SecurityMode(args.mode)
    plan = SessionPlan(count=args.count, interval=args.interval, wait=1.0)
    try:
        address, summary = run_local(plan, mode)
    except ControlClientError as exc:
        print(f"twamp-nf demo: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**summary.as_dict(), "mode": mode.value}))
    else:
        print(f"twamp-nf demo --local: reflector and client on {address}, throwaway key")
        print(format_table(summary, mode, address))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.count < 1 or args.interval < 0:
        print("twamp-nf demo: --count must be at least 1 and --interval not negative", file=sys.stderr)
        return 2
    if args.local:
        return _run_local(args)
    started = time.monotonic()
    progress = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {line}", file=progress, flush=True)

    for noisy in ("ncclient", "paramiko"):  # teardown chatter (connection reset); failures are ours to report
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _interrupted)  # a stopped demo still stops its children
    demo = Demo(Options(args.count, args.interval, args.mode, args.keep_dir), say)
    try:
        outcome = demo.run()
    except DemoFailure as failure:
        print(f"twamp-nf demo: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("twamp-nf demo: interrupted; stopping the instances", file=sys.stderr)
        return 1
    finally:
        demo.close()
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps(_outcome_json(outcome, elapsed)))
        return 0
    summary = outcome.completion.summary
    assert summary is not None
    b, a = (outcome.instances[name] for name in ("gw-b", "gw-a"))
    target = f"gw-b {b['host']} -> gw-a {a['host']}:{a['twamp_port']}"
    print(
        format_table(summary, SecurityMode(args.mode), target).replace(
            f"mode {args.mode}", f"mode {args.mode} ikev2-derived (Mode {mode_value(outcome.mode)})", 1
        )
    )
    kept = f", files kept in {outcome.directory}" if args.keep_dir else ""
    print(f"twamp-nf demo: all processes stopped{kept}; took {elapsed:.1f} s")
    return 0
