"""Benchmark: NETCONF round trips through the whole server (SSH, framing, libyang, NACM, runtime link).

Starts a server on loopback over the test suite's fake runtime and prints the median and p95 of: session
open (SSH + hello), get-config of a small and of a 200-entry key-chain configuration (also in the RFC 6243
with-defaults modes), and edit-config on running (edit, validation, JSON conversion, apply on the runtime
socket). ncclient's TICK is set to 1 ms as
in the tests (its default 100 ms poll would dominate). Run:
    .venv/bin/python -m tests.benchmarks.netconf [--runs N]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nf.twamp.results import percentile
from tests.test_netconf_harness import NC_NS, SECRET_B64, SERVER_CONFIG, TWAMP_NS, Rig


def _timed(runs: int, action: Callable[[int], object]) -> list[float]:
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        action(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _wd(m: Any, mode: str, _run: int) -> object:
    return m.get_config("running", with_defaults=mode)


def _report(name: str, samples: list[float]) -> None:
    p95 = percentile(sorted(samples), 95)
    print(f"{name:<38} median {statistics.median(samples):8.2f} ms   p95 {p95:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        try:
            _report(
                "session open (SSH + hello)",
                _timed(max(10, args.runs // 5), lambda _: rig.connect().close_session()),
            )
            m = rig.connect()
            m.edit_config(target="running", config=SERVER_CONFIG)
            _report("get-config, small", _timed(args.runs, lambda _: m.get_config("running")))
            _report(
                "edit-config running (count)",
                _timed(
                    args.runs,
                    lambda i: m.edit_config(
                        target="running", config=SERVER_CONFIG.replace("65536", str(1024 << (i % 6)))
                    ),
                ),
            )
            entries = "".join(
                f"<key-chain><key-id>key-{n}</key-id><secret-key>{SECRET_B64}</secret-key></key-chain>"
                for n in range(200)
            )
            m.edit_config(
                target="running",
                config=f'<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server>{entries}</server></twamp>'
                "</config>",
            )
            _report("get-config, 200 key-chain entries", _timed(args.runs, lambda _: m.get_config("running")))
            for mode in ("report-all", "report-all-tagged", "trim"):  # RFC 6243: a libyang pass more
                _report(
                    f"get-config, 200 entries, {mode}", _timed(args.runs, functools.partial(_wd, m, mode))
                )
            _report(
                "edit-config running, 200 entries",
                _timed(
                    args.runs,
                    lambda i: m.edit_config(
                        target="running", config=SERVER_CONFIG.replace("65536", str(1024 << (i % 6)))
                    ),
                ),
            )
            m.close_session()
        finally:
            rig.close()


if __name__ == "__main__":
    main()
