"""TWAMP-Control codecs: hypothesis round trips for every message and strict rejection of bad octets."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nf.twamp.control_events import ControlFailure, MalformedMessage
from nf.twamp.control_messages import (
    AcceptSession,
    Command,
    NSessionsMessage,
    RequestTwSession,
    ServerGreeting,
    ServerStart,
    SetupResponse,
    StartAck,
    StartSessions,
    StopSessions,
    client_command_length,
    decode_client_command,
    interval_to_seconds,
    ntp_to_unix,
    seconds_to_interval,
    unix_to_ntp,
)
from nf.twamp.modes import Accept

RELAXED = settings(deadline=None)  # no timing assumptions on a loaded machine
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
b16 = st.binary(min_size=16, max_size=16)
accepts = st.sampled_from(list(Accept))
ipv4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
ipv6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))


@RELAXED
@given(u32, b16, b16, u32)
def test_server_greeting_round_trip(modes: int, challenge: bytes, salt: bytes, count: int) -> None:
    message = ServerGreeting(modes, challenge, salt, count)
    wire = message.encode()
    assert len(wire) == 64
    assert wire[:12] == bytes(12) and wire[52:] == bytes(12)
    assert struct.unpack_from("!I", wire, 12)[0] == modes and wire[16:32] == challenge
    assert ServerGreeting.decode(wire) == message


@RELAXED
@given(u32, st.binary(min_size=80, max_size=80), st.binary(min_size=64, max_size=64), b16)
def test_setup_response_round_trip(mode: int, key_id: bytes, token: bytes, iv: bytes) -> None:
    message = SetupResponse(mode, key_id, token, iv)
    wire = message.encode()
    assert len(wire) == 164 and wire[4:84] == key_id and wire[84:148] == token and wire[148:] == iv
    assert SetupResponse.decode(wire) == message


@RELAXED
@given(accepts, b16, u64)
def test_server_start_round_trip(accept: Accept, iv: bytes, start: int) -> None:
    message = ServerStart(accept, iv, start)
    wire = message.encode()
    assert len(wire) == 48 and wire[15] == accept and wire[16:32] == iv and wire[40:] == bytes(8)
    assert ServerStart.decode(wire) == message


@st.composite
def requests(draw: st.DrawFn) -> RequestTwSession:
    addresses: st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address] = (
        ipv4 if draw(st.booleans()) else ipv6
    )
    return RequestTwSession(
        sender_address=draw(addresses),
        receiver_address=draw(addresses),
        sender_port=draw(u16),
        receiver_port=draw(u16),
        padding_length=draw(u32),
        start_time=draw(u64),
        timeout=draw(u64),
        type_p=draw(u32),
        octets_to_reflect=draw(u16),
        padding_to_reflect=draw(u16),
        sid=draw(b16),
        hmac=draw(b16),
    )


@RELAXED
@given(requests())
def test_request_tw_session_round_trip(message: RequestTwSession) -> None:
    wire = message.encode()
    assert len(wire) == 112 and wire[0] == 5 and wire[1] == message.ipvn
    assert wire[2:12] == bytes(10)  # Conf-Sender, Conf-Receiver, slots, packets
    assert struct.unpack_from("!HH", wire, 88) == (message.octets_to_reflect, message.padding_to_reflect)
    assert wire[96:] == message.hmac
    assert RequestTwSession.decode(wire) == message
    assert decode_client_command(wire) == message
    assert client_command_length(wire[:16]) == 112


@RELAXED
@given(accepts, u16, b16, u16, u16, b16)
def test_accept_session_round_trip(
    accept: Accept, port: int, sid: bytes, refl: int, srv: int, mac: bytes
) -> None:
    message = AcceptSession(accept, port, sid, refl, srv, mac)
    wire = message.encode()
    assert len(wire) == 48 and wire[0] == accept and wire[4:20] == sid
    assert struct.unpack_from("!HH", wire, 20) == (refl, srv) and wire[24:32] == bytes(8)
    assert AcceptSession.decode(wire) == message


@RELAXED
@given(b16)
def test_start_sessions_round_trip(mac: bytes) -> None:
    wire = StartSessions(mac).encode()
    assert len(wire) == 32 and wire[0] == 2 and wire[1:16] == bytes(15)
    assert StartSessions.decode(wire) == StartSessions(mac)
    assert decode_client_command(wire) == StartSessions(mac)


@RELAXED
@given(accepts, b16)
def test_start_ack_round_trip(accept: Accept, mac: bytes) -> None:
    wire = StartAck(accept, mac).encode()
    assert len(wire) == 32 and wire[0] == accept
    assert StartAck.decode(wire) == StartAck(accept, mac)


@RELAXED
@given(accepts, u32, b16)
def test_stop_sessions_round_trip(accept: Accept, number: int, mac: bytes) -> None:
    message = StopSessions(accept, number, mac)
    wire = message.encode()
    assert (
        len(wire) == 32 and wire[:2] == bytes([3, accept]) and struct.unpack_from("!I", wire, 4)[0] == number
    )
    assert StopSessions.decode(wire) == message
    assert decode_client_command(wire) == message


@RELAXED
@given(
    st.sampled_from(list(NSessionsMessage.N_COMMANDS)),
    st.lists(b16, max_size=20).map(tuple),
    accepts,
    b16,
)
def test_n_sessions_round_trip(command: Command, sids: tuple[bytes, ...], accept: Accept, mac: bytes) -> None:
    is_ack = command in (Command.START_N_ACK, Command.STOP_N_ACK)
    message = NSessionsMessage(command, sids, accept if is_ack else Accept.OK, mac)
    wire = message.encode()
    assert len(wire) == 32 + 16 * len(sids) and wire[0] == command
    assert struct.unpack_from("!I", wire, 12)[0] == len(sids)  # RFC 5938: count in octets 12-15
    assert NSessionsMessage.peek_length(wire[:16]) == len(wire)
    assert NSessionsMessage.decode(wire) == message
    if not is_ack:
        assert decode_client_command(wire) == message


@RELAXED
@given(st.floats(min_value=0, max_value=2**32 - 1, allow_nan=False))
def test_interval_round_trip_within_a_fraction_unit(seconds: float) -> None:
    assert abs(interval_to_seconds(seconds_to_interval(seconds)) - seconds) <= 2**-32 * max(1.0, seconds)


@RELAXED
@given(st.integers(0, 2**31))
def test_ntp_time_round_trip_on_whole_seconds(unix: int) -> None:
    assert ntp_to_unix(unix_to_ntp(float(unix))) == unix


# ---------------------------------------------------------------- strict parsing


def _reason(exc: pytest.ExceptionInfo[MalformedMessage]) -> ControlFailure:
    return exc.value.reason


SAMPLE_REQUEST = RequestTwSession(
    sender_address=ipaddress.IPv4Address("192.0.2.1"),
    receiver_address=ipaddress.IPv4Address("192.0.2.2"),
    sender_port=5000,
    receiver_port=6000,
    padding_length=41,
    start_time=unix_to_ntp(1.7e9),
    timeout=seconds_to_interval(2.0),
    type_p=46 << 24,
)


@pytest.mark.parametrize(
    ("codec", "size"),
    [
        (ServerGreeting, 64),
        (SetupResponse, 164),
        (ServerStart, 48),
        (RequestTwSession, 112),
        (AcceptSession, 48),
    ],
)
def test_wrong_lengths_are_bad_length(codec: type[ServerGreeting], size: int) -> None:
    for wrong in (0, size - 1, size + 1, size + 16):
        with pytest.raises(MalformedMessage) as exc:
            codec.decode(bytes(wrong))
        assert _reason(exc) is ControlFailure.BAD_LENGTH


def test_nonzero_mbz_is_rejected_and_can_be_relaxed() -> None:
    greeting = bytearray(ServerGreeting(1, bytes(16), bytes(16), 1024).encode())
    greeting[60] = 1
    with pytest.raises(MalformedMessage) as exc:
        ServerGreeting.decode(bytes(greeting))
    assert _reason(exc) is ControlFailure.NONZERO_MBZ
    assert ServerGreeting.decode(bytes(greeting), strict_mbz=False).count == 1024

    greeting[60] = 0
    greeting[:12] = b"\xff" * 12  # "Unused", not MBZ: ignored even when strict
    assert ServerGreeting.decode(bytes(greeting)).count == 1024

    start = bytearray(ServerStart(Accept.OK, bytes(16), 0).encode())
    start[44] = 0xFF
    with pytest.raises(MalformedMessage) as exc:
        ServerStart.decode(bytes(start))
    assert _reason(exc) is ControlFailure.NONZERO_MBZ

    request = bytearray(SAMPLE_REQUEST.encode())
    request[93] = 1  # octets 92-95 stay MBZ even with RFC 6038
    with pytest.raises(MalformedMessage) as exc:
        RequestTwSession.decode(bytes(request))
    assert _reason(exc) is ControlFailure.NONZERO_MBZ

    request = bytearray(SAMPLE_REQUEST.encode())
    request[25] = 1  # IPv4 address padding
    with pytest.raises(MalformedMessage) as exc:
        RequestTwSession.decode(bytes(request))
    assert _reason(exc) is ControlFailure.NONZERO_MBZ

    stop = bytearray(StopSessions(Accept.OK, 1).encode())
    stop[2] = 1
    with pytest.raises(MalformedMessage) as exc:
        StopSessions.decode(bytes(stop))
    assert _reason(exc) is ControlFailure.NONZERO_MBZ


def test_request_field_violations_have_specific_reasons() -> None:
    wire = SAMPLE_REQUEST.encode()
    for offset, value, reason in (
        (1, 5, ControlFailure.BAD_IPVN),
        (1, 0, ControlFailure.BAD_IPVN),
        (1, 0x14, ControlFailure.NONZERO_MBZ),
        (2, 1, ControlFailure.BAD_FIELD),  # Conf-Sender
        (3, 1, ControlFailure.BAD_FIELD),  # Conf-Receiver
        (7, 1, ControlFailure.BAD_FIELD),  # Number of Schedule Slots
        (11, 1, ControlFailure.BAD_FIELD),  # Number of Packets
    ):
        bad = bytearray(wire)
        bad[offset] = value
        with pytest.raises(MalformedMessage) as exc:
            RequestTwSession.decode(bytes(bad))
        assert _reason(exc) is reason, (offset, value)


@pytest.mark.parametrize("number", [0, 1, 4, 6, 8, 10, 11, 255])
def test_unknown_or_forbidden_commands(number: int) -> None:
    block = bytes([number]) + bytes(15)
    with pytest.raises(MalformedMessage) as exc:
        client_command_length(block)
    assert _reason(exc) is ControlFailure.UNKNOWN_COMMAND
    with pytest.raises(MalformedMessage) as exc:
        decode_client_command(block + bytes(16))
    assert _reason(exc) is ControlFailure.UNKNOWN_COMMAND


@pytest.mark.parametrize(
    ("codec", "wire", "offset"),
    [
        (ServerStart, ServerStart(Accept.OK, bytes(16), 0).encode(), 15),
        (AcceptSession, AcceptSession(Accept.OK, 1, bytes(16)).encode(), 0),
        (StartAck, StartAck(Accept.OK).encode(), 0),
        (StopSessions, StopSessions(Accept.OK, 1).encode(), 1),
        (NSessionsMessage, NSessionsMessage(Command.STOP_N_ACK, (bytes(16),)).encode(), 1),
    ],
)
def test_undefined_accept_values_read_as_failure(codec: type[StartAck], wire: bytes, offset: int) -> None:
    """RFC 4656 s3.3: the receiver MUST interpret Accept values it does not know as 1."""
    for value in (7, 9, 255):
        bad = bytearray(wire)
        bad[offset] = value
        assert codec.decode(bytes(bad)).accept is Accept.FAILURE


def test_n_message_count_must_match_length() -> None:
    wire = NSessionsMessage(Command.START_N_SESSIONS, (bytes(16),)).encode()
    with pytest.raises(MalformedMessage) as exc:
        NSessionsMessage.decode(wire + bytes(16))
    assert _reason(exc) is ControlFailure.BAD_LENGTH
    with pytest.raises(MalformedMessage) as exc:
        NSessionsMessage.decode(wire[:-8])
    assert _reason(exc) is ControlFailure.BAD_LENGTH
    request_with_accept = bytearray(wire)
    request_with_accept[1] = 1
    with pytest.raises(MalformedMessage) as exc:
        NSessionsMessage.decode(bytes(request_with_accept))
    assert _reason(exc) is ControlFailure.NONZERO_MBZ


def test_ipv6_request_keeps_full_addresses() -> None:
    message = RequestTwSession(
        sender_address=ipaddress.IPv6Address("2001:db8::1"),
        receiver_address=ipaddress.IPv6Address("2001:db8::2"),
        sender_port=1,
        receiver_port=2,
        padding_length=0,
        start_time=0,
        timeout=0,
        type_p=0,
    )
    wire = message.encode()
    assert wire[1] == 6 and wire[16:32] == ipaddress.IPv6Address("2001:db8::1").packed
    assert RequestTwSession.decode(wire).receiver_address == ipaddress.IPv6Address("2001:db8::2")


def test_constructors_refuse_wrong_sizes() -> None:
    with pytest.raises(ValueError):
        ServerGreeting(1, bytes(15), bytes(16), 1024)
    with pytest.raises(ValueError):
        SetupResponse(1, key_id=bytes(79))
    with pytest.raises(ValueError):
        NSessionsMessage(Command.START_SESSIONS, ())
    with pytest.raises(ValueError):
        RequestTwSession(
            sender_address=ipaddress.IPv4Address(1),
            receiver_address=ipaddress.IPv6Address(1),
            sender_port=1,
            receiver_port=1,
            padding_length=0,
            start_time=0,
            timeout=0,
            type_p=0,
        )
