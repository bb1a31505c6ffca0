"""Benchmark: TWAMP-Control round trips per mode over loopback (in-process server, real TCP).

Prints, per security mode, the median and p95 time to (a) complete setup (greeting, Set-Up-Response with
PBKDF2 and the Token, Server-Start) and (b) run a whole control session with one test session (setup,
Request-TW-Session, Start-Sessions, Stop-Sessions) without test packets. Run:
    .venv/bin/python -m tests.benchmarks.control_session [--runs N] [--count-exponent N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from nf.net.control_connector import ControlConnection, MeasurementConfig
from nf.net.control_listener import ControlListener
from nf.net.hostport import parse_hostport
from nf.net.limits import Limits
from nf.net.reflector import Reflector, ReflectorConfig
from nf.twamp.control_client import SessionRequest
from nf.twamp.control_events import SessionAccepted, SetupCompleted, StartAcked
from nf.twamp.control_server import ServerConfig
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import Accept, Modes, SecurityMode
from nf.twamp.results import percentile


async def one_session(config: MeasurementConfig) -> tuple[float, float]:
    start = time.perf_counter()
    control = ControlConnection(config, os.urandom)
    await control.connect()
    try:
        assert control.machine is not None
        await control.expect((SetupCompleted,), "setup")
        setup = time.perf_counter() - start
        control.machine.request_session(
            SessionRequest(sender_port=40000, reflector_port=0, start_time=time.time(), timeout=0)
        )
        await control.expect((SessionAccepted,), "Accept-Session")
        control.machine.start_sessions()
        ack = await control.expect((StartAcked,), "Start-Ack")
        assert isinstance(ack, StartAcked) and ack.accept is Accept.OK
        control.machine.stop_sessions(Accept.OK)
        await control.flush()
    finally:
        await control.close()
    return setup, time.perf_counter() - start


async def main(runs: int, count_exponent: int) -> None:
    keys = KeyChain({"bench": os.urandom(32)})
    server = ServerConfig(
        modes=Modes.UNAUTHENTICATED | Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED,
        key_source=keys,
        count=2**count_exponent,
    )
    listener = ControlListener(server, Limits(max_connections_per_client=64), Reflector(ReflectorConfig()))
    host, port = parse_hostport((await listener.listen("127.0.0.1", 0))[0])
    print(f"TWAMP-Control on loopback, {runs} runs per mode, PBKDF2 Count 2^{count_exponent}")
    header = ("setup median ms", "setup p95 ms", "session median ms", "session p95 ms")
    print(f"{'mode':<16}" + "".join(f"{h:>19}" for h in header))
    try:
        for mode in SecurityMode:
            config = MeasurementConfig(host=host, port=port, mode=mode, key_id="bench", keys=keys)
            setups, sessions = [], []
            for _ in range(runs):
                setup, session = await one_session(config)
                setups.append(setup * 1000)
                sessions.append(session * 1000)
            setups.sort()
            sessions.sort()
            print(
                f"{mode.value:<16}{statistics.median(setups):>19.2f}{percentile(setups, 95):>19.2f}"
                f"{statistics.median(sessions):>19.2f}{percentile(sessions, 95):>19.2f}"
            )
    finally:
        await listener.close()
        listener.reflector.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--count-exponent", type=int, default=11)
    options = parser.parse_args()
    asyncio.run(main(options.runs, options.count_exponent))
