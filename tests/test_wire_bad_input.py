"""Bad input against a running `twamp-nf reflect`: each case must end only its own connection (or datagram),
be counted under its own reason, and leave the server serving.

Control messages are crafted with the project's codecs and sent over a real TCP socket (unauthenticated
mode, so no crypto is needed to reach each parser); test packets go to a real authenticated session.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from nf.net.control_connector import ControlConnection, MeasurementConfig
from nf.twamp.control_client import SessionRequest
from nf.twamp.control_events import SessionAccepted, SetupCompleted, StartAcked
from nf.twamp.control_messages import (
    Command,
    NSessionsMessage,
    RequestTwSession,
    ServerGreeting,
    ServerStart,
    SetupResponse,
    StartSessions,
    StopSessions,
    seconds_to_interval,
    unix_to_ntp,
)
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import Accept, Modes, SecurityMode
from nf.twamp.test_packets import TestPacketCodec
from nf.twamp.test_session import TestSessionParams
from tests.conftest import WAIT, Reflector, run_cli, split_hostport

LOCAL = ipaddress.IPv4Address("127.0.0.1")


class RawClient:
    """A hand-driven TWAMP-Control client over a real socket (unauthenticated mode only)."""

    def __init__(self, address: str) -> None:
        host, port = split_hostport(address)
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.greeting = ServerGreeting.decode(self.read(64))

    def read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def setup(self, mode: int = Modes.UNAUTHENTICATED) -> ServerStart:
        self.sock.sendall(SetupResponse(mode=mode).encode())
        return ServerStart.decode(self.read(48))

    def closed_by_server(self) -> bool:
        """True when the server closes the connection (within WAIT) without sending anything more."""
        self.sock.settimeout(WAIT)
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def request(**changes: Any) -> RequestTwSession:
    fields: dict[str, Any] = {
        "sender_address": LOCAL,
        "receiver_address": LOCAL,
        "sender_port": 40000,
        "receiver_port": 0,
        "padding_length": 0,
        "start_time": unix_to_ntp(time.time()),
        "timeout": seconds_to_interval(1.0),
        "type_p": 0,
    }
    fields.update(changes)
    return RequestTwSession(**fields)


def _after_setup(client: RawClient) -> None:
    assert client.setup().accept is Accept.OK


# (name, what to send after a successful unauthenticated setup, expected counter)
def _unknown_command() -> bytes:
    return bytes([0x63]) + bytes(31)


def _nonzero_mbz() -> bytes:
    raw = bytearray(StartSessions().encode())
    raw[5] = 1
    return bytes(raw)


def _oversized() -> bytes:
    sids = tuple(os.urandom(16) for _ in range(20))  # 352 octets, over --max-message-size 256
    return NSessionsMessage(Command.START_N_SESSIONS, sids).encode()


def _bad_ipvn() -> bytes:
    raw = bytearray(request().encode())
    raw[1] = 7
    return bytes(raw)


def _conf_sender_set() -> bytes:
    raw = bytearray(request().encode())
    raw[2] = 1
    return bytes(raw)


def _stop_before_start() -> bytes:
    return StopSessions(accept=Accept.OK, number_of_sessions=0).encode()


COMMAND_CASES = {
    "unknown-command": _unknown_command,
    "nonzero-mbz": _nonzero_mbz,
    "message-too-large": _oversized,
    "bad-ipvn": _bad_ipvn,
    "bad-field": _conf_sender_set,
    "unexpected-message": _stop_before_start,
}


@pytest.fixture
def open_reflector(reflector_factory: Any) -> Reflector:
    reflector: Reflector = reflector_factory(
        "--modes", "unauthenticated,individual", "--max-message-size", "256"
    )
    return reflector


@pytest.mark.parametrize("reason", list(COMMAND_CASES))
def test_bad_command_is_counted_and_closes_only_that_connection(
    open_reflector: Reflector, reason: str
) -> None:
    bystander = RawClient(open_reflector.address)  # another client, mid-session, must be unaffected
    _after_setup(bystander)
    client = RawClient(open_reflector.address)
    _after_setup(client)
    client.sock.sendall(COMMAND_CASES[reason]())
    assert client.closed_by_server()
    client.close()
    assert open_reflector.stats()["bad_input"] == {reason: 1}
    bystander.sock.sendall(request().encode())  # the bystander can still request a session
    assert bystander.read(48)[0] == Accept.OK
    bystander.close()
    result = run_cli(["ping", open_reflector.address, "--count", "3", "--interval", "0.01"])
    assert result.returncode == 0, result.stderr
    open_reflector.final_stats()
    assert [line for line in open_reflector.err.lines if f": {reason}: " in line], open_reflector.err.text


@pytest.mark.parametrize(
    ("mode", "reason"),
    [(Modes.UNAUTHENTICATED | Modes.ENCRYPTED, "mode-invalid"), (Modes.ENCRYPTED, "mode-not-offered")],
)
def test_unsupported_or_unoffered_mode(open_reflector: Reflector, mode: Modes, reason: str) -> None:
    client = RawClient(open_reflector.address)
    assert client.greeting.modes == Modes.UNAUTHENTICATED | Modes.INDIVIDUAL_SESSION_CONTROL
    start = client.setup(int(mode))
    assert start.accept is Accept.NOT_SUPPORTED
    assert client.closed_by_server()
    client.close()
    assert open_reflector.final_stats()["bad_input"] == {reason: 1}
    assert [line for line in open_reflector.err.lines if f": {reason}: " in line], open_reflector.err.text


def test_short_then_closed_setup_response(open_reflector: Reflector) -> None:
    client = RawClient(open_reflector.address)
    client.sock.sendall(SetupResponse(mode=1).encode()[:100])
    client.sock.shutdown(socket.SHUT_WR)
    assert client.closed_by_server()
    client.close()
    assert open_reflector.final_stats()["bad_input"] == {"peer-closed": 1}


def test_garbage_instead_of_setup_response(open_reflector: Reflector) -> None:
    client = RawClient(open_reflector.address)
    client.sock.sendall(struct.pack("!I", 0xFFFFFFFF) + os.urandom(160))
    assert client.read(48)[15] == Accept.NOT_SUPPORTED
    client.close()
    assert open_reflector.final_stats()["bad_input"] == {"mode-invalid": 1}


# ---------------------------------------------------------------- test packets


async def _authenticated_session(
    address: str, keys_file: Path, sender_port: int
) -> tuple[Any, TestSessionParams]:
    host, port = split_hostport(address)
    config = MeasurementConfig(
        host=host,
        port=port,
        mode=SecurityMode.AUTHENTICATED,
        key_id="alice",
        keys=KeyChain.from_pfs_file(str(keys_file)),
    )
    control = ControlConnection(config, os.urandom)
    await control.connect()
    assert control.machine is not None
    await control.expect((SetupCompleted,), "setup")
    control.machine.request_session(
        SessionRequest(sender_port=sender_port, reflector_port=0, start_time=time.time(), timeout=1.0)
    )
    accepted = await control.expect((SessionAccepted,), "Accept-Session")
    assert isinstance(accepted, SessionAccepted)
    control.machine.start_sessions()
    ack = await control.expect((StartAcked,), "Start-Ack")
    assert isinstance(ack, StartAcked) and ack.accept is Accept.OK
    return control, accepted.params


def _wait_for_drops(reflector: Reflector, expected: dict[str, int]) -> dict[str, int]:
    deadline = time.monotonic() + WAIT
    while True:
        dropped = {k: v for k, v in reflector.stats()["reflector"]["dropped"].items() if v}
        if dropped == expected or time.monotonic() > deadline:
            return dropped
        time.sleep(0.2)


def test_bad_test_packets_are_dropped_and_counted(reflector_factory: Any, pfs_keys: Path) -> None:
    reflector: Reflector = reflector_factory("--keys", str(pfs_keys))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    stranger.bind(("127.0.0.1", 0))
    sender.settimeout(WAIT)

    async def scenario() -> None:
        control, params = await _authenticated_session(reflector.address, pfs_keys, sender.getsockname()[1])
        try:
            target = (params.reflector_address, params.reflector_port)
            codec = TestPacketCodec(params.mode, params.keys)
            buf = codec.prepare_sender(0, b"")
            valid = bytes(codec.stamp_sender(buf, unix_to_ntp(time.time()), 0x8001))
            sender.sendto(valid, target)
            reply = codec.decode_reflector(sender.recv(2048))  # the session is live and keyed
            assert reply.sender_seq == 0
            tampered = bytearray(valid)
            tampered[3] ^= 0xFF  # the encrypted sequence block no longer matches its HMAC
            sender.sendto(bytes(tampered), target)
            sender.sendto(b"\x00" * 10, target)  # shorter than any sender packet
            stranger.sendto(valid, target)  # right packet, unknown sender port
            assert _wait_for_drops(reflector, {"bad-hmac": 1, "short": 1, "unknown-sender": 1}) == {
                "bad-hmac": 1,
                "short": 1,
                "unknown-sender": 1,
            }
        finally:
            await control.close()

    try:
        asyncio.run(scenario())
    finally:
        sender.close()
        stranger.close()
    assert reflector.final_stats()["reflector"]["reflected"] == 1
    dropped = [line for line in reflector.err.lines if "dropped packet from" in line]
    assert len(dropped) == 3, reflector.err.text  # one line per reason (each has its own rate limit)


def test_a_flood_of_bad_input_is_counted_in_full_but_logged_rate_limited(open_reflector: Reflector) -> None:
    for _ in range(25):
        client = RawClient(open_reflector.address)
        _after_setup(client)
        client.sock.sendall(_nonzero_mbz())
        assert client.closed_by_server()
        client.close()
    assert open_reflector.final_stats()["bad_input"] == {"nonzero-mbz": 25}
    logged = [line for line in open_reflector.err.lines if "nonzero-mbz" in line]
    assert 1 <= len(logged) <= 3, logged


def test_control_message_with_bad_hmac_is_counted(reflector_factory: Any, pfs_keys: Path) -> None:
    """A wrong HMAC after a good setup (key mismatch mid-stream, or altered octets) ends that connection."""
    reflector: Reflector = reflector_factory("--keys", str(pfs_keys))
    host, port = split_hostport(reflector.address)
    keys = KeyChain.from_pfs_file(str(pfs_keys))
    config = MeasurementConfig(host=host, port=port, mode=SecurityMode.ENCRYPTED, key_id="alice", keys=keys)

    async def scenario() -> bytes:
        control = ControlConnection(config, os.urandom)
        await control.connect()
        try:
            assert control.machine is not None and control.writer is not None and control.reader is not None
            await control.expect((SetupCompleted,), "setup")
            control.machine.request_session(
                SessionRequest(sender_port=40000, reflector_port=0, start_time=time.time(), timeout=1.0)
            )
            wire = bytearray(control.machine.data_to_send())
            assert len(wire) == 112
            wire[-1] ^= 0x01  # the last octet of the (encrypted) HMAC block
            control.writer.write(bytes(wire))
            await control.writer.drain()
            return await asyncio.wait_for(control.reader.read(4096), WAIT)
        finally:
            await control.close()

    assert asyncio.run(scenario()) == b""  # closed with no reply
    stats = reflector.final_stats()
    assert stats["bad_input"] == {"bad-hmac": 1}
    assert stats["modes"] == {"encrypted": 1}
    assert stats["sessions"].get("requested", 0) == 0
