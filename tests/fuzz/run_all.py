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
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def targets() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("fuzz_"))


def run_one(name: str, seconds: int) -> int:
    """Each target in its own process so a crash or hang in one is reported and bounded.

    libFuzzer's progress lines are kept out of the CI log; a failure prints the tail, which holds the
    Python traceback and the crashing input (also saved under the artifact directory).
    """
    artifacts = Path(tempfile.gettempdir()) / "twamp-nf-fuzz" / name
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "tests.fuzz.run_all",
        "--child",
        name,
        "--seconds",
        str(seconds),
        "--artifacts",
        str(artifacts),
    ]
    try:
        done = subprocess.run(cmd, timeout=seconds + 60, check=False, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        print(f"fuzz {name}: hung past {seconds + 60}s", file=sys.stderr)
        return 1
    lines = [line for line in done.stderr.splitlines() if not line.startswith("INFO: Instrumenting")]
    if done.returncode != 0:
        print(f"fuzz {name}: FAILED (exit {done.returncode}), artifacts in {artifacts}", file=sys.stderr)
        print("\n".join(lines[-40:]), file=sys.stderr)
    else:
        runs = next((line for line in reversed(lines) if line.startswith("Done ")), "done")
        print(f"fuzz {name}: ok ({runs})")
    return done.returncode


def child(name: str, seconds: int, artifacts: str) -> None:
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None:
        with atheris.instrument_imports():
            module = importlib.import_module(f"tests.fuzz.{name}")
        corpus = HERE / "corpus" / name
        args = [
            sys.argv[0],
            f"-max_total_time={seconds}",
            "-rss_limit_mb=2048",
            "-print_final_stats=0",
            f"-artifact_prefix={artifacts}/",
        ]
        if corpus.is_dir():
            # libFuzzer writes what it learns into the first corpus directory: keep that out of the tree
            args += [tempfile.mkdtemp(prefix=f"{name}-", dir=artifacts), str(corpus)]
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
    parser.add_argument("--artifacts", default=tempfile.gettempdir())
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds, args.artifacts)
        return 0
    failed = [name for name in targets() if run_one(name, args.seconds) != 0]
    print(f"fuzz: {len(targets()) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
