"""RFC 5938 Individual Session Control against a running `twamp-nf reflect`: three sessions on one control
connection, started and stopped one by one with Start-N-Sessions / Stop-N-Sessions."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from typing import Any

from nf.net.control_connector import ControlConnection, MeasurementConfig
from nf.twamp.control_client import SessionRequest
from nf.twamp.control_events import SessionAccepted, SetupCompleted, StartNAcked, StopNAcked
from nf.twamp.modes import Accept, Modes, SecurityMode
from nf.twamp.test_packets import TestPacketCodec, ntp_from_unix
from nf.twamp.test_session import TestSessionParams
from tests.conftest import WAIT, Reflector, run_cli, split_hostport


class Endpoint:
    """One session-sender socket that sends a packet and reports whether a reflection came back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.params: TestSessionParams | None = None
        self.seq = 0

    def send(self) -> None:
        assert self.params is not None
        codec = TestPacketCodec(self.params.mode, self.params.keys)
        packet = codec.stamp_sender(codec.prepare_sender(self.seq, b""), ntp_from_unix(time.time()), 0)
        self.sock.sendto(bytes(packet), (self.params.reflector_address, self.params.reflector_port))
        self.seq += 1

    def reflected(self) -> int:
        """Sender sequence number of the next reflection (waits up to WAIT)."""
        assert self.params is not None
        self.sock.settimeout(WAIT)
        codec = TestPacketCodec(self.params.mode, self.params.keys)
        return codec.decode_reflector(self.sock.recv(2048)).sender_seq


def _drops(reflector: Reflector, reason: str, expected: int) -> int:
    deadline = time.monotonic() + WAIT
    while True:
        count: int = reflector.stats()["reflector"]["dropped"][reason]
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def test_start_and_stop_individual_sessions_among_three(reflector_factory: Any) -> None:
    reflector: Reflector = reflector_factory()
    host, port = split_hostport(reflector.address)
    endpoints = [Endpoint() for _ in range(3)]
    config = MeasurementConfig(host=host, port=port, mode=SecurityMode.UNAUTHENTICATED, individual=True)

    async def start_n(control: ControlConnection, sids: list[bytes]) -> None:
        assert control.machine is not None
        control.machine.start_n(sids)
        ack = await control.expect((StartNAcked,), "Start-N-Ack")
        assert isinstance(ack, StartNAcked) and ack.accept is Accept.OK and list(ack.sids) == sids

    async def stop_n(control: ControlConnection, sids: list[bytes]) -> None:
        assert control.machine is not None
        control.machine.stop_n(sids)
        ack = await control.expect((StopNAcked,), "Stop-N-Ack")
        assert isinstance(ack, StopNAcked) and ack.accept is Accept.OK and list(ack.sids) == sids

    async def scenario() -> None:
        control = ControlConnection(config, os.urandom)
        await control.connect()
        try:
            assert control.machine is not None
            setup = await control.expect((SetupCompleted,), "setup")
            assert isinstance(setup, SetupCompleted) and setup.mode & Modes.INDIVIDUAL_SESSION_CONTROL
            for endpoint in endpoints:
                control.machine.request_session(
                    SessionRequest(
                        sender_port=endpoint.port, reflector_port=0, start_time=time.time(), timeout=0
                    )
                )
                accepted = await control.expect((SessionAccepted,), "Accept-Session")
                assert isinstance(accepted, SessionAccepted)
                endpoint.params = accepted.params
            a, b, c = endpoints
            sid = [e.params.sid for e in endpoints if e.params is not None]

            await start_n(control, [sid[0], sid[2]])  # b stays unstarted
            for endpoint in endpoints:
                endpoint.send()
            assert a.reflected() == 0
            assert c.reflected() == 0
            assert _drops(reflector, "not-started", 1) == 1

            await stop_n(control, [sid[0]])  # a stops (Timeout 0); c keeps running
            await asyncio.sleep(0.05)
            a.send()
            c.send()
            assert c.reflected() == 1
            assert _drops(reflector, "after-stop", 1) == 1

            await start_n(control, [sid[1]])  # b starts late and works
            b.send()
            assert b.reflected() == 1

            await start_n(control, [sid[2]])  # c already runs: starting it again changes nothing
            control.machine.start_n([sid[0]])  # a was stopped: it cannot be restarted
            refused = await control.expect((StartNAcked,), "Start-N-Ack")
            assert isinstance(refused, StartNAcked) and refused.accept is Accept.FAILURE

            await stop_n(control, [sid[1], sid[2]])
        finally:
            await control.close()

    try:
        asyncio.run(scenario())
    finally:
        for endpoint in endpoints:
            endpoint.sock.close()
    stats = reflector.final_stats()
    assert stats["sessions"] == {
        "requested": 3,
        "accepted": 3,
        "started": 3,
        "start_failed": 1,
        "stopped": 3,
    }
    assert stats["reflector"]["reflected"] == 4
    assert stats["bad_input"] == {}


def test_ping_individual_runs_three_sessions(reflector_factory: Any) -> None:
    reflector: Reflector = reflector_factory()
    result = run_cli(
        [
            "ping",
            reflector.address,
            "--individual",
            "--sessions",
            "3",
            "--count",
            "5",
            "--interval",
            "0.01",
            "--json",
        ]
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sent"] == 15
    assert report["received"] >= 13
    stats = reflector.final_stats()
    assert stats["sessions"]["started"] == 3
    assert stats["sessions"]["stopped"] == 3


def test_individual_needs_the_server_to_offer_it(reflector_factory: Any) -> None:
    reflector: Reflector = reflector_factory("--modes", "unauthenticated")
    result = run_cli(["ping", reflector.address, "--individual", "--count", "2"])
    assert result.returncode == 1
    assert "does not offer Individual Session Control (RFC 5938)" in result.stderr
