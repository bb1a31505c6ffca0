"""Runs every fuzz target (tests/fuzz/fuzz_*.py) for a bounded time each, with atheris when installed.

A target module defines `fuzz_one(data: bytes) -> None`, which must only ever raise the parser's own
documented error type (it catches that itself). Any other exception is a finding and fails the run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def targets() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("fuzz_"))


def run_one(name: str, seconds: int) -> int:
    """Each target in its own process so a crash or hang in one is reported and bounded."""
    cmd = [sys.executable, "-m", "tests.fuzz.run_all", "--child", name, "--seconds", str(seconds)]
    try:
        return subprocess.run(cmd, timeout=seconds + 60, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"fuzz {name}: hung past {seconds + 60}s", file=sys.stderr)
        return 1


def child(name: str, seconds: int) -> None:
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None:
        with atheris.instrument_imports():
            module = importlib.import_module(f"tests.fuzz.{name}")
        corpus = HERE / "corpus" / name
        args = [sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=2048", "-print_final_stats=0"]
        if corpus.is_dir():
            args.append(str(corpus))
        atheris.Setup(args, module.fuzz_one)
        atheris.Fuzz()
    else:  # pragma: no cover - fallback where atheris has no wheel
        import os
        import time

        module = importlib.import_module(f"tests.fuzz.{name}")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            module.fuzz_one(os.urandom(int.from_bytes(os.urandom(2), "big") % 2048))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds)
        return 0
    failed = [name for name in targets() if run_one(name, args.seconds) != 0]
    print(f"fuzz: {len(targets()) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
