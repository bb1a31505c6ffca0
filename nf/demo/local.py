"""`twamp-nf demo --local`: a reflector and a client in this one process, no NETCONF, no IKE.

The two ends share a random key that lives only in this process's memory; useful to see TWAMP work when the
NETCONF stack cannot start (and quick: no child processes).
"""

from __future__ import annotations

import asyncio
import os

from nf.net.control_connector import MeasurementConfig, SessionPlan, measure
from nf.net.control_listener import ControlListener
from nf.net.hostport import parse_hostport
from nf.net.limits import Limits
from nf.net.reflector import Reflector, ReflectorConfig
from nf.twamp.control_server import ServerConfig
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import Modes, SecurityMode
from nf.twamp.results import Summary, summarize

DEMO_KEY_ID = "twamp-nf-demo"


async def local_demo(plan: SessionPlan, mode: SecurityMode) -> tuple[str, Summary]:
    """One session from an in-process client to an in-process server on a free loopback port."""
    keys = KeyChain({DEMO_KEY_ID: os.urandom(32)})
    config = ServerConfig(
        modes=Modes.UNAUTHENTICATED | Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED, key_source=keys
    )
    listener = ControlListener(config, Limits(), Reflector(ReflectorConfig()))
    address = (await listener.listen("127.0.0.1", 0))[0]
    try:
        host, port = parse_hostport(address)
        measurement = MeasurementConfig(
            host=host, port=port, mode=mode, key_id=DEMO_KEY_ID, keys=keys, plan=plan
        )
        return address, summarize(await measure(measurement))
    finally:
        await listener.close()
        listener.reflector.close()


def run_local(plan: SessionPlan, mode: SecurityMode) -> tuple[str, Summary]:
    return asyncio.run(local_demo(plan, mode))
