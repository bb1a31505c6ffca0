"""Fuzz target: random octets as the server side of a ControlClient's connection.

The client must turn every input into events (ConnectionFailed with a reason at worst) and never raise. The
first octet picks whether the fuzzed octets start at the Server Greeting or follow a real open-mode setup
with outstanding requests, so replies (Accept-Session, Start-Ack, Start-N-Ack) get parsed too.
"""

from __future__ import annotations

import random

from nf.twamp.control_client import ClientConfig, ControlClient, SessionRequest
from nf.twamp.control_messages import ServerGreeting, ServerStart
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import Accept, Modes

_CHAIN = KeyChain({"fuzz": b"fuzz secret"})
_CONFIG = ClientConfig(
    mode_preference=(Modes.ENCRYPTED, Modes.UNAUTHENTICATED),
    key_id=b"fuzz",
    key_source=_CHAIN,
    features=Modes.INDIVIDUAL_SESSION_CONTROL | Modes.REFLECT_OCTETS,
    max_count_exponent=12,
    max_message_size=1024,
)
_OPEN = int(Modes.UNAUTHENTICATED | Modes.INDIVIDUAL_SESSION_CONTROL | Modes.REFLECT_OCTETS)


def _client(scenario: int) -> ControlClient:
    client = ControlClient(
        _CONFIG, rng=random.Random(scenario).randbytes, local_address="127.0.0.1", peer_address="127.0.0.1"
    )
    if scenario == 1:
        client.receive_data(ServerGreeting(_OPEN, bytes(16), bytes(16), 1024).encode())
        client.receive_data(ServerStart(Accept.OK, bytes(16), 0).encode())
        client.request_session(SessionRequest(sender_port=1, reflector_port=2, start_time=0.0, timeout=1.0))
        client.start_sessions()
    client.data_to_send()
    return client


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    client = _client(data[0] % 2)
    chunk = 1 + (data[0] >> 1)
    body = data[1:]
    for start in range(0, len(body), chunk):
        client.receive_data(body[start : start + chunk])
        while client.next_event() is not None:
            pass
        client.data_to_send()
    client.receive_data(b"")
    while client.next_event() is not None:
        pass
