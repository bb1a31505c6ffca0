"""Serve the twamp-nf YANG modules over NETCONF/SSH and configure the runtime through its control socket."""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import threading

from nf.net.hostport import parse_hostport

HELP = "NETCONF server (SSH) for the twamp-nf YANG modules, configuring a running 'twamp-nf run'"
NETCONF_PORT = 830


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        metavar="ADDR:PORT",
        default=f"[::]:{NETCONF_PORT}",
        help=f"address to listen on (default [::]:{NETCONF_PORT}; [::1]:830 for IPv6 loopback)",
    )
    parser.add_argument("--runtime-socket", metavar="PATH", help="control socket of 'twamp-nf run'")
    parser.add_argument(
        "--host-key", metavar="FILE", help="SSH host key; an ed25519 key is created if missing"
    )
    parser.add_argument("--users", metavar="FILE", help="users file (TOML): password hashes, SSH keys, NACM")
    parser.add_argument(
        "--yang-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="YANG search directory (repeatable; default: the repository's yang/ and pyang's IETF modules)",
    )
    parser.add_argument("--max-sessions", type=_positive_int, default=16, help="NETCONF sessions at once")
    parser.add_argument(
        "--max-ssh-connections",
        type=_positive_int,
        default=None,
        help="SSH connections at once, authenticated or not (default: twice --max-sessions)",
    )
    parser.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=4 * 1024 * 1024,
        help="largest NETCONF message accepted, in octets (default 4 MiB)",
    )
    parser.add_argument(
        "--replay-events",
        type=int,
        default=1000,
        metavar="N",
        help="runtime events kept for RFC 5277 replay (create-subscription startTime); 0 turns replay off "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--replay-max-age",
        type=float,
        default=None,
        metavar="S",
        help="and none older than this many seconds (default: no age limit)",
    )
    parser.add_argument(
        "--notification-queue",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="notifications waiting for one subscriber that does not read; past it the session is dropped "
        "(it can reconnect and replay) (default %(default)s)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password from the terminal (or stdin) and print its users-file hash",
    )


def run(args: argparse.Namespace) -> int:
    from nf_netconf.server import NetconfApp, ServerConfig
    from nf_netconf.users import UsersFileError, hash_password

    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            print("twamp-nf netconf: empty password", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    missing = [
        flag
        for flag, value in (
            ("--runtime-socket", args.runtime_socket),
            ("--host-key", args.host_key),
            ("--users", args.users),
        )
        if not value
    ]
    if missing:
        print(f"twamp-nf netconf: {', '.join(missing)} required", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        host, port = parse_hostport(args.listen, NETCONF_PORT)
    except ValueError as exc:
        print(f"twamp-nf netconf: --listen: {exc}", file=sys.stderr)
        return 2
    config = ServerConfig(
        host=host,
        port=port,
        runtime_socket=args.runtime_socket,
        host_key=args.host_key,
        users_file=args.users,
        yang_dirs=tuple(args.yang_dir),
        max_sessions=args.max_sessions,
        max_ssh_connections=args.max_ssh_connections or 0,
        max_message_size=args.max_message_size,
        replay_events=args.replay_events,
        replay_max_age=args.replay_max_age,
        notification_queue=args.notification_queue,
    )
    try:
        app = NetconfApp(config)
        app.start()
    except (OSError, ValueError, UsersFileError) as exc:
        print(f"twamp-nf netconf: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"twamp-nf netconf: listening on {host}:{app.port}", flush=True)
    stop.wait()
    app.stop()
    return 0
