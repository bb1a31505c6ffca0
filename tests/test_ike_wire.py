"""Our IKE endpoint on real UDP sockets (loopback): ours <-> ours, a half-open flood, junk, and tshark.

Everything binds 127.0.0.1 / ::1 on kernel-chosen ports and closes its sockets in `finally`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from nf.ike.auth import PreSharedKey
from nf.ike.counters import Reason
from nf.ike.exchanges import IKEEngine, Limits, PeerConfig
from nf.ike.sa import Deleted, Established, Event, Rekeyed, SAState
from nf.net.ike_endpoint import Lifetimes, open_ike_endpoint
from tests.conftest import can_capture, tshark
from tests.ike_peers import cert_peer, psk_peer, run
from tests.strongswan_peer import CharonPKI, make_pki

PSK = PreSharedKey(b"wire test secret, at least long enough")


def psk_config(local: str, remote: str) -> PeerConfig:
    return psk_peer(local, remote, PSK)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CharonPKI:
    return make_pki(tmp_path_factory.mktemp("pki"), {"left.test": "ed25519", "right.test": "rsa"})


async def wait_for(endpoint_events: list[Event], kind: type[Any], timeout: float = 60.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for event in endpoint_events:
            if isinstance(event, kind):
                return event
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {kind.__name__} in {endpoint_events!r}")


@pytest.mark.parametrize(
    ("host", "auth"),
    [("127.0.0.1", "psk"), ("::1", "psk"), ("127.0.0.1", "cert")],
    ids=["v4-psk", "v6-psk", "v4-cert"],
)
def test_ours_to_ours_establish_rekey_delete(pki: CharonPKI, host: str, auth: str) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.fail("IPv6 loopback is required on the test machine")

    async def scenario() -> None:
        if auth == "psk":
            left_cfg, right_cfg = psk_config("left.test", "right.test"), psk_config("right.test", "%any")
        else:
            proposals = "aes256-sha384-ecp384"
            left_cfg = cert_peer(pki, "left.test", "right.test", proposals)
            right_cfg = cert_peer(pki, "right.test", "%any", proposals)
        left = await open_ike_endpoint((host, 0), peers=[left_cfg])
        right = await open_ike_endpoint((host, 0), peers=[right_cfg])
        right_events: list[Event] = []
        right.add_listener(right_events.append)
        try:
            event = await left.initiate(right.local, left_cfg)
            assert isinstance(event, Established) and event.peer_id == "right.test"
            theirs = await wait_for(right_events, Established)
            assert theirs.spis == event.spis and theirs.peer_id == "left.test"
            mine, peer = left.lookup(*event.spis), right.lookup(*event.spis)
            assert mine is not None and peer is not None and mine.ippm_secret() == peer.ippm_secret()
            rekeyed = await left.rekey(mine)
            assert isinstance(rekeyed, Rekeyed)
            new_mine, new_peer = left.lookup(*rekeyed.new_spis), right.lookup(*rekeyed.new_spis)
            assert new_mine is not None and new_peer is not None
            assert new_mine.ippm_secret() == new_peer.ippm_secret() != mine.ippm_secret()
            deleted = await right.delete(new_peer)
            assert deleted.reason == "deleted"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while left.lookup(*rekeyed.new_spis) is not None and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert left.lookup(*rekeyed.new_spis) is None and right.lookup(*event.spis) is None
        finally:
            left.close()
            right.close()

    run(scenario())


def test_lifetime_timers_rekey_and_liveness_run_by_the_adapter() -> None:
    async def scenario() -> None:
        cfg = psk_config("left.test", "right.test")
        left = await open_ike_endpoint(("127.0.0.1", 0), peers=[cfg], lifetimes=Lifetimes(rekey_time=0.3))
        right = await open_ike_endpoint(
            ("127.0.0.1", 0),
            peers=[psk_config("right.test", "left.test")],
            lifetimes=Lifetimes(liveness_interval=0.2),
        )
        left_events: list[Event] = []
        left.add_listener(left_events.append)
        try:
            event = await left.initiate(right.local, cfg)
            assert isinstance(event, Established)
            rekeyed = await wait_for(left_events, Rekeyed)
            assert rekeyed.old_spis == event.spis
            await wait_for(left_events, Deleted)
            assert right.engine is not None
            sa = right.lookup(*rekeyed.new_spis)
            assert sa is not None and sa.state == SAState.ESTABLISHED
        finally:
            left.close()
            right.close()

    run(scenario())


def test_half_open_flood_on_loopback_triggers_cookies_and_a_real_sa_comes_up() -> None:
    """200 spoofed-looking IKE_SA_INITs that never come back, then a legitimate initiator."""

    async def scenario() -> None:
        limits = Limits(cookie_threshold=20, max_half_open=100)
        responder = await open_ike_endpoint(
            ("127.0.0.1", 0), peers=[psk_config("right.test", "%any")], limits=limits
        )
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            flood.bind(("127.0.0.1", 0))
            flood.setblocking(False)
            template = IKEEngine(
                flood.getsockname(), os.urandom, 0.0, peers=[psk_config("x.test", "right.test")]
            )
            engine = responder.engine
            assert engine is not None
            loop = asyncio.get_running_loop()
            for sent in range(1, 201):
                template.initiate(responder.local, template.peers[0], 0.0)
                for datagram, _ in template.datagrams_to_send():
                    flood.sendto(datagram, responder.local)
                # paced by the responder, so a busy machine never overflows the socket buffer
                deadline = loop.time() + 60
                while engine.counters[Reason.COOKIE_REQUIRED] + engine.registry.half_open_count < sent:
                    assert loop.time() < deadline, engine.counters
                    await asyncio.sleep(0.001)
            assert engine.registry.half_open_count == 20
            assert engine.counters[Reason.COOKIE_REQUIRED] == 180
            legit_cfg = psk_config("legit.test", "right.test")
            legit = await open_ike_endpoint(("127.0.0.1", 0), peers=[legit_cfg])
            try:
                event = await legit.initiate(responder.local, legit_cfg)
                assert isinstance(event, Established)
                assert engine.counters[Reason.COOKIE_REQUIRED] >= 181  # it went through the cookie path
            finally:
                legit.close()
        finally:
            flood.close()
            responder.close()

    run(scenario())


def test_junk_on_the_wire_is_counted_unanswered_and_harmless() -> None:
    async def scenario() -> None:
        cfg = psk_config("right.test", "%any")
        responder = await open_ike_endpoint(("127.0.0.1", 0), peers=[cfg])
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            junk.bind(("127.0.0.1", 0))
            junk.settimeout(1.0)
            header_only = bytes(4) + os.urandom(8) + os.urandom(8) + bytes([46, 0x20, 37, 0x08]) + bytes(4)
            header_only += (28).to_bytes(4, "big")
            datagrams = [
                b"",
                b"\xff" * 3,
                bytes(4) + b"\x01" * 10,
                b"\x01\x02\x03\x04" + bytes(40),
                header_only,
            ]
            for datagram in datagrams:
                junk.sendto(datagram, responder.local)
            engine = responder.engine
            assert engine is not None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while sum(engine.counters.snapshot().values()) < len(datagrams):
                assert loop.time() < deadline, engine.counters
                await asyncio.sleep(0.01)
            counts = engine.counters
            assert counts[Reason.NON_ESP_MARKER] == 3 and counts[Reason.TRUNCATED] == 1
            assert counts[Reason.UNKNOWN_SPI] == 1
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(junk.recvfrom, 2048)
            initiator_cfg = psk_config("left.test", "right.test")
            left = await open_ike_endpoint(("127.0.0.1", 0), peers=[initiator_cfg])
            try:
                assert isinstance(await left.initiate(responder.local, initiator_cfg), Established)
            finally:
                left.close()
        finally:
            junk.close()
            responder.close()

    run(scenario())


def _wait_until_capturing(pcap: Path, port: int) -> None:
    """dumpcap reports it is capturing slightly before its filter sees packets: probe with NAT-keepalives
    (RFC 3948: one 0xFF octet, which udpencap decodes as such) until one shows up in the file."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _ in range(600):
            probe.sendto(b"\xff", ("127.0.0.1", port))
            if pcap.exists() and tshark(["-r", str(pcap)]).strip():
                return
            time.sleep(0.05)
    raise AssertionError("the capture never saw a probe packet")


@pytest.mark.tshark
@pytest.mark.parametrize("auth", ["psk", "cert"])
def test_tshark_decodes_our_ike_sa_init_and_ike_auth(
    capture: Any, pki: CharonPKI, auth: str, tmp_path: Path
) -> None:
    if not can_capture() or shutil.which("tshark") is None:
        pytest.fail("tshark/dumpcap are required (tests/run installs them)")
    left_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    right_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    left_sock.bind(("127.0.0.1", 0))
    right_sock.bind(("127.0.0.1", 0))
    left_port, right_port = left_sock.getsockname()[1], right_sock.getsockname()[1]
    left_sock.close()
    right_sock.close()
    cap = capture(f"udp port {left_port} or udp port {right_port}")
    _wait_until_capturing(cap.path, left_port)

    async def scenario() -> None:
        if auth == "psk":
            left_cfg, right_cfg = psk_config("left.test", "right.test"), psk_config("right.test", "left.test")
        else:
            proposals = "aes256gcm16-prfsha384-ecp256"
            left_cfg = cert_peer(pki, "left.test", "right.test", proposals)
            right_cfg = cert_peer(pki, "right.test", "left.test", proposals)
        left = await open_ike_endpoint(("127.0.0.1", left_port), peers=[left_cfg])
        right = await open_ike_endpoint(("127.0.0.1", right_port), peers=[right_cfg])
        try:
            event = await left.initiate(right.local, left_cfg)
            assert isinstance(event, Established)
            sa = left.lookup(*event.spis)
            assert sa is not None
            await left.delete(sa)
        finally:
            left.close()
            right.close()

    run(scenario())
    pcap = cap.stop()
    decode = ["-d", f"udp.port=={left_port},udpencap", "-d", f"udp.port=={right_port},udpencap"]
    fields = tshark(
        [
            "-r",
            str(pcap),
            *decode,
            "-T",
            "fields",
            "-e",
            "isakmp.exchangetype",
            "-e",
            "isakmp.flags",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert.severity",
            "-E",
            "separator=|",
        ]
    )
    rows = [line.split("|") for line in fields.splitlines() if line.strip()]
    exchanges = [row[0] for row in rows]
    assert exchanges.count("34") == 2 and exchanges.count("35") == 2 and exchanges.count("37") == 2
    for row in rows:
        assert row[2] == "", f"malformed: {row}"
        assert not any(int(s) >= 8388608 for s in row[3].split(",") if s), f"expert error: {row}"
    malformed = tshark(["-r", str(pcap), *decode, "-Y", "_ws.malformed || _ws.expert.severity >= 8388608"])
    assert malformed.strip() == ""


def test_close_fails_pending_calls_with_a_clear_error() -> None:
    async def scenario() -> None:
        cfg = psk_config("left.test", "right.test")
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        endpoint = await open_ike_endpoint(("127.0.0.1", 0), peers=[cfg])
        try:
            pending = asyncio.ensure_future(endpoint.initiate(silent.getsockname(), cfg))
            await asyncio.sleep(0.05)
            endpoint.close()
            with pytest.raises(RuntimeError, match="endpoint is closed"):
                await pending
            with pytest.raises(RuntimeError, match="endpoint is closed"):
                await endpoint.initiate(silent.getsockname(), cfg)
        finally:
            endpoint.close()
            silent.close()

    run(scenario())


def test_both_endpoints_rekey_at_once_and_agree_on_one_sa() -> None:
    """Both adapters send their CREATE_CHILD_SA before either hears the other's (same loop tick), so both
    see the collision (RFC 7296 s2.8.2): each rekey() call returns the same surviving SA, and the old and
    the redundant SA are gone on both sides."""

    async def scenario() -> None:
        cfg = psk_config("left.test", "right.test")
        left = await open_ike_endpoint(("127.0.0.1", 0), peers=[cfg])
        right = await open_ike_endpoint(("127.0.0.1", 0), peers=[psk_config("right.test", "left.test")])
        try:
            event = await left.initiate(right.local, cfg)
            assert isinstance(event, Established)
            ours, theirs = left.lookup(*event.spis), right.lookup(*event.spis)
            assert ours is not None and theirs is not None
            left_result, right_result = await asyncio.gather(left.rekey(ours), right.rekey(theirs))
            assert isinstance(left_result, Rekeyed) and left_result == right_result
            new = left_result.new_spis
            assert left.engine is not None and right.engine is not None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while len(left.engine.registry) + len(right.engine.registry) > 2:  # the Deletes still run
                assert loop.time() < deadline, (left.engine.registry, right.engine.registry)
                await asyncio.sleep(0.01)
            survivors = [sa.spis for sa in left.engine.registry], [sa.spis for sa in right.engine.registry]
            assert survivors == ([new], [new])
            after_left, after_right = left.lookup(*new), right.lookup(*new)
            assert after_left is not None and after_right is not None
            assert after_left.ippm_secret() == after_right.ippm_secret()
            assert not left.counters.snapshot() and not right.counters.snapshot()
        finally:
            left.close()
            right.close()

    run(scenario())
