"""The control machines over real TCP sockets on loopback (IPv4 and IPv6), and Wireshark reading our octets.

The machines are driven directly from non-blocking sockets in one thread, so the octets cross the kernel's
TCP stack in whatever segmentation it chooses. tshark (an independent TWAMP-Control dissector) then has to
find every field where RFC 4656/5357 put it. Wireshark 4.0 knows nothing of RFC 6038 fields (it shows octets
20-23 of Accept-Session as MBZ), reads the Timeout fraction as microseconds and shows only Mode and the
first 40 octets of Key ID in Set-Up-Response (packet-twamp.c), so the Timeout used here is whole seconds and
the RFC 6038 octets are checked as raw octets.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nf.twamp.control_client import NO_FEATURES, ClientConfig, ControlClient, SessionRequest
from nf.twamp.control_events import (
    ConnectionClosed,
    SessionAccepted,
    SessionRequested,
    SetupCompleted,
    StartAcked,
    StartRequested,
    StopRequested,
)
from nf.twamp.control_server import ControlServer, ServerConfig
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import Accept, Modes
from tests.conftest import WAIT, tshark

CHAIN = KeyChain({"wire-test": b"loopback secret"})
OFFERED = Modes.UNAUTHENTICATED | Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED | Modes.REFLECT_OCTETS
START = 1_700_000_000.0


class WireRun:
    """One control connection over loopback; the server answers every decision itself."""

    def __init__(self, host: str, preference: Modes, features: Modes = NO_FEATURES) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.sockets: list[socket.socket] = [self.listener]
        self.listener.bind((host, 0))
        self.listener.listen(1)
        self.port: int = self.listener.getsockname()[1]
        self.host = host
        self.preference, self.features = preference, features
        self.server_events: list[Any] = []
        self.client_events: list[Any] = []
        self.sent: dict[str, list[bytes]] = {"server": [], "client": []}
        self.server_params: list[Any] = []  # what accept_session handed the reflector side

    def connect(self) -> None:
        client_sock = socket.create_connection((self.host, self.port), timeout=WAIT)
        self.sockets.append(client_sock)
        server_sock, _ = self.listener.accept()
        self.sockets.append(server_sock)
        for sock in (client_sock, server_sock):
            sock.setblocking(False)
        self.client_sock, self.server_sock = client_sock, server_sock
        local, peer = client_sock.getsockname()[0], server_sock.getsockname()[0]
        self.server = ControlServer(
            ServerConfig(modes=OFFERED, key_source=CHAIN, count=1024),
            rng=os.urandom,
            start_time=START,
            local_address=peer,
            peer_address=local,
        )
        self.client = ControlClient(
            ClientConfig(
                mode_preference=(self.preference,),
                key_id=b"wire-test",
                key_source=CHAIN,
                features=self.features,
            ),
            rng=os.urandom,
            local_address=local,
            peer_address=peer,
        )

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def _flush(self) -> None:
        for name, sock, machine in (
            ("server", self.server_sock, self.server),
            ("client", self.client_sock, self.client),
        ):
            data = machine.data_to_send()
            if data:
                self.sent[name].append(data)
                sock.setblocking(True)
                sock.sendall(data)
                sock.setblocking(False)

    def _answer(self, event: Any) -> None:
        if isinstance(event, SessionRequested):
            self.server_params.append(self.server.accept_session(40000, now=START + 1, server_octets=0x0A0B))
        elif isinstance(event, StartRequested):
            self.server.ack_start(Accept.OK)

    def until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not done():
            assert time.monotonic() < deadline, (self.server_events, self.client_events)
            self._flush()
            readable, _, _ = select.select([self.server_sock, self.client_sock], [], [], 0.05)
            for sock in readable:
                data = sock.recv(65536)
                (self.server if sock is self.server_sock else self.client).receive_data(data)
            while (event := self.server.next_event()) is not None:
                self.server_events.append(event)
                self._answer(event)
            while (client_event := self.client.next_event()) is not None:
                self.client_events.append(client_event)
        self._flush()

    def session(self) -> None:
        self.connect()
        self.until(lambda: any(isinstance(e, SetupCompleted) for e in self.client_events))
        reflecting = bool(self.features & Modes.REFLECT_OCTETS)
        self.client.request_session(
            SessionRequest(
                sender_port=5000,
                reflector_port=6000,
                start_time=START + 3,
                timeout=3.0,
                padding_length=41,
                dscp=46,
                octets_to_reflect=6 if reflecting else 0,
                padding_to_reflect=2 if reflecting else 0,  # the two Server Octets, as fnoobt's client asks
            )
        )
        self.until(lambda: any(isinstance(e, SessionAccepted) for e in self.client_events))
        self.client.start_sessions()
        self.until(lambda: any(isinstance(e, StartAcked) for e in self.client_events))
        self.client.stop_sessions()
        self.until(lambda: any(isinstance(e, StopRequested) for e in self.server_events))
        self.client_sock.shutdown(socket.SHUT_WR)
        self.until(lambda: any(isinstance(e, ConnectionClosed) for e in self.server_events))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize(
    "security", [Modes.UNAUTHENTICATED, Modes.AUTHENTICATED, Modes.ENCRYPTED, Modes.MIXED]
)
def test_session_over_loopback_tcp(host: str, security: Modes) -> None:
    run = WireRun(host, security, Modes.REFLECT_OCTETS)
    try:
        run.session()
    finally:
        run.close()
    accepted = [e for e in run.client_events if isinstance(e, SessionAccepted)]
    assert len(accepted) == 1
    params = accepted[0].params
    assert (
        params.reflector_port == 40000 and params.reflector_address == host and params.sender_address == host
    )
    assert params.reflect_octets == 6 and params.server_octets == b"\x0a\x0b"
    # RFC 6038 Length of padding to reflect reaches the test plane on both sides, apart from Octets to be
    # reflected: it is the count of padding octets the reflector returns (RFC 6038 s5.1.3, EID 6408).
    assert params.padding_to_reflect == 2
    assert [p.padding_to_reflect for p in run.server_params] == [2]
    assert run.server_params[0].reflect_octets == 6
    assert (params.keys is not None) is (security in (Modes.AUTHENTICATED, Modes.ENCRYPTED))
    assert [type(e).__name__ for e in run.server_events] == [
        "SetupCompleted",
        "SessionRequested",
        "StartRequested",
        "StopRequested",
        "ConnectionClosed",
    ]


def _wait_until_capturing(pcap: Path, run: WireRun) -> None:
    """dumpcap announces itself slightly before its filter is live: probe with empty TCP connections (no
    payload, so no TWAMP rows) until one shows up in the file."""
    for _ in range(600):
        with socket.create_connection((run.host, run.port), timeout=WAIT):
            accepted, _ = run.listener.accept()
            accepted.close()
        if pcap.exists() and tshark(["-r", str(pcap)]).strip():
            return
        time.sleep(0.05)
    raise AssertionError("the capture never saw a probe connection")


def _tshark_messages(pcap: Path, port: int) -> list[dict[str, str]]:
    names = [
        "tcp.srcport",
        "twamp.control.modes",
        "twamp.control.count",
        "twamp.control.mode",
        "twamp.control.keyid",
        "twamp.control.accept",
        "twamp.control.iv",
        "twamp.control.server_uptime",
        "twamp.control.command",
        "twamp.control.ipvn",
        "twamp.control.sender_port",
        "twamp.control.receiver_port",
        "twamp.control.sender_ipv4",
        "twamp.control.receiver_ipv4",
        "twamp.control.padding_length",
        "twamp.control.start_time",
        "twamp.control.timeout",
        "twamp.control.type-p",
        "twamp.control.session_id",
        "twamp.control.numsessions",
    ]
    args = ["-r", str(pcap), "-d", f"tcp.port=={port},twamp.control", "-Y", "twamp.control"]
    args += ["-T", "fields", "-E", "separator=|", "-E", "occurrence=f", "-o", "gui.column.format:Time,%Yut"]
    for name in names:
        args += ["-e", name]
    rows = []
    for line in tshark(args).splitlines():
        rows.append({name: value for name, value in zip(names, line.split("|"), strict=True) if value})
    return rows


@pytest.mark.tshark
def test_wireshark_finds_every_field_where_we_put_it(capture: Any) -> None:
    run = WireRun("127.0.0.1", Modes.UNAUTHENTICATED, Modes.REFLECT_OCTETS)
    try:
        cap = capture(f"tcp port {run.port}")
        _wait_until_capturing(cap.path, run)
        run.session()
    finally:
        run.close()
    rows = _tshark_messages(cap.stop(), run.port)
    by_side = [(row.pop("tcp.srcport") == str(run.port), row) for row in rows]
    server_rows = [row for from_server, row in by_side if from_server]
    client_rows = [row for from_server, row in by_side if not from_server]

    greeting, server_start, accept_session, start_ack = server_rows
    assert int(greeting["twamp.control.modes"]) == int(OFFERED)
    assert greeting["twamp.control.count"] == "1024"
    assert server_start["twamp.control.accept"] == "0"
    assert server_start["twamp.control.server_uptime"].startswith("Nov 14, 2023 22:13:20")
    assert accept_session["twamp.control.accept"] == "0"
    assert accept_session["twamp.control.receiver_port"] == "40000"
    sid = accept_session["twamp.control.session_id"]
    assert sid.startswith("7f000001") and len(sid) == 32
    assert start_ack["twamp.control.accept"] == "0"

    setup, request, start, stop = client_rows
    assert int(setup["twamp.control.mode"], 0) == int(Modes.UNAUTHENTICATED | Modes.REFLECT_OCTETS)
    assert request["twamp.control.command"] == "5" and request["twamp.control.ipvn"] == "4"
    assert (request["twamp.control.sender_port"], request["twamp.control.receiver_port"]) == ("5000", "6000")
    assert request["twamp.control.sender_ipv4"] == request["twamp.control.receiver_ipv4"] == "0.0.0.0"
    assert request["twamp.control.padding_length"] == "41"
    assert request["twamp.control.start_time"].startswith("Nov 14, 2023 22:13:23")
    assert request["twamp.control.timeout"].startswith("3.000000000")
    assert int(request["twamp.control.type-p"], 0) == 46 << 24
    assert start["twamp.control.command"] == "2"
    assert stop["twamp.control.command"] == "3" and stop["twamp.control.numsessions"] == "1"

    # RFC 6038 octets, which Wireshark 4.0 shows as MBZ: Reflected octets and Server octets at 20-23.
    accept_octets = b"".join(run.sent["server"])[64 + 48 : 64 + 48 + 48]
    assert accept_octets[20:24] == b"\x00\x06\x0a\x0b"
    # ... and Octets to be reflected, Length of padding to reflect at 88-91 of Request-TW-Session.
    request_octets = b"".join(run.sent["client"])[164 : 164 + 112]
    assert request_octets[88:92] == b"\x00\x06\x00\x02"


@pytest.mark.tshark
def test_wireshark_reads_setup_of_a_protected_connection(capture: Any) -> None:
    run = WireRun("127.0.0.1", Modes.ENCRYPTED)
    try:
        cap = capture(f"tcp port {run.port}")
        _wait_until_capturing(cap.path, run)
        run.session()
    finally:
        run.close()
    rows = _tshark_messages(cap.stop(), run.port)
    setup = next(row for row in rows if "twamp.control.mode" in row)
    assert int(setup["twamp.control.mode"], 0) == int(Modes.ENCRYPTED)
    # Wireshark 4.0 shows only the first 40 octets of the Key ID and neither Token nor Client-IV.
    assert bytes.fromhex(setup["twamp.control.keyid"]) == b"wire-test".ljust(40, b"\0")
    server_start = next(row for row in rows if "twamp.control.accept" in row and "twamp.control.iv" in row)
    server_octets = b"".join(run.sent["server"])
    assert server_start["twamp.control.iv"] == server_octets[64 + 16 : 64 + 32].hex()
