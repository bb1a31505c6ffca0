"""IKE SA setup rate: our initiator vs our responder, and charon vs charon, bounded in count and time.

Prints IKE SAs/s for (ECDSA P-256 certificates + x25519) and (PSK + MODP-2048), and ours/charon. SAs are
set up one after the other (IKE_SA_INIT + IKE_AUTH over loopback UDP, both ends on this machine). Ours
runs both endpoints in one Python process and event loop; each swanctl --initiate is a separate process,
so the swanctl-driven charon figure includes that spawn cost (the rate an operator scripting swanctl
would see); the in-daemon figure sums charon's own "initiating" -> "established" log stamps. charon is
measured twice: logging IKE at level 1 (its normal speed) and at level 4 (hex dumps of every key, flushed
per line, as in the interop tests), which slows it.

    .venv/bin/python -m tests.benchmarks.ike_setup [--count N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

from nf.ike.auth import PreSharedKey, Signer
from nf.ike.certificates import TrustAnchors, load_certificates
from nf.ike.exchanges import PeerConfig
from nf.ike.identities import Identity
from nf.ike.proposals import parse_proposals
from nf.ike.sa import Established
from nf.net.ike_endpoint import open_ike_endpoint
from tests.strongswan_peer import Charon, CharonPKI, Connection, make_pki

PSK = bytes(range(32))
SUITES = {
    "ecdsa-p256+x25519": ("aes128gcm16-prfsha256-x25519", "pubkey"),
    "psk+modp2048": ("aes128-sha256-modp2048", "psk"),
}


_STAMP = r"(\d\d):(\d\d):(\d\d)\.(\d{3}) "
_START = re.compile(_STAMP + r".*initiating IKE_SA bench\[(\d+)\]")
_DONE = re.compile(_STAMP + r".*IKE_SA bench\[(\d+)\] established")


def _in_daemon_seconds(log: str, skip: int) -> float:
    """Sum of charon's own initiate -> established times (time_add_ms log stamps), without swanctl."""
    starts: dict[int, float] = {}
    total = 0.0
    for line in log.splitlines():
        for pattern, is_start in ((_START, True), (_DONE, False)):
            match = pattern.search(line)
            if not match:
                continue
            h, m, sec, ms, uid = (int(g) for g in match.groups())
            stamp = h * 3600 + m * 60 + sec + ms / 1000
            if is_start:
                starts[uid] = stamp
            elif uid in starts and uid > skip:
                total += (stamp - starts[uid]) % 86400
    return total


def charon_rate(
    pki: CharonPKI, suite: str, count: int, seconds: float, ike_log_level: int
) -> tuple[int, float, float]:
    proposals, auth = SUITES[suite]
    with Charon("ba", ike_log_level=ike_log_level) as a, Charon("bb", ike_log_level=ike_log_level) as b:
        a.load(
            [
                Connection(
                    "bench",
                    a.port,
                    b.port,
                    "a.test",
                    "b.test",
                    proposals=proposals,
                    auth=auth,
                    cert=pki.identity("a.test") if auth == "pubkey" else None,
                )
            ],
            psk=PSK,
            pki=pki,
        )
        b.load(
            [
                Connection(
                    "bench",
                    b.port,
                    a.port,
                    "b.test",
                    "a.test",
                    proposals=proposals,
                    auth=auth,
                    cert=pki.identity("b.test") if auth == "pubkey" else None,
                )
            ],
            psk=PSK,
            pki=pki,
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
        return done, elapsed, _in_daemon_seconds(a.log_text(), skip=1)


def _our_config(pki: CharonPKI, suite: str, local: str, remote: str) -> PeerConfig:
    proposals, auth = SUITES[suite]
    if auth == "psk":
        return PeerConfig(
            Identity.parse(local), Identity.parse(remote), parse_proposals(proposals), psk=PreSharedKey(PSK)
        )
    ident = pki.identity(local)
    return PeerConfig(
        Identity.parse(local),
        Identity.parse(remote),
        parse_proposals(proposals),
        signer=Signer.from_file(str(ident.key)),
        certificates=tuple(load_certificates(str(ident.cert))),
        trust=TrustAnchors.from_files(str(pki.ca_cert)),
    )


async def _our_rate(pki: CharonPKI, suite: str, count: int, seconds: float) -> tuple[int, float]:
    initiator_cfg = _our_config(pki, suite, "a.test", "b.test")
    responder = await open_ike_endpoint(("127.0.0.1", 0), peers=[_our_config(pki, suite, "b.test", "a.test")])
    initiator = await open_ike_endpoint(("127.0.0.1", 0), peers=[initiator_cfg])
    try:
        done, elapsed = 0, 0.0
        for round_ in range(count + 1):  # round 0 warms caches
            start = time.perf_counter()
            event = await initiator.initiate(responder.local, initiator_cfg, timeout=30)
            if not isinstance(event, Established):
                raise RuntimeError(f"benchmark SA failed: {event}")
            if round_:
                elapsed += time.perf_counter() - start
                done += 1
            sa = initiator.lookup(*event.spis)
            if sa is not None:
                await initiator.delete(sa)
            if elapsed > seconds:
                break
        return done, elapsed
    finally:
        initiator.close()
        responder.close()


def our_rate(pki: CharonPKI, suite: str, count: int, seconds: float) -> tuple[int, float]:
    return asyncio.run(_our_rate(pki, suite, count, seconds))


def _line(label: str, suite: str, done: int, seconds: float) -> None:
    rate = done / seconds if seconds > 0 else float("inf")
    print(f"{label:34s} {suite:18s} {done:4d} SAs in {seconds:6.2f} s = {rate:7.1f} IKE SAs/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50, help="SAs per measurement (upper bound)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound per measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp), {"a.test": "ecdsa", "b.test": "ecdsa"})
        for suite in SUITES:
            ours_done, ours_elapsed = our_rate(pki, suite, args.count, args.seconds)
            ours = ours_done / ours_elapsed
            _line("ours -> ours", suite, ours_done, ours_elapsed)
            for level in (1, 4):  # charon's own speed, and with the key dumps the interop tests need
                done, elapsed, in_daemon = charon_rate(pki, suite, args.count, args.seconds, level)
                rate = done / elapsed
                _line(f"charon -> charon, swanctl, ike={level}", suite, done, elapsed)
                daemon_rate = done / in_daemon if in_daemon > 0 else float("inf")
                _line(f"charon -> charon, in-daemon, ike={level}", suite, done, in_daemon)
                label = f"ratio ours/charon ike={level}"
                print(
                    f"{label:34s} {suite:18s} {ours / rate:.2f} vs swanctl-driven, "
                    f"{ours / daemon_rate:.2f} vs in-daemon"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
