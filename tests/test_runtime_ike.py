"""The runtime's IKE side in-process: two Runtimes on one event loop, real UDP sockets on loopback.

An auto-initiated SA comes up on both; a rekey replaces it with ike-sa-down (rekeyed) and ike-sa-up
(rekeyed-from) and counts in rekey-count; a new apply that keeps the IKE socket keeps the SA; removing IKE
deletes the SA with the peer.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from typing import Any

from nf.ike.sa import Established, RetransmitPolicy, SAState
from nf.net.ike_endpoint import Lifetimes
from nf.runtime.daemon import Runtime
from nf.runtime.events import Subscription
from tests.conftest import free_port
from tests.test_runtime_daemon import ike_config

WAIT = 30.0


async def next_event(subscription: Subscription, name: str) -> dict[str, Any]:
    while True:
        event = await asyncio.wait_for(subscription.queue.get(), WAIT)
        if event["event"] == name:
            return event


async def scenario() -> None:
    port_a = free_port("127.0.0.1", socket.SOCK_DGRAM)
    port_b = free_port("127.0.0.1", socket.SOCK_DGRAM)
    a, b = Runtime(), Runtime()
    events_a, events_b = a.bus.subscribe(), b.bus.subscribe()
    config_a = {"twamp-nf-ike:ike": ike_config("a", "b", port_a, port_b, auto=False)}
    config_b = {"twamp-nf-ike:ike": ike_config("b", "a", port_b, port_a, auto=True)}
    try:
        await a.apply(config_a)
        await b.apply(config_b)
        up_b = await next_event(events_b, "twamp-nf-ike:ike-sa-up")
        up_a = await next_event(events_a, "twamp-nf-ike:ike-sa-up")
        spis = (up_b["data"]["spi-i"], up_b["data"]["spi-r"])
        assert (up_a["data"]["spi-i"], up_a["data"]["spi-r"]) == spis

        # rekey: new SPIs, the old SA reported down as rekeyed, rekey-count 1 on both ends
        endpoint = b.hub.endpoint
        assert endpoint is not None
        sa = endpoint.lookup(bytes.fromhex(spis[0]), bytes.fromhex(spis[1]))
        assert sa is not None
        await endpoint.rekey(sa, timeout=WAIT)
        down = await next_event(events_b, "twamp-nf-ike:ike-sa-down")
        assert down["data"] == {"spi-i": spis[0], "spi-r": spis[1], "reason": "rekeyed", "peer": "a"}
        for events in (events_b, events_a):
            rekeyed = await next_event(events, "twamp-nf-ike:ike-sa-up")
            assert rekeyed["data"]["rekeyed-from"] == {"spi-i": spis[0], "spi-r": spis[1]}
        new_spis = (rekeyed["data"]["spi-i"], rekeyed["data"]["spi-r"])
        assert new_spis != spis
        for runtime in (a, b):
            (entry,) = runtime.state()["twamp-nf-ike:ike"]["ike-sa"]
            assert (entry["spi-i"], entry["spi-r"]) == new_spis and entry["rekey-count"] == 1

        # the same IKE configuration again keeps the socket and the SA
        await b.apply(config_b)
        (entry,) = b.state()["twamp-nf-ike:ike"]["ike-sa"]
        assert (entry["spi-i"], entry["spi-r"]) == new_spis

        # removing IKE deletes the SA with the peer
        await b.apply({})
        gone = await next_event(events_a, "twamp-nf-ike:ike-sa-down")
        assert gone["data"]["reason"] == "deleted-by-peer" and gone["data"]["spi-i"] == new_spis[0]
        assert b.state()["twamp-nf-ike:ike"] == {}
    finally:
        await a.close()
        await b.close()


def test_rekey_keep_and_delete() -> None:
    asyncio.run(scenario())


def shorten(
    runtime: Runtime, peer: str, *, rekey_time: float = 3600.0, hard_lifetime: float = 7200.0
) -> None:
    """YANG keeps rekey-time >= 60 s; the test shortens the applied plan's lifetimes in place."""
    plan = runtime.hub.plan
    assert plan is not None
    plan.peers[peer] = replace(plan.peers[peer], rekey_time=rekey_time, hard_lifetime=hard_lifetime)


async def lifetimes() -> None:
    port_a = free_port("127.0.0.1", socket.SOCK_DGRAM)
    port_b = free_port("127.0.0.1", socket.SOCK_DGRAM)
    a, b = Runtime(), Runtime()
    events_a, events_b = a.bus.subscribe(), b.bus.subscribe()
    try:
        await a.apply({"twamp-nf-ike:ike": ike_config("a", "b", port_a, port_b, auto=False)})
        await b.apply({"twamp-nf-ike:ike": ike_config("b", "a", port_b, port_a, auto=True)})
        first = (await next_event(events_b, "twamp-nf-ike:ike-sa-up"))["data"]
        shorten(b, "a", rekey_time=0.5)  # B initiated: B rekeys
        rekeyed = (await next_event(events_b, "twamp-nf-ike:ike-sa-up"))["data"]
        assert rekeyed["rekeyed-from"] == {"spi-i": first["spi-i"], "spi-r": first["spi-r"]}
        shorten(b, "a")
        shorten(a, "b", hard_lifetime=0.5)  # A deletes at the hard lifetime, B initiates a new SA
        down = (await next_event(events_b, "twamp-nf-ike:ike-sa-down"))["data"]
        assert down["reason"] == "deleted-by-peer" and down["spi-i"] == rekeyed["spi-i"]
        shorten(a, "b")
        again = (await next_event(events_b, "twamp-nf-ike:ike-sa-up"))["data"]
        assert "rekeyed-from" not in again and again["spi-i"] not in (first["spi-i"], rekeyed["spi-i"])
        await next_event(events_a, "twamp-nf-ike:ike-sa-down")
    finally:
        await a.close()
        await b.close()


def test_per_peer_rekey_time_and_hard_lifetime() -> None:
    asyncio.run(lifetimes())


async def liveness() -> None:
    port_a = free_port("127.0.0.1", socket.SOCK_DGRAM)
    port_b = free_port("127.0.0.1", socket.SOCK_DGRAM)
    a, b = Runtime(), Runtime()
    events_b = b.bus.subscribe()
    try:
        await a.apply({"twamp-nf-ike:ike": ike_config("a", "b", port_a, port_b, auto=False)})
        await b.apply({"twamp-nf-ike:ike": ike_config("b", "a", port_b, port_a, auto=False)})
        plan, endpoint = b.hub.plan, b.hub.endpoint
        assert plan is not None and endpoint is not None
        quick = RetransmitPolicy(timeout=0.3, base=1.0, tries=2)
        peer = plan.peers["a"] = replace(
            plan.peers["a"], config=replace(plan.peers["a"].config, retransmit=quick)
        )
        endpoint.lifetimes = Lifetimes(liveness_interval=0.3)
        assert peer.liveness_action == "restart"
        assert isinstance(await b.hub.initiate(("127.0.0.1", port_a), peer.config, WAIT), Established)
        await next_event(events_b, "twamp-nf-ike:ike-sa-up")

        silent = a.hub.endpoint  # A vanishes without a word
        assert silent is not None
        a.hub.endpoint = None
        silent.close()
        down = await next_event(events_b, "twamp-nf-ike:ike-sa-down")
        assert down["data"]["reason"] == "liveness-timeout" and down["data"]["peer"] == "a"
        engine = endpoint.engine
        assert engine is not None
        deadline = asyncio.get_running_loop().time() + WAIT
        while not any(sa.state is SAState.INIT_SENT for sa in engine.registry):  # action restart
            assert asyncio.get_running_loop().time() < deadline, "no new SA was initiated"
            await asyncio.sleep(0.05)
    finally:
        await a.close()
        await b.close()


def test_liveness_failure_restarts_the_sa() -> None:
    asyncio.run(liveness())
