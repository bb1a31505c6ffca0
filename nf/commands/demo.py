"""A self-contained TWAMP run: a server and a client on loopback, authenticated mode, a throwaway key.

The two ends are built by `start_server` and `run_client` from a shared KeySource; a later version swaps the
in-memory key chain for IKEv2-derived secrets (RFC 7717) and the in-process ends for two NETCONF-configured
instances without touching the measurement and report code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass

from nf.commands.ping import format_table
from nf.net.control_connector import ControlClientError, MeasurementConfig, SessionPlan, measure
from nf.net.control_listener import ControlListener
from nf.net.hostport import parse_hostport
from nf.net.limits import Limits
from nf.net.reflector import Reflector, ReflectorConfig
from nf.twamp.control_server import ServerConfig
from nf.twamp.keysource import KeyChain, KeySource
from nf.twamp.modes import Modes, SecurityMode
from nf.twamp.results import Summary, summarize

HELP = "run a TWAMP server and client on loopback and print the delay, jitter and loss they measure"
DEMO_KEY_ID = "twamp-nf-demo"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What both ends share; the IKEv2 variant carries an RFC 7717 key source and SPIi|SPIr instead."""

    key_id: str
    keys: KeySource


def throwaway_credentials() -> Credentials:
    """A fresh random secret that lives only in this process's memory."""
    return Credentials(DEMO_KEY_ID, KeyChain({DEMO_KEY_ID: os.urandom(32)}))


async def start_server(credentials: Credentials, host: str = "127.0.0.1") -> tuple[ControlListener, str]:
    config = ServerConfig(
        modes=Modes.UNAUTHENTICATED | Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED,
        key_source=credentials.keys,
    )
    listener = ControlListener(config, Limits(), Reflector(ReflectorConfig()))
    address = (await listener.listen(host, 0))[0]
    return listener, address


async def run_client(
    credentials: Credentials, address: str, plan: SessionPlan, mode: SecurityMode
) -> Summary:
    host, port = parse_hostport(address)
    config = MeasurementConfig(
        host=host, port=port, mode=mode, key_id=credentials.key_id, keys=credentials.keys, plan=plan
    )
    return summarize(await measure(config))


async def demo(plan: SessionPlan, mode: SecurityMode) -> tuple[str, Summary]:
    credentials = throwaway_credentials()
    listener, address = await start_server(credentials)
    try:
        return address, await run_client(credentials, address, plan, mode)
    finally:
        await listener.close()
        listener.reflector.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=100, help="test packets (default 100)")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between packets (default 0.01)")
    parser.add_argument(
        "--mode",
        choices=[m.value for m in SecurityMode],
        default=SecurityMode.AUTHENTICATED.value,
        help="security mode (default authenticated)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    if args.count < 1 or args.interval < 0:
        print("twamp-nf demo: --count must be at least 1 and --interval not negative", file=sys.stderr)
        return 2
    mode = SecurityMode(args.mode)
    plan = SessionPlan(count=args.count, interval=args.interval, wait=1.0)
    try:
        address, summary = asyncio.run(demo(plan, mode))
    except ControlClientError as exc:
        print(f"twamp-nf demo: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**summary.as_dict(), "mode": mode.value}))
    else:
        print(f"twamp-nf demo: reflector and client on {address}, throwaway key, {args.count} packets")
        print(format_table(summary, mode, address))
    return 0
