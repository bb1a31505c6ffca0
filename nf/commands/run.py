"""`twamp-nf run`: the runtime process, configured and observed through its control socket.

It starts with nothing configured and waits for `apply` on the socket (docs/control-socket.md); the NETCONF
server is its normal client. Logs go to stderr; the first stdout line is 'twamp-nf run: control socket PATH'
once the socket accepts connections. SIGTERM/SIGINT end it cleanly: control connections and IKE SAs are
closed and the socket file is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from nf.runtime.control_socket import DEFAULT_MAX_MESSAGE, ControlSocketServer
from nf.runtime.daemon import Runtime

HELP = "run the network function, configured through a control socket (JSON lines)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control-socket", required=True, metavar="PATH", help="Unix socket path (created 0600)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level on stderr (default info)",
    )
    parser.add_argument(
        "--control-max-message",
        type=int,
        default=DEFAULT_MAX_MESSAGE,
        metavar="N",
        help=f"longest accepted request line in octets (default {DEFAULT_MAX_MESSAGE})",
    )


async def serve(path: str, max_message: int) -> None:
    runtime = Runtime()
    control = ControlSocketServer(runtime, path, max_message)
    await control.start()
    print(f"twamp-nf run: control socket {path}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await control.close()
        await runtime.close()
        logging.getLogger("nf.runtime").info("stopped")


def run(args: argparse.Namespace) -> int:
    if args.control_max_message < 1024:
        print("twamp-nf run: --control-max-message must be at least 1024", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(args.control_socket, args.control_max_message))
    except OSError as exc:
        print(f"twamp-nf run: {args.control_socket}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
