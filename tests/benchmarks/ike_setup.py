"""IKE SA setup rate: charon vs charon (driven by swanctl), bounded in count and time.

Prints IKE SAs/s for (ECDSA P-256 certificates + x25519) and (PSK + MODP-2048). Each swanctl --initiate is
a separate process, so the charon figure includes that spawn cost; it is the rate an operator scripting
swanctl would see.

    .venv/bin/python -m tests.benchmarks.ike_setup [--count N] [--seconds S]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.strongswan_peer import Charon, CharonPKI, Connection, make_pki

PSK = bytes(range(32))
SUITES = {
    "ecdsa-p256+x25519": ("aes128gcm16-prfsha256-x25519", "pubkey"),
    "psk+modp2048": ("aes128-sha256-modp2048", "psk"),
}


def charon_rate(pki: CharonPKI, suite: str, count: int, seconds: float) -> tuple[int, float]:
    proposals, auth = SUITES[suite]
    with Charon("ba") as a, Charon("bb") as b:
        a.load(
            [Connection("bench", a.port, b.port, "a.test", "b.test", proposals=proposals, auth=auth,
                        cert=pki.identity("a.test") if auth == "pubkey" else None)],
            psk=PSK, pki=pki,
        )
        b.load(
            [Connection("bench", b.port, a.port, "b.test", "a.test", proposals=proposals, auth=auth,
                        cert=pki.identity("b.test") if auth == "pubkey" else None)],
            psk=PSK, pki=pki,
        )
        done, elapsed = 0, 0.0
        for round_ in range(count + 1):  # round 0 warms plugin and credential caches
            start = time.perf_counter()
            a.initiate("bench")
            if round_:
                elapsed += time.perf_counter() - start
                done += 1
            # charon re-uses an established SA of the same config for an IKE-only initiate: close it first
            a.swanctl("--terminate", "--ike", "bench")
            if elapsed > seconds:
                break
        return done, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50, help="SAs per measurement (upper bound)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound per measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp), {"a.test": "ecdsa", "b.test": "ecdsa"})
        for suite in SUITES:
            done, elapsed = charon_rate(pki, suite, args.count, args.seconds)
            rate = done / elapsed
            print(f"charon -> charon  {suite:20s} {done:4d} SAs in {elapsed:6.2f} s = {rate:7.1f} SAs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
