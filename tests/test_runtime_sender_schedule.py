"""The YANG Poisson schedule reaches the wire through the runtime: lambda and max-interval, mapped by
nf.runtime.config, handed to the SessionSender by nf.runtime.client, seen as T1s by a loopback reflector."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

from nf.net.sender import Schedule
from nf.runtime.client import LightRun
from nf.runtime.config import build_plan
from nf.twamp.modes import SecurityMode
from nf.twamp.test_packets import unix_from_ntp
from tests.test_sender import ScriptedReflector

LAMBDA = MAX_INTERVAL = 0.02  # YANG allows max-interval == lambda
TOLERANCE = 0.015  # scheduling latency of a busy test machine
COUNT = 80
WAIT = 30.0


def _light_poisson(port: int) -> dict[str, Any]:
    return {
        "twamp-nf-twamp:twamp": {
            "session-sender": {
                "test-session": [
                    {
                        "name": "poisson",
                        "light": {"reflector-ip": "127.0.0.1", "reflector-udp-port": port},
                        "number-of-packets": COUNT,
                        "lambda": f"{LAMBDA:.6f}",
                        "max-interval": f"{MAX_INTERVAL:.6f}",
                    }
                ]
            }
        }
    }


def test_max_interval_reaches_the_sender() -> None:
    """Uncapped exponential gaps with this mean exceed the bound about once in six, so of 79 gaps some would
    (all stay below it by chance with probability below 1e-6): every gap within it shows the cap applied."""
    reflector = ScriptedReflector(SecurityMode.UNAUTHENTICATED, None, lambda p, _r: [reflector.reply(p)])
    published: list[tuple[str, dict[str, Any]]] = []
    try:
        session = build_plan(_light_poisson(reflector.port)).light_sessions["poisson"]
        assert session.schedule is Schedule.POISSON and session.max_interval == MAX_INTERVAL

        async def scenario() -> LightRun:
            run = LightRun(session, published.append, Counter())
            await asyncio.wait_for(run.task, WAIT)
            return run

        run = asyncio.run(scenario())
    finally:
        reflector.close()
    assert run.state.state == "completed" and run.state.summary is not None
    assert (run.state.summary.sent, run.state.summary.received) == (COUNT, COUNT)
    assert [p.seq for p in reflector.seen] == list(range(COUNT))
    t1s = [unix_from_ntp(p.timestamp) for p in reflector.seen]
    gaps = [b - a for a, b in itertools.pairwise(t1s)]
    assert max(gaps) <= MAX_INTERVAL + TOLERANCE, max(gaps)
    assert sum(gaps) / len(gaps) < LAMBDA  # the truncated mean, lambda * (1 - 1/e) here
