"""A TWAMP server (RFC 5357 Server + Session-Reflector), like perfSONAR's twampd.

Logs go to stderr. The first stdout line is 'twamp-nf reflect: listening on ADDR' per bound address, so a
script (or a test) started with port 0 learns the port. Counters (connections, bad input by reason, sessions,
reflected and dropped test packets) are written as JSON to --stats-file on SIGUSR1 and on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from nf.net.control_listener import ControlListener
from nf.net.hostport import parse_hostport
from nf.net.limits import Limits
from nf.net.reflector import Reflector, ReflectorConfig
from nf.twamp.control_server import ServerConfig
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import Modes

HELP = "run a TWAMP server (control listener and session-reflector)"
TWAMP_PORT = 862

MODE_NAMES = {
    "unauthenticated": Modes.UNAUTHENTICATED,
    "authenticated": Modes.AUTHENTICATED,
    "encrypted": Modes.ENCRYPTED,
    "mixed": Modes.MIXED,
    "individual": Modes.INDIVIDUAL_SESSION_CONTROL,
    "reflect-octets": Modes.REFLECT_OCTETS,
    "symmetrical": Modes.SYMMETRICAL_SIZE,
}
_PROTECTED = Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED
_FEATURES = Modes.INDIVIDUAL_SESSION_CONTROL | Modes.REFLECT_OCTETS | Modes.SYMMETRICAL_SIZE


def parse_modes(text: str) -> Modes:
    modes = Modes(0)
    for name in filter(None, (part.strip() for part in text.split(","))):
        if name not in MODE_NAMES:
            raise argparse.ArgumentTypeError(f"unknown mode {name!r}; choose from {', '.join(MODE_NAMES)}")
        modes |= MODE_NAMES[name]
    return modes


def parse_port_range(text: str) -> tuple[int, int]:
    low_text, sep, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text if sep else low_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO-HI") from None
    if not 1 <= low <= high <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= LO <= HI <= 65535")
    return low, high


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _batch(text: str) -> int:
    """1..1024, the range of the YANG leaves (a recvmmsg/sendmmsg vector is allocated per port)."""
    value = _positive_int(text)
    if value > 1024:
        raise argparse.ArgumentTypeError(f"{text} must be at most 1024")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ADDR:PORT",
        help="control address, repeatable; [::1]:862 for IPv6; port 0 = any (default 127.0.0.1:862)",
    )
    parser.add_argument(
        "--test-ports", type=parse_port_range, metavar="LO-HI", help="UDP ports for test sessions"
    )
    parser.add_argument(
        "--modes",
        type=parse_modes,
        metavar="LIST",
        help=f"comma list of {', '.join(MODE_NAMES)} (default: unauthenticated and all features, plus "
        "authenticated, encrypted and mixed when --keys is given)",
    )
    parser.add_argument("--keys", metavar="FILE", help="perfSONAR pfs key file: 'key-id hex-secret' lines")
    parser.add_argument(
        "--servwait",
        type=_positive_float,
        default=900.0,
        help="idle control timeout, s (default %(default)g)",
    )
    parser.add_argument(
        "--refwait",
        type=_positive_float,
        default=900.0,
        help="idle test session timeout, s (default %(default)g)",
    )
    parser.add_argument(
        "--count-exponent",
        type=int,
        choices=range(10, 32),
        default=11,
        metavar="N",
        help="PBKDF2 Count = 2^N (default %(default)s)",
    )
    parser.add_argument(
        "--max-connections", type=_positive_int, default=64, help="control connections (default %(default)s)"
    )
    parser.add_argument(
        "--max-connections-per-client",
        type=_positive_int,
        default=8,
        help="control connections from one address (default %(default)s)",
    )
    parser.add_argument(
        "--max-sessions",
        type=_positive_int,
        default=16,
        help="test sessions per connection (default %(default)s)",
    )
    parser.add_argument("--max-pps", type=_positive_float, help="reflected packets per second per session")
    parser.add_argument("--max-message-size", type=int, default=1024, help="largest control message, octets")
    parser.add_argument("--stats-file", metavar="FILE", help="JSON counters, written on SIGUSR1 and on exit")
    parser.add_argument(
        "--busy-poll",
        type=float,
        default=0.0,
        metavar="US",
        help="after each packet a port polls this many microseconds before sleeping: a busy session's next "
        "packet then costs no wake-up (lower, steadier T3-T2) at the price of CPU (default off)",
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        choices=range(1, 100),
        metavar="N",
        help="SCHED_FIFO priority 1-99 for the reflector's port threads (needs CAP_SYS_NICE; default none)",
    )
    parser.add_argument(
        "--receive-batch",
        type=_batch,
        default=ReflectorConfig().receive_batch,
        metavar="N",
        help="datagrams a port takes per receive call when several wait, each with its own kernel timestamp; "
        "1: one per call (default %(default)s)",
    )
    parser.add_argument(
        "--send-batch",
        type=_batch,
        default=ReflectorConfig().send_batch,
        metavar="N",
        help="replies per send call when a receive brought several (at most --receive-batch); T3 is read "
        "before the replies ahead of it have left (default %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every control connection")


def server_config(args: argparse.Namespace) -> ServerConfig:
    keys = KeyChain.from_pfs_file(args.keys) if args.keys else None
    if args.modes is None:
        modes = Modes.UNAUTHENTICATED | _FEATURES | (_PROTECTED if keys is not None else Modes(0))
    else:
        modes = args.modes
    if modes & _PROTECTED and keys is None:
        raise ValueError("authenticated, encrypted and mixed modes need --keys")
    if not modes & (Modes.UNAUTHENTICATED | _PROTECTED):
        raise ValueError("--modes must include at least one security mode")
    return ServerConfig(
        modes=modes,
        key_source=keys,
        count=2**args.count_exponent,
        max_sessions=args.max_sessions,
        max_message_size=args.max_message_size,
    )


def limits_of(args: argparse.Namespace) -> Limits:
    return Limits(
        max_connections=args.max_connections,
        max_connections_per_client=args.max_connections_per_client,
        max_sessions_per_connection=args.max_sessions,
        max_pps=args.max_pps,
        servwait=args.servwait,
        refwait=args.refwait,
        max_message_size=args.max_message_size,
    )


def write_stats(path: str, stats: dict[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(stats, handle, indent=1, sort_keys=True)
    os.replace(tmp, target)


async def serve(args: argparse.Namespace, config: ServerConfig, limits: Limits) -> int:
    listens = args.listen or [f"127.0.0.1:{TWAMP_PORT}"]
    endpoints = [parse_hostport(text, TWAMP_PORT) for text in listens]
    reflector = Reflector(
        ReflectorConfig(
            port_range=args.test_ports,
            refwait=limits.refwait,
            max_pps=limits.max_pps,
            busy_poll=max(0.0, args.busy_poll) / 1e6,
            realtime_priority=args.realtime_priority,
            receive_batch=args.receive_batch,
            send_batch=args.send_batch,
        )
    )
    listener = ControlListener(config, limits, reflector, test_port_range=args.test_ports)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    dumps = 0

    def dump() -> None:
        nonlocal dumps
        if args.stats_file:
            dumps += 1
            try:
                write_stats(args.stats_file, {"dump_seq": dumps, **listener.stats()})
            except OSError as exc:
                logging.getLogger(__name__).error("cannot write %s: %s", args.stats_file, exc)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump)
    try:
        try:
            for host, port in endpoints:
                for address in await listener.listen(host, port):
                    print(f"twamp-nf reflect: listening on {address}", flush=True)
        except OSError as exc:
            print(f"twamp-nf reflect: cannot listen: {exc}", file=sys.stderr)
            return 1
        await stop.wait()
    finally:
        await listener.close()
        dump()  # before reflector.close(), which releases the ports and their per-session counts
        reflector.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = server_config(args)
        limits = limits_of(args)
    except (ValueError, OSError) as exc:
        print(f"twamp-nf reflect: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(args, config, limits))
