"""The twamp-nf command: one subcommand per module in nf.commands, each with add_arguments() and run()."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from nf.core_dumps import forbid_core_dumps

# subcommand name -> module in nf.commands
COMMANDS = {
    "reflect": "reflect",
    "ping": "ping",
    "ike-check": "ike_check",
    "demo": "demo",
    "run": "run",
    "netconf": "netconf",
}


class Command(Protocol):
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module: str) -> Command | None:
    try:
        return cast(Command, importlib.import_module(f"nf.commands.{module}"))
    except ModuleNotFoundError as exc:
        if exc.name == f"nf.commands.{module}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twamp-nf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        command = _load(module)
        if command is None:
            continue
        command_parser = sub.add_parser(name, help=command.HELP, description=command.HELP)
        command.add_arguments(command_parser)
        command_parser.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    forbid_core_dumps()
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`twamp-nf demo | head`): end quietly, as Unix filters do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
