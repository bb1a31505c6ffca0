"""ControlClient <-> ControlServer in memory: every security mode, feature bits, and every failure reason.

The two machines only ever exchange the octets they produce, so these runs exercise exactly what crosses a
TCP connection; test_control_wire.py repeats the flow over real loopback sockets.
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import ipaddress
import os
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers import modes as cipher_modes
from hypothesis import given, settings
from hypothesis import strategies as st

from nf.twamp.control_client import NO_FEATURES, ClientConfig, ControlClient, SessionRequest
from nf.twamp.control_events import (
    ConnectionClosed,
    ConnectionFailed,
    ConnectionState,
    ControlFailure,
    SessionAccepted,
    SessionRejected,
    SessionRequested,
    SetupCompleted,
    StartAcked,
    StartNAcked,
    StartNRequested,
    StartRequested,
    StopNAcked,
    StopNRequested,
    StopRequested,
)
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
from nf.twamp.control_server import ControlServer, ServerConfig
from nf.twamp.keysource import KeyChain, SharedSecret
from nf.twamp.modes import Accept, Modes, SecurityMode
from nf.twamp.test_session import TestSessionParams

SECRET = b"correct horse battery staple"
CHAIN = KeyChain({"alice": SECRET})
ALL_SECURITY = Modes.UNAUTHENTICATED | Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED
ALL_FEATURES = Modes.INDIVIDUAL_SESSION_CONTROL | Modes.REFLECT_OCTETS | Modes.SYMMETRICAL_SIZE
START = 1_700_000_000.0
SPIS = bytes.fromhex("0102030405060708a1a2a3a4a5a6a7a8")


class SpiTable:
    """A static RFC 7717 key source: SPIi|SPIr -> prf(SK_d, "IPPM") (here just fixed octets)."""

    def __init__(self, table: dict[bytes, bytes]) -> None:
        self._table = table

    def secret_for(self, key_id: bytes) -> SharedSecret | None:
        secret = self._table.get(key_id[:16])
        return SharedSecret(secret) if secret is not None else None


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


class Pair:
    def __init__(
        self,
        server: ServerConfig,
        client: ClientConfig,
        *,
        local: str = "127.0.0.1",
        remote: str = "127.0.0.2",
        chunk: int | None = None,
    ) -> None:
        self.server = ControlServer(
            server, rng=seeded(1), start_time=START, local_address=remote, peer_address=local
        )
        self.client = ControlClient(client, rng=seeded(2), local_address=local, peer_address=remote)
        self.chunk = chunk
        self.server_events: list[Any] = []
        self.client_events: list[Any] = []
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []

    def _deliver(self, data: bytes, receive: Callable[[bytes], None]) -> None:
        step = self.chunk or len(data) or 1
        for i in range(0, len(data), step):
            receive(data[i : i + step])

    def pump(self) -> None:
        for _ in range(50):
            down, up = self.server.data_to_send(), self.client.data_to_send()
            if not down and not up:
                break
            if down:
                self.to_client.append(down)
            self._deliver(down, self.client.receive_data)
            if up:
                self.to_server.append(up)
            self._deliver(up, self.server.receive_data)
        while (event := self.server.next_event()) is not None:
            self.server_events.append(event)
        while (client_event := self.client.next_event()) is not None:
            self.client_events.append(client_event)

    def take(self) -> tuple[list[Any], list[Any]]:
        self.pump()
        server, client = self.server_events, self.client_events
        self.server_events, self.client_events = [], []
        return server, client


def server_config(**kw: Any) -> ServerConfig:
    base: dict[str, Any] = {"modes": ALL_SECURITY | ALL_FEATURES, "key_source": CHAIN, "count": 1024}
    base.update(kw)
    return ServerConfig(**base)


def client_config(*preference: Modes, **kw: Any) -> ClientConfig:
    base: dict[str, Any] = {"mode_preference": preference, "key_id": b"alice", "key_source": CHAIN}
    base.update(kw)
    return ClientConfig(**base)


def setup(pair: Pair) -> tuple[SetupCompleted, SetupCompleted]:
    server, client = pair.take()
    assert len(server) == 1 and isinstance(server[0], SetupCompleted), server
    assert len(client) == 1 and isinstance(client[0], SetupCompleted), client
    return server[0], client[0]


def request(pair: Pair, req: SessionRequest, port: int, server_octets: int = 0) -> TestSessionParams:
    pair.client.request_session(req)
    server, _ = pair.take()
    assert len(server) == 1 and isinstance(server[0], SessionRequested)
    server_params = pair.server.accept_session(port, now=START + 1, server_octets=server_octets)
    _, client = pair.take()
    assert len(client) == 1 and isinstance(client[0], SessionAccepted)
    client_params = client[0].params
    same_but_keys(server_params, client_params)
    return client_params


def state_of(machine: ControlServer | ControlClient) -> ConnectionState:
    """Read through a call so mypy does not carry a narrowed state across protocol steps."""
    return machine.state


def same_but_keys(a: TestSessionParams, b: TestSessionParams) -> None:
    assert replace(a, keys=None) == replace(b, keys=None)
    assert (a.keys is None) == (b.keys is None)
    if a.keys is not None and b.keys is not None:
        assert a.keys.hmac16(b"probe") == b.keys.hmac16(b"probe")
        assert a.keys.ecb_encrypt(bytes(16)) == b.keys.ecb_encrypt(bytes(16))


SECURITY = [Modes.UNAUTHENTICATED, Modes.AUTHENTICATED, Modes.ENCRYPTED, Modes.MIXED]


@pytest.mark.parametrize("security", SECURITY, ids=lambda m: m.name)
@pytest.mark.parametrize("features", [Modes(0), ALL_FEATURES], ids=["plain", "features"])
def test_full_session_in_every_mode(security: Modes, features: Modes) -> None:
    pair = Pair(server_config(), client_config(security, features=features))
    server_setup, client_setup = setup(pair)
    assert server_setup.mode == client_setup.mode == security | features
    expected_security = SecurityMode.from_modes(int(security))
    assert server_setup.security is client_setup.security is expected_security
    protected = security != Modes.UNAUTHENTICATED
    assert server_setup.key_id == client_setup.key_id == (b"alice" if protected else b"")
    assert client_setup.server_start_time == START
    assert pair.server.awaiting_client and pair.client.idle

    reflect = 8 if features else 0
    explicit = SessionRequest(
        sender_port=5000,
        reflector_port=6000,
        start_time=START + 5,
        timeout=2.5,
        padding_length=41,
        dscp=46,
        sender_address="127.0.0.1",
        reflector_address="127.0.0.2",
        octets_to_reflect=reflect,
        padding_to_reflect=reflect,
    )
    first = request(pair, explicit, port=6002, server_octets=0xBEEF if features else 0)
    assert (first.sender_address, first.sender_port) == ("127.0.0.1", 5000)
    assert (first.reflector_address, first.reflector_port) == ("127.0.0.2", 6002)
    assert (first.padding_length, first.dscp, first.timeout, first.start_time) == (41, 46, 2.5, START + 5)
    assert first.reflect_octets == reflect
    assert first.server_octets == (b"\xbe\xef" if features else b"\0\0")
    assert first.symmetric is bool(features)
    assert first.mode is expected_security
    assert (first.keys is not None) is (security in (Modes.AUTHENTICATED, Modes.ENCRYPTED))
    assert first.sid[:4] == ipaddress.IPv4Address("127.0.0.2").packed

    zero_addresses = SessionRequest(sender_port=5001, reflector_port=0, start_time=START, timeout=1.0)
    second = request(pair, zero_addresses, port=6003)
    assert (second.sender_address, second.reflector_address) == ("127.0.0.1", "127.0.0.2")
    assert second.sid != first.sid

    pair.client.start_sessions()
    server, _ = pair.take()
    assert server == [StartRequested((first.sid, second.sid))]
    pair.server.ack_start()
    _, client = pair.take()
    assert client == [StartAcked(Accept.OK)]
    assert pair.server.state is pair.client.state is ConnectionState.TESTING
    assert pair.server.running == {first.sid, second.sid}

    pair.client.stop_sessions()
    server, _ = pair.take()
    assert server == [StopRequested(Accept.OK, (first.sid, second.sid))]
    assert state_of(pair.server) is ConnectionState.REQUEST and not pair.server.running

    pair.server.receive_data(b"")
    pair.client.receive_data(b"")
    server, client = pair.take()
    assert server == [ConnectionClosed()] and client == [ConnectionClosed()]


@pytest.mark.parametrize("security", SECURITY, ids=lambda m: m.name)
def test_individual_session_control(security: Modes) -> None:
    pair = Pair(server_config(), client_config(security, features=Modes.INDIVIDUAL_SESSION_CONTROL))
    setup(pair)
    req = SessionRequest(sender_port=5000, reflector_port=6000, start_time=START, timeout=1.0)
    a = request(pair, req, port=7000)
    b = request(pair, req, port=7001)

    pair.client.start_n([b.sid])
    server, _ = pair.take()
    assert server == [StartNRequested((b.sid,))]
    pair.server.ack_start_n()
    _, client = pair.take()
    assert client == [StartNAcked(Accept.OK, (b.sid,))]
    assert pair.server.running == {b.sid}

    c = request(pair, req, port=7002)  # allowed while another session runs
    pair.client.start_n([a.sid, c.sid])
    pair.take()
    pair.server.ack_start_n(Accept.TEMPORARY_RESOURCE_LIMITATION)
    _, client = pair.take()
    assert client == [StartNAcked(Accept.TEMPORARY_RESOURCE_LIMITATION, (a.sid, c.sid))]
    assert pair.server.running == {b.sid}

    pair.client.stop_n([b.sid])
    server, _ = pair.take()
    assert server == [StopNRequested((b.sid,))]
    pair.server.ack_stop_n()
    _, client = pair.take()
    assert client == [StopNAcked(Accept.OK, (b.sid,))]
    assert not pair.server.running and pair.server.state is ConnectionState.REQUEST


def test_ipv6_control_connection_and_sessions() -> None:
    pair = Pair(server_config(), client_config(Modes.ENCRYPTED), local="::1", remote="2001:db8::7")
    setup(pair)
    params = request(pair, SessionRequest(sender_port=1, reflector_port=2, start_time=START, timeout=1), 3)
    assert params.sender_address == "::1" and params.reflector_address == "2001:db8::7"
    assert params.sid[:4] == ipaddress.IPv6Address("2001:db8::7").packed[-4:]


def test_byte_by_byte_delivery() -> None:
    pair = Pair(server_config(), client_config(Modes.ENCRYPTED, features=ALL_FEATURES), chunk=1)
    setup(pair)
    params = request(pair, SessionRequest(sender_port=1, reflector_port=2, start_time=START, timeout=1), 3)
    assert params.keys is not None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=40), st.sampled_from(SECURITY))
def test_any_segmentation_gives_the_same_session(cuts: list[int], security: Modes) -> None:
    """Record a whole session's octets per direction, then replay them into fresh machines cut anywhere."""
    reference = Pair(server_config(), client_config(security, features=ALL_FEATURES))
    setup(reference)
    req = SessionRequest(sender_port=1, reflector_port=2, start_time=START, timeout=1.0, octets_to_reflect=2)
    expected = request(reference, req, port=9000, server_octets=5)
    reference.client.start_n([expected.sid])
    reference.pump()
    reference.server.ack_start_n()
    reference.pump()
    client_octets = b"".join(reference.to_server)

    replay = ControlServer(
        server_config(), rng=seeded(1), start_time=START, local_address="127.0.0.2", peer_address="127.0.0.1"
    )
    replay.data_to_send()
    seen: list[Any] = []
    position, index = 0, 0
    while position < len(client_octets):
        size = cuts[index % len(cuts)]
        index += 1
        replay.receive_data(client_octets[position : position + size])
        position += size
        while (event := replay.next_event()) is not None:
            seen.append(event)
            if isinstance(event, SessionRequested):
                same_but_keys(replay.accept_session(9000, now=START + 1, server_octets=5), expected)
            elif isinstance(event, StartNRequested):
                replay.ack_start_n()
    assert [type(e) for e in seen] == [SetupCompleted, SessionRequested, StartNRequested]
    assert replay.running == {expected.sid}


def test_preference_chain_picks_first_offered_and_only_offered_features() -> None:
    server = server_config(modes=Modes.UNAUTHENTICATED | Modes.AUTHENTICATED | Modes.REFLECT_OCTETS)
    client = client_config(Modes.ENCRYPTED, Modes.AUTHENTICATED, Modes.UNAUTHENTICATED, features=ALL_FEATURES)
    pair = Pair(server, client)
    server_setup, _ = setup(pair)
    assert server_setup.mode == Modes.AUTHENTICATED | Modes.REFLECT_OCTETS
    with pytest.raises(RuntimeError):
        pair.client.start_n([])  # Individual Session Control was not offered


def test_wrong_key_fails_both_sides_cleanly() -> None:
    other = KeyChain({"alice": b"not the same secret"})
    pair = Pair(server_config(), client_config(Modes.AUTHENTICATED, key_source=other))
    server, client = pair.take()
    assert server == [ConnectionFailed(ControlFailure.BAD_TOKEN, server[0].detail, Accept.FAILURE)]
    assert client == [ConnectionFailed(ControlFailure.SERVER_REFUSED, client[0].detail, Accept.FAILURE)]
    assert pair.server.state is pair.client.state is ConnectionState.CLOSED
    for event in server + client:
        assert SECRET.hex() not in repr(event) and "not the same" not in repr(event)


def test_unknown_key_id() -> None:
    chain = KeyChain({"mallory": SECRET})
    pair = Pair(server_config(), client_config(Modes.ENCRYPTED, key_id=b"mallory", key_source=chain))
    server, client = pair.take()
    assert [(e.reason, e.accept) for e in server] == [(ControlFailure.UNKNOWN_KEY_ID, Accept.FAILURE)]
    assert [(e.reason, e.accept) for e in client] == [(ControlFailure.SERVER_REFUSED, Accept.FAILURE)]


def test_no_common_mode_client_sends_mode_zero() -> None:
    pair = Pair(
        server_config(modes=Modes.UNAUTHENTICATED), client_config(Modes.ENCRYPTED, Modes.AUTHENTICATED)
    )
    server, client = pair.take()
    assert [e.reason for e in client] == [ControlFailure.NO_COMMON_MODE]
    assert [e.reason for e in server] == [ControlFailure.CLIENT_DECLINED]
    assert SetupResponse.decode(pair.to_server[0]).mode == 0


def test_server_offering_nothing_refuses() -> None:
    pair = Pair(server_config(modes=Modes(0), key_source=None), client_config(Modes.UNAUTHENTICATED))
    server, client = pair.take()
    assert [e.reason for e in server] == [ControlFailure.SERVER_REFUSED]
    assert [e.reason for e in client] == [ControlFailure.SERVER_REFUSED]


def test_undefined_accept_in_server_start_is_a_refusal_with_failure() -> None:
    """RFC 4656 s3.3: an Accept value the client does not know reads as 1, so the setup fails as refused."""
    config = client_config(Modes.UNAUTHENTICATED)
    client = ControlClient(config, rng=os.urandom, local_address="127.0.0.1", peer_address="127.0.0.1")
    client.receive_data(ServerGreeting(modes=1, challenge=bytes(16), salt=bytes(16), count=1024).encode())
    assert SetupResponse.decode(client.data_to_send()).mode == Modes.UNAUTHENTICATED
    start = bytearray(ServerStart(Accept.OK, bytes(16), 0).encode())
    start[15] = 7
    client.receive_data(bytes(start))
    event = client.next_event()
    assert isinstance(event, ConnectionFailed)
    assert (event.reason, event.accept) == (ControlFailure.SERVER_REFUSED, Accept.FAILURE)
    assert client.state is ConnectionState.CLOSED


def raw_server(**kw: Any) -> ControlServer:
    server = ControlServer(
        server_config(**kw),
        rng=os.urandom,
        start_time=START,
        local_address="127.0.0.1",
        peer_address="127.0.0.1",
    )
    assert len(server.data_to_send()) == 64
    return server


def events(server: ControlServer) -> list[Any]:
    out = []
    while (event := server.next_event()) is not None:
        out.append(event)
    return out


def server_start_accept(server: ControlServer) -> int:
    data = server.data_to_send()
    assert len(data) == 48
    return data[15]


@pytest.mark.parametrize(
    ("mode", "reason", "offered"),
    [
        (Modes.ENCRYPTED, ControlFailure.MODE_NOT_OFFERED, Modes.UNAUTHENTICATED | Modes.AUTHENTICATED),
        (Modes.AUTHENTICATED | Modes.ENCRYPTED, ControlFailure.MODE_INVALID, ALL_SECURITY),
        (Modes.REFLECT_OCTETS, ControlFailure.MODE_INVALID, ALL_SECURITY | Modes.REFLECT_OCTETS),
        (Modes.AUTHENTICATED | Modes.SYMMETRICAL_SIZE, ControlFailure.MODE_NOT_OFFERED, ALL_SECURITY),
        (Modes.UNAUTHENTICATED | 0x100, ControlFailure.MODE_NOT_OFFERED, ALL_SECURITY),
    ],
)
def test_bad_mode_selection_gets_accept_3(mode: int, reason: ControlFailure, offered: Modes) -> None:
    server = raw_server(modes=offered)
    server.receive_data(SetupResponse(mode=int(mode)).encode())
    assert server_start_accept(server) == Accept.NOT_SUPPORTED
    assert [(e.reason, e.accept) for e in events(server)] == [(reason, Accept.NOT_SUPPORTED)]
    assert server.state is ConnectionState.CLOSED


def test_ikev2_derived_mode() -> None:
    secret = bytes(range(20))  # what prf(SK_d, "IPPM") would give with PRF_HMAC_SHA1
    server = server_config(
        modes=Modes.AUTHENTICATED | Modes.IKEV2_DERIVED, ikev2_key_source=SpiTable({SPIS: secret})
    )
    client = client_config(
        Modes.AUTHENTICATED | Modes.IKEV2_DERIVED,
        ikev2_key_id=SPIS,
        ikev2_key_source=SpiTable({SPIS: secret}),
    )
    pair = Pair(server, client)
    server_setup, client_setup = setup(pair)
    assert server_setup.mode == 130 and server_setup.key_id == SPIS == client_setup.key_id
    response = SetupResponse.decode(pair.to_server[0][:164])
    assert response.mode == 130 and response.key_id == SPIS + bytes(64)
    assert request(pair, SessionRequest(sender_port=1, reflector_port=2, start_time=START, timeout=1), 3).keys


class BrokenKeySource:
    def secret_for(self, key_id: bytes) -> SharedSecret | None:
        raise ConnectionRefusedError("IKE daemon socket is gone")


def test_failing_key_source_gets_accept_2() -> None:
    server = server_config(
        modes=Modes.AUTHENTICATED | Modes.IKEV2_DERIVED, ikev2_key_source=BrokenKeySource()
    )
    client = client_config(
        Modes.AUTHENTICATED | Modes.IKEV2_DERIVED, ikev2_key_id=SPIS, ikev2_key_source=SpiTable({SPIS: b"x"})
    )
    server_events, client_events = Pair(server, client).take()
    assert [(e.reason, e.accept) for e in server_events] == [
        (ControlFailure.KEY_SOURCE_ERROR, Accept.INTERNAL_ERROR)
    ]
    assert [(e.reason, e.accept) for e in client_events] == [
        (ControlFailure.SERVER_REFUSED, Accept.INTERNAL_ERROR)
    ]


def test_failing_key_source_on_the_client_declines() -> None:
    client = client_config(
        Modes.AUTHENTICATED | Modes.IKEV2_DERIVED, ikev2_key_id=SPIS, ikev2_key_source=BrokenKeySource()
    )
    server = server_config(modes=Modes.AUTHENTICATED | Modes.IKEV2_DERIVED, ikev2_key_source=SpiTable({}))
    server_events, client_events = Pair(server, client).take()
    assert [e.reason for e in client_events] == [ControlFailure.KEY_SOURCE_ERROR]
    assert [e.reason for e in server_events] == [ControlFailure.CLIENT_DECLINED]


def test_ikev2_unknown_key_id_gets_accept_6() -> None:
    server = server_config(
        modes=Modes.ENCRYPTED | Modes.IKEV2_DERIVED, ikev2_key_source=SpiTable({SPIS: b"known sa secret"})
    )
    stale = bytes(16)
    client = client_config(
        Modes.ENCRYPTED | Modes.IKEV2_DERIVED,
        ikev2_key_id=stale,
        ikev2_key_source=SpiTable({stale: b"old sa"}),
    )
    pair = Pair(server, client)
    server_events, client_events = pair.take()
    assert [(e.reason, e.accept) for e in server_events] == [(ControlFailure.UNKNOWN_SA, Accept.UNKNOWN_SA)]
    assert [(e.reason, e.accept) for e in client_events] == [(ControlFailure.UNKNOWN_SA, Accept.UNKNOWN_SA)]


def test_ikev2_preference_falls_back_when_not_offered() -> None:
    """RFC 7717 s5.2: against a server without bit 7 the client behaves as a plain RFC 5357 client."""
    client = client_config(
        Modes.ENCRYPTED | Modes.IKEV2_DERIVED,
        Modes.ENCRYPTED,
        ikev2_key_id=SPIS,
        ikev2_key_source=SpiTable({SPIS: b"ike secret"}),
    )
    pair = Pair(server_config(), client)
    server_setup, client_setup = setup(pair)
    assert server_setup.mode == client_setup.mode == Modes.ENCRYPTED
    assert server_setup.key_id == b"alice"


def test_ikev2_bit_with_unauthenticated_is_plain_unauthenticated() -> None:
    server = server_config(modes=Modes.UNAUTHENTICATED | Modes.IKEV2_DERIVED, ikev2_key_source=SpiTable({}))
    pair = Pair(server, client_config(Modes.UNAUTHENTICATED | Modes.IKEV2_DERIVED))
    server_setup, _ = setup(pair)
    assert server_setup.security is SecurityMode.UNAUTHENTICATED and server_setup.mode == 129


@pytest.mark.parametrize(
    ("count", "exponent", "ok"), [(2**16, 16, True), (2**17, 16, False), (2**20, 20, True)]
)
def test_count_limit(count: int, exponent: int, ok: bool) -> None:
    pair = Pair(server_config(count=count), client_config(Modes.AUTHENTICATED, max_count_exponent=exponent))
    server, client = pair.take()
    if ok:
        assert isinstance(server[0], SetupCompleted) and isinstance(client[0], SetupCompleted)
    else:
        assert [e.reason for e in client] == [ControlFailure.COUNT_TOO_LARGE]
        assert [e.reason for e in server] == [ControlFailure.CLIENT_DECLINED]


def test_count_below_1024_is_refused_by_client() -> None:
    client = ControlClient(
        client_config(Modes.AUTHENTICATED), rng=os.urandom, local_address="::1", peer_address="::1"
    )
    client.receive_data(ServerGreeting(int(ALL_SECURITY), bytes(16), bytes(16), 512).encode())
    event = client.next_event()
    assert isinstance(event, ConnectionFailed) and event.reason is ControlFailure.BAD_FIELD
    assert SetupResponse.decode(client.data_to_send()).mode == 0


def open_server(features: Modes = NO_FEATURES, **kw: Any) -> ControlServer:
    """A server past setup in unauthenticated mode, so raw plaintext commands can be fed."""
    server = raw_server(**kw)
    server.receive_data(SetupResponse(mode=int(Modes.UNAUTHENTICATED | features)).encode())
    assert server_start_accept(server) == 0
    assert isinstance(server.next_event(), SetupCompleted)
    return server


def plain_request(**kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "sender_address": ipaddress.IPv4Address("127.0.0.1"),
        "receiver_address": ipaddress.IPv4Address("127.0.0.1"),
        "sender_port": 5000,
        "receiver_port": 6000,
        "padding_length": 0,
        "start_time": unix_to_ntp(START),
        "timeout": seconds_to_interval(1.0),
        "type_p": 0,
    }
    fields.update(kw)
    return RequestTwSession(**fields).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes([1]) + bytes(31), ControlFailure.UNKNOWN_COMMAND),  # OWAMP Request-Session is forbidden
        (bytes([4]) + bytes(31), ControlFailure.UNKNOWN_COMMAND),
        (bytes([0x42]) + bytes(31), ControlFailure.UNKNOWN_COMMAND),
        (bytes([2, 0, 1]) + bytes(29), ControlFailure.NONZERO_MBZ),
        (plain_request()[:1] + b"\x07" + plain_request()[2:], ControlFailure.BAD_IPVN),
        (StopSessions(Accept.OK, 0).encode(), ControlFailure.UNEXPECTED_MESSAGE),  # nothing started
        (
            NSessionsMessage(Command.START_N_SESSIONS, (bytes(16),)).encode(),
            ControlFailure.UNEXPECTED_MESSAGE,
        ),
    ],
)
def test_bad_commands_close_with_reason(data: bytes, reason: ControlFailure) -> None:
    server = open_server()
    server.receive_data(data)
    assert [e.reason for e in events(server)] == [reason]
    assert server.state is ConnectionState.CLOSED and server.data_to_send() == b""


def test_oversized_start_n_is_refused_before_reading_it() -> None:
    server = open_server(features=Modes.INDIVIDUAL_SESSION_CONTROL, max_sessions=4)
    header = NSessionsMessage(Command.START_N_SESSIONS, ()).encode()[:12] + (10**6).to_bytes(4, "big")
    server.receive_data(header)
    assert [e.reason for e in events(server)] == [ControlFailure.MESSAGE_TOO_LARGE]


def test_flood_of_unread_data_is_bounded() -> None:
    server = open_server()
    server.receive_data(plain_request())
    assert isinstance(server.next_event(), SessionRequested)
    server.receive_data(StartSessions().encode() * 1000)  # pipelined while a decision is pending
    assert [e.reason for e in events(server)] == [ControlFailure.MESSAGE_TOO_LARGE]


def test_short_message_then_eof_is_peer_closed() -> None:
    server = open_server()
    server.receive_data(plain_request()[:50])
    server.receive_data(b"")
    assert [e.reason for e in events(server)] == [ControlFailure.PEER_CLOSED]


def test_eof_during_setup_is_peer_closed() -> None:
    server = raw_server()
    server.receive_data(bytes(100))
    server.receive_data(b"")
    assert [e.reason for e in events(server)] == [ControlFailure.PEER_CLOSED]


def test_tampered_ciphertext_fails_hmac() -> None:
    pair = Pair(server_config(), client_config(Modes.ENCRYPTED))
    setup(pair)
    pair.client.request_session(SessionRequest(sender_port=1, reflector_port=2, start_time=START, timeout=1))
    wire = bytearray(pair.client.data_to_send())
    wire[20] ^= 0x01  # garbles block 2, flips one bit of block 3: the command block stays intact
    pair.server.receive_data(bytes(wire))
    assert [e.reason for e in events(pair.server)] == [ControlFailure.BAD_HMAC]


def test_tampered_server_reply_fails_hmac_on_client() -> None:
    pair = Pair(server_config(), client_config(Modes.AUTHENTICATED))
    setup(pair)
    pair.client.request_session(SessionRequest(sender_port=1, reflector_port=2, start_time=START, timeout=1))
    pair.pump()
    pair.server_events.clear()
    pair.server.accept_session(7000, now=START)
    wire = bytearray(pair.server.data_to_send())
    wire[-1] ^= 0x80
    pair.client.receive_data(bytes(wire))
    event = pair.client.next_event()
    assert isinstance(event, ConnectionFailed) and event.reason is ControlFailure.BAD_HMAC


def test_unsolicited_server_message_is_unexpected() -> None:
    pair = Pair(server_config(), client_config(Modes.UNAUTHENTICATED))
    setup(pair)
    pair.client.receive_data(bytes(48))
    event = pair.client.next_event()
    assert isinstance(event, ConnectionFailed) and event.reason is ControlFailure.UNEXPECTED_MESSAGE


def test_type_p_and_unnegotiated_reflect_fields_are_refused_per_request() -> None:
    server = open_server()
    server.receive_data(plain_request(type_p=1))
    assert [(e.reason, e.accept) for e in events(server)] == [
        (ControlFailure.BAD_FIELD, Accept.NOT_SUPPORTED)
    ]
    assert server.data_to_send()[0] == Accept.NOT_SUPPORTED
    server.receive_data(plain_request(octets_to_reflect=4))
    assert [(e.reason, e.accept) for e in events(server)] == [
        (ControlFailure.NONZERO_MBZ, Accept.NOT_SUPPORTED)
    ]
    assert server.state is ConnectionState.REQUEST


def test_session_limit() -> None:
    server = open_server(max_sessions=1)
    server.receive_data(plain_request())
    assert isinstance(server.next_event(), SessionRequested)
    server.accept_session(7000, now=START)
    server.data_to_send()
    server.receive_data(plain_request())
    assert [(e.reason, e.accept) for e in events(server)] == [
        (ControlFailure.SESSION_LIMIT, Accept.PERMANENT_RESOURCE_LIMITATION)
    ]
    reply = server.data_to_send()
    assert len(reply) == 48 and reply[0] == Accept.PERMANENT_RESOURCE_LIMITATION


def test_rejected_session_reaches_client() -> None:
    pair = Pair(server_config(), client_config(Modes.MIXED))
    setup(pair)
    pair.client.request_session(SessionRequest(sender_port=1, reflector_port=2, start_time=START, timeout=1))
    pair.pump()
    with pytest.raises(RuntimeError):
        pair.server.ack_start()  # not what is pending
    pair.server.reject_session(Accept.TEMPORARY_RESOURCE_LIMITATION)
    pair.server_events.clear()
    _, client = pair.take()
    assert client == [SessionRejected(Accept.TEMPORARY_RESOURCE_LIMITATION)]
    assert pair.client.idle and pair.server.awaiting_client


def test_start_n_with_unknown_sid_is_refused_with_ack() -> None:
    server = open_server(features=Modes.INDIVIDUAL_SESSION_CONTROL)
    server.receive_data(NSessionsMessage(Command.START_N_SESSIONS, (b"x" * 16,)).encode())
    assert [(e.reason, e.accept) for e in events(server)] == [(ControlFailure.UNKNOWN_SID, Accept.FAILURE)]
    ack = NSessionsMessage.decode(server.data_to_send())
    assert ack.command is Command.START_N_ACK and ack.accept is Accept.FAILURE and ack.sids == (b"x" * 16,)
    assert server.state is ConnectionState.REQUEST


def test_stop_with_wrong_session_count_fails_like_twampd() -> None:
    def started() -> ControlServer:
        server = open_server()
        server.receive_data(plain_request())
        server.next_event()
        server.accept_session(7000, now=START)
        server.receive_data(StartSessions().encode())
        assert isinstance(server.next_event(), StartRequested)
        server.ack_start()
        return server

    server = started()
    server.receive_data(StopSessions(Accept.OK, 5).encode())
    assert [(e.reason, e.accept) for e in events(server)] == [(ControlFailure.BAD_FIELD, None)]
    assert state_of(server) is ConnectionState.CLOSED
    server = started()
    server.receive_data(StopSessions(Accept.FAILURE, 1).encode())
    stop = events(server)
    assert len(stop) == 1 and isinstance(stop[0], StopRequested) and stop[0].accept is Accept.FAILURE


def test_duplicate_sids_get_distinct_values_even_with_a_constant_rng() -> None:
    server = ControlServer(
        server_config(),
        rng=lambda n: bytes(n),
        start_time=START,
        local_address="127.0.0.1",
        peer_address="127.0.0.1",
    )
    server.receive_data(SetupResponse(mode=1).encode())
    events(server)
    sids = set()
    for _ in range(3):
        server.receive_data(plain_request())
        events(server)
        sids.add(server.accept_session(7000, now=START).sid)
    assert len(sids) == 3


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ServerConfig(modes=Modes.AUTHENTICATED)  # no key source
    with pytest.raises(ValueError):
        ServerConfig(modes=Modes.UNAUTHENTICATED, count=3000)
    with pytest.raises(ValueError):
        ServerConfig(modes=Modes.UNAUTHENTICATED | Modes.IKEV2_DERIVED)
    with pytest.raises(ValueError):
        ClientConfig(mode_preference=(Modes.AUTHENTICATED | Modes.ENCRYPTED,))
    with pytest.raises(ValueError):
        ClientConfig(mode_preference=(Modes.ENCRYPTED,))  # no key
    with pytest.raises(ValueError):
        ClientConfig(mode_preference=(Modes.UNAUTHENTICATED,), features=Modes.IKEV2_DERIVED)


def test_encrypted_transcript_decodes_with_independent_crypto() -> None:
    """Decrypt both directions of a real exchange with hashlib/cryptography alone, following RFC 4656 s3.1."""

    def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
        dec = Cipher(algorithms.AES(key), cipher_modes.CBC(iv)).decryptor()
        return dec.update(data) + dec.finalize()

    def mac(key: bytes, data: bytes) -> bytes:
        return std_hmac.new(key, data, hashlib.sha1).digest()[:16]

    pair = Pair(server_config(), client_config(Modes.ENCRYPTED))
    setup(pair)
    request(pair, SessionRequest(sender_port=5000, reflector_port=6000, start_time=START, timeout=2.0), 7000)
    up, server_octets = b"".join(pair.to_server), b"".join(pair.to_client)

    greeting = ServerGreeting.decode(server_octets[:64])
    setup_response = SetupResponse.decode(up[:164])
    kek = hashlib.pbkdf2_hmac("sha1", SECRET, greeting.salt, greeting.count, 16)
    token = cbc_decrypt(kek, bytes(16), setup_response.token)
    assert token[:16] == greeting.challenge
    aes_key, hmac_key = token[16:32], token[32:64]

    client_stream = cbc_decrypt(aes_key, setup_response.client_iv, up[164:])
    assert len(client_stream) == 112
    assert client_stream[0] == Command.REQUEST_TW_SESSION
    assert client_stream[96:] == mac(hmac_key, client_stream[:96])
    sent = RequestTwSession.decode(client_stream)
    assert (sent.sender_port, sent.receiver_port) == (5000, 6000)

    server_start = server_octets[64:112]
    assert server_start[15] == Accept.OK
    server_stream = cbc_decrypt(aes_key, server_start[16:32], server_octets[96:])
    start_block, accept_session = server_stream[:16], server_stream[16:64]
    assert start_block == unix_to_ntp(START).to_bytes(8, "big") + bytes(8)
    # owamp: Server-Start's encrypted block is covered by the first HMAC the server sends.
    assert accept_session[32:] == mac(hmac_key, start_block + accept_session[:32])
    assert accept_session[0] == Accept.OK and int.from_bytes(accept_session[2:4], "big") == 7000
