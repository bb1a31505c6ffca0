"""Fuzz target: random octets into a ControlServer after its greeting, in open and encrypted modes.

The machine must turn every input into events (ConnectionFailed with a reason at worst) and never raise.
The harness answers every decision the server asks for, so fuzzed inputs reach the request, start and
RFC 5938 states too. The first octet picks the scenario and how the rest is chunked.
"""

from __future__ import annotations

import random

from nf.twamp.control_client import ClientConfig, ControlClient
from nf.twamp.control_events import (
    SessionRequested,
    StartNRequested,
    StartRequested,
    StopNRequested,
)
from nf.twamp.control_server import ControlServer, ServerConfig
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import Accept, Modes

_CHAIN = KeyChain({"fuzz": b"fuzz secret"})
_MODES = (
    Modes.UNAUTHENTICATED
    | Modes.AUTHENTICATED
    | Modes.ENCRYPTED
    | Modes.MIXED
    | Modes.INDIVIDUAL_SESSION_CONTROL
    | Modes.REFLECT_OCTETS
    | Modes.SYMMETRICAL_SIZE
)
_CONFIG = ServerConfig(modes=_MODES, key_source=_CHAIN, count=1024, max_sessions=4)
_CLIENT = ClientConfig(
    mode_preference=(Modes.ENCRYPTED,),
    key_id=b"fuzz",
    key_source=_CHAIN,
    features=Modes.INDIVIDUAL_SESSION_CONTROL,
)


def _server(scenario: int) -> ControlServer:
    rng = random.Random(scenario).randbytes
    server = ControlServer(
        _CONFIG, rng=rng, start_time=1.7e9, local_address="127.0.0.1", peer_address="127.0.0.1"
    )
    greeting = server.data_to_send()
    if scenario == 1:  # a valid open-mode setup with Individual Session Control
        server.receive_data(
            (int(Modes.UNAUTHENTICATED | Modes.INDIVIDUAL_SESSION_CONTROL)).to_bytes(4, "big") + bytes(160)
        )
    elif scenario == 2:  # a real encrypted setup: fuzzed octets then hit the CBC stream and HMAC checks
        client = ControlClient(
            _CLIENT, rng=random.Random(7).randbytes, local_address="127.0.0.1", peer_address="127.0.0.1"
        )
        client.receive_data(greeting)
        server.receive_data(client.data_to_send())
    server.data_to_send()
    while server.next_event() is not None:
        pass
    return server


def _answer(server: ControlServer) -> None:
    while (event := server.next_event()) is not None:
        if isinstance(event, SessionRequested):
            server.accept_session(40000, now=1.7e9)
        elif isinstance(event, StartRequested):
            server.ack_start(Accept.OK)
        elif isinstance(event, StartNRequested):
            server.ack_start_n(Accept.OK)
        elif isinstance(event, StopNRequested):
            server.ack_stop_n(Accept.FAILURE)
    server.data_to_send()


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    server = _server(data[0] % 3)
    chunk = 1 + (data[0] >> 2)
    body = data[1:]
    for start in range(0, len(body), chunk):
        server.receive_data(body[start : start + chunk])
        _answer(server)
    server.receive_data(b"")
    _answer(server)
