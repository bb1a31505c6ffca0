"""TWAMP-Control message codecs (RFC 4656 s3, RFC 5357 s3, RFC 5938, RFC 6038, RFC 7717), as field tables.

Each message is a frozen dataclass whose wire layout is one `_Layout`: an ordered table of (field, struct
format) that mirrors the RFC figure, so a field is found in one hop from its section. The codecs work on
plaintext only; encryption and the running HMAC are control_crypto's job, and HMAC fields are carried as
opaque 16 octets (zeros until the crypto stream seals the message).

Parsing is strict: a wrong length, a non-zero MBZ field, an unknown command or Accept value, an IPVN other
than 4/6 or a TWAMP-forbidden field value raises MalformedMessage with a ControlFailure
reason. `strict_mbz=False` relaxes only the MBZ check, for peers that reuse MBZ space (RFC 4656 lets
receivers ignore it).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from nf.twamp.control_events import ControlFailure, MalformedMessage
from nf.twamp.modes import Accept
from nf.twamp.timestamps import decode_timestamp, encode_timestamp

BLOCK = 16
ZERO_HMAC = bytes(16)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Command(enum.IntEnum):
    """Command Numbers of client messages and RFC 5938 acks (RFC 5357 s3.5/s8, RFC 5938)."""

    START_SESSIONS = 2
    STOP_SESSIONS = 3
    REQUEST_TW_SESSION = 5
    START_N_SESSIONS = 7
    START_N_ACK = 8
    STOP_N_SESSIONS = 9
    STOP_N_ACK = 10


CLIENT_COMMANDS = frozenset(
    {
        Command.START_SESSIONS,
        Command.STOP_SESSIONS,
        Command.REQUEST_TW_SESSION,
        Command.START_N_SESSIONS,
        Command.STOP_N_SESSIONS,
    }
)


class _Layout:
    """An ordered table of (name, struct format) fields.

    Fields named 'mbz*' are sent as zeros and must be zero on receipt (unless strict_mbz is off); fields
    named 'unused*' are sent as zeros and ignored on receipt (the RFC does not require them to be zero).
    """

    def __init__(self, *fields: tuple[str, str]) -> None:
        self.names = tuple(name for name, _ in fields)
        self._blank = {
            name: (b"" if fmt.endswith("s") else 0)
            for name, fmt in fields
            if name.startswith(("mbz", "unused"))
        }
        self.struct = struct.Struct("!" + "".join(fmt for _, fmt in fields))
        self.size = self.struct.size

    def pack(self, **values: Any) -> bytes:
        return self.struct.pack(
            *(self._blank[name] if name in self._blank else values[name] for name in self.names)
        )

    def unpack(self, data: bytes, message: str, strict_mbz: bool) -> dict[str, Any]:
        if len(data) != self.size:
            raise MalformedMessage(
                ControlFailure.BAD_LENGTH, f"{message}: {len(data)} octets, want {self.size}"
            )
        values = dict(zip(self.names, self.struct.unpack(data), strict=True))
        for name in self.names:
            if name.startswith("unused"):
                del values[name]
            elif name.startswith("mbz"):
                value = values[name]
                if strict_mbz and (any(value) if isinstance(value, bytes) else value):
                    raise MalformedMessage(ControlFailure.NONZERO_MBZ, f"{message}: {name} is not zero")
                del values[name]
        return values


def _accept(value: int) -> Accept:
    """RFC 4656 s3.3: a receiver MUST read every Accept value it does not know as 1 (Failure), so that new
    values can be defined later; an undefined value is therefore a refusal, not a malformed message."""
    try:
        return Accept(value)
    except ValueError:
        return Accept.FAILURE


def _check_len(value: bytes, size: int, name: str) -> None:
    if len(value) != size:
        raise ValueError(f"{name} must be {size} octets")


# ------------------------------------------------------------------ time fields


def ntp_to_unix(raw: int) -> float:
    """A 64-bit NTP timestamp field (RFC 4656 s4.1.2) as Unix seconds (timestamps' era rule applies)."""
    return decode_timestamp(raw.to_bytes(8, "big"))


def unix_to_ntp(unix_time: float) -> int:
    return int.from_bytes(encode_timestamp(unix_time), "big")


def interval_to_seconds(raw: int) -> float:
    """A Timeout field: the NTP 32.32 layout used as a duration, not an epoch."""
    return (raw >> 32) + (raw & 0xFFFFFFFF) / 4_294_967_296.0


def seconds_to_interval(seconds: float) -> int:
    if not 0 <= seconds < 2**32:
        raise ValueError("interval out of range")
    whole = int(seconds)
    return (whole << 32) | (int((seconds - whole) * 4_294_967_296.0) & 0xFFFFFFFF)


# ------------------------------------------------------------------ setup messages (RFC 4656 s3.1)


@dataclass(frozen=True, slots=True)
class ServerGreeting:
    modes: int
    challenge: bytes
    salt: bytes
    count: int

    LAYOUT: ClassVar[_Layout] = _Layout(
        ("unused", "12s"),
        ("modes", "I"),
        ("challenge", "16s"),
        ("salt", "16s"),
        ("count", "I"),
        ("mbz", "12s"),
    )

    def __post_init__(self) -> None:
        _check_len(self.challenge, 16, "Challenge")
        _check_len(self.salt, 16, "Salt")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(modes=self.modes, challenge=self.challenge, salt=self.salt, count=self.count)

    @classmethod
    def decode(cls, data: bytes, *, strict_mbz: bool = True) -> Self:
        return cls(**cls.LAYOUT.unpack(data, "Server Greeting", strict_mbz))


@dataclass(frozen=True, slots=True)
class SetupResponse:
    """Mode 0 means the client declines; Key ID is 80 octets (UTF-8 identity or RFC 7717 SPIi|SPIr|zeros)."""

    mode: int
    key_id: bytes = bytes(80)
    token: bytes = bytes(64)
    client_iv: bytes = bytes(16)

    LAYOUT: ClassVar[_Layout] = _Layout(
        ("mode", "I"), ("key_id", "80s"), ("token", "64s"), ("client_iv", "16s")
    )

    def __post_init__(self) -> None:
        _check_len(self.key_id, 80, "Key ID")
        _check_len(self.token, 64, "Token")
        _check_len(self.client_iv, 16, "Client-IV")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(
            mode=self.mode, key_id=self.key_id, token=self.token, client_iv=self.client_iv
        )

    @classmethod
    def decode(cls, data: bytes, *, strict_mbz: bool = True) -> Self:
        return cls(**cls.LAYOUT.unpack(data, "Set-Up-Response", strict_mbz))


@dataclass(frozen=True, slots=True)
class ServerStart:
    """Octets 0-31 travel in clear; 32-47 (Start-Time, MBZ) are the first block of the server's CBC stream."""

    accept: Accept
    server_iv: bytes
    start_time: int  # raw NTP timestamp

    LAYOUT: ClassVar[_Layout] = _Layout(
        ("mbz", "15s"),
        ("accept", "B"),
        ("server_iv", "16s"),
        ("start_time", "Q"),
        ("mbz_tail", "8s"),
    )
    CLEAR_PART: ClassVar[int] = 32

    def __post_init__(self) -> None:
        _check_len(self.server_iv, 16, "Server-IV")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(accept=self.accept, server_iv=self.server_iv, start_time=self.start_time)

    @classmethod
    def decode(cls, data: bytes, *, strict_mbz: bool = True) -> Self:
        values = cls.LAYOUT.unpack(data, "Server-Start", strict_mbz)
        values["accept"] = _accept(values["accept"])
        return cls(**values)


# ------------------------------------------------------------------ session requests (RFC 5357 s3.5-3.6)


def _encode_address(address: IPAddress) -> bytes:
    return address.packed.ljust(16, b"\0")


def _decode_address(raw: bytes, ipvn: int, name: str, strict_mbz: bool) -> IPAddress:
    if ipvn == 6:
        return ipaddress.IPv6Address(raw)
    if strict_mbz and any(raw[4:]):
        raise MalformedMessage(
            ControlFailure.NONZERO_MBZ, f"Request-TW-Session: {name} IPv4 padding not zero"
        )
    return ipaddress.IPv4Address(raw[:4])


@dataclass(frozen=True, slots=True)
class RequestTwSession:
    """Request-TW-Session. `sid` must be zero from the client; Type-P carries the DSCP as dscp << 24.

    octets_to_reflect / padding_to_reflect are the RFC 6038 Reflect Octets fields (octets 88-91), zero
    unless that feature was negotiated.
    """

    sender_address: IPAddress
    receiver_address: IPAddress
    sender_port: int
    receiver_port: int
    padding_length: int
    start_time: int  # raw NTP timestamp
    timeout: int  # raw NTP-format interval
    type_p: int
    octets_to_reflect: int = 0
    padding_to_reflect: int = 0
    sid: bytes = bytes(16)
    hmac: bytes = ZERO_HMAC

    LAYOUT: ClassVar[_Layout] = _Layout(
        ("command", "B"),
        ("ipvn", "B"),
        ("conf_sender", "B"),
        ("conf_receiver", "B"),
        ("schedule_slots", "I"),
        ("packets", "I"),
        ("sender_port", "H"),
        ("receiver_port", "H"),
        ("sender_address", "16s"),
        ("receiver_address", "16s"),
        ("sid", "16s"),
        ("padding_length", "I"),
        ("start_time", "Q"),
        ("timeout", "Q"),
        ("type_p", "I"),
        ("octets_to_reflect", "H"),
        ("padding_to_reflect", "H"),
        ("mbz", "4s"),
        ("hmac", "16s"),
    )

    def __post_init__(self) -> None:
        if self.sender_address.version != self.receiver_address.version:
            raise ValueError("sender and receiver addresses must share one IP version")
        _check_len(self.sid, 16, "SID")
        _check_len(self.hmac, 16, "HMAC")

    @property
    def ipvn(self) -> int:
        return self.sender_address.version

    @property
    def dscp(self) -> int:
        return (self.type_p >> 24) & 0x3F

    def encode(self) -> bytes:
        return self.LAYOUT.pack(
            command=Command.REQUEST_TW_SESSION,
            ipvn=self.ipvn,
            conf_sender=0,
            conf_receiver=0,
            schedule_slots=0,
            packets=0,
            sender_port=self.sender_port,
            receiver_port=self.receiver_port,
            sender_address=_encode_address(self.sender_address),
            receiver_address=_encode_address(self.receiver_address),
            sid=self.sid,
            padding_length=self.padding_length,
            start_time=self.start_time,
            timeout=self.timeout,
            type_p=self.type_p,
            octets_to_reflect=self.octets_to_reflect,
            padding_to_reflect=self.padding_to_reflect,
            hmac=self.hmac,
        )

    @classmethod
    def decode(cls, data: bytes, *, strict_mbz: bool = True) -> Self:
        name = "Request-TW-Session"
        values = cls.LAYOUT.unpack(data, name, strict_mbz)
        if values.pop("command") != Command.REQUEST_TW_SESSION:
            raise MalformedMessage(ControlFailure.UNKNOWN_COMMAND, f"{name}: wrong Command Number")
        ipvn_octet = values.pop("ipvn")
        if strict_mbz and ipvn_octet & 0xF0:
            raise MalformedMessage(ControlFailure.NONZERO_MBZ, f"{name}: MBZ bits beside IPVN are set")
        ipvn = ipvn_octet & 0x0F
        if ipvn not in (4, 6):
            raise MalformedMessage(ControlFailure.BAD_IPVN, f"{name}: IPVN {ipvn}")
        for forbidden in ("conf_sender", "conf_receiver", "schedule_slots", "packets"):
            if values.pop(forbidden):
                raise MalformedMessage(ControlFailure.BAD_FIELD, f"{name}: {forbidden} must be 0 in TWAMP")
        for side in ("sender_address", "receiver_address"):
            values[side] = _decode_address(values[side], ipvn, side, strict_mbz)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class AcceptSession:
    """Accept-Session; reflected_octets / server_octets are the RFC 6038 fields (octets 20-23)."""

    accept: Accept
    port: int
    sid: bytes
    reflected_octets: int = 0
    server_octets: int = 0
    hmac: bytes = ZERO_HMAC

    LAYOUT: ClassVar[_Layout] = _Layout(
        ("accept", "B"),
        ("mbz", "B"),
        ("port", "H"),
        ("sid", "16s"),
        ("reflected_octets", "H"),
        ("server_octets", "H"),
        ("mbz_tail", "8s"),
        ("hmac", "16s"),
    )

    def __post_init__(self) -> None:
        _check_len(self.sid, 16, "SID")
        _check_len(self.hmac, 16, "HMAC")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(
            accept=self.accept,
            mbz=0,
            port=self.port,
            sid=self.sid,
            reflected_octets=self.reflected_octets,
            server_octets=self.server_octets,
            hmac=self.hmac,
        )

    @classmethod
    def decode(cls, data: bytes, *, strict_mbz: bool = True) -> Self:
        values = cls.LAYOUT.unpack(data, "Accept-Session", strict_mbz)
        values["accept"] = _accept(values["accept"])
        return cls(**values)


# ------------------------------------------------------------------ start / stop (RFC 5357 s3.7-3.8)


@dataclass(frozen=True, slots=True)
class StartSessions:
    hmac: bytes = ZERO_HMAC

    LAYOUT: ClassVar[_Layout] = _Layout(("command", "B"), ("mbz", "15s"), ("hmac", "16s"))

    def encode(self) -> bytes:
        return self.LAYOUT.pack(command=Command.START_SESSIONS, hmac=self.hmac)

    @classmethod
    def decode(cls, data: bytes, *, strict_mbz: bool = True) -> Self:
        values = cls.LAYOUT.unpack(data, "Start-Sessions", strict_mbz)
        if values.pop("command") != Command.START_SESSIONS:
            raise MalformedMessage(ControlFailure.UNKNOWN_COMMAND, "Start-Sessions: wrong Command Number")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class StartAck:
    accept: Accept
    hmac: bytes = ZERO_HMAC

    LAYOUT: ClassVar[_Layout] = _Layout(("accept", "B"), ("mbz", "15s"), ("hmac", "16s"))

    def encode(self) -> bytes:
        return self.LAYOUT.pack(accept=self.accept, hmac=self.hmac)

    @classmethod
    def decode(cls, data: bytes, *, strict_mbz: bool = True) -> Self:
        values = cls.LAYOUT.unpack(data, "Start-Ack", strict_mbz)
        values["accept"] = _accept(values["accept"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class StopSessions:
    """TWAMP Stop-Sessions: Accept (0 = normal) and Number of Sessions, no per-session records."""

    accept: Accept
    number_of_sessions: int
    hmac: bytes = ZERO_HMAC

    LAYOUT: ClassVar[_Layout] = _Layout(
        ("command", "B"),
        ("accept", "B"),
        ("mbz", "2s"),
        ("number_of_sessions", "I"),
        ("mbz_tail", "8s"),
        ("hmac", "16s"),
    )

    def encode(self) -> bytes:
        return self.LAYOUT.pack(
            command=Command.STOP_SESSIONS,
            accept=self.accept,
            number_of_sessions=self.number_of_sessions,
            hmac=self.hmac,
        )

    @classmethod
    def decode(cls, data: bytes, *, strict_mbz: bool = True) -> Self:
        values = cls.LAYOUT.unpack(data, "Stop-Sessions", strict_mbz)
        if values.pop("command") != Command.STOP_SESSIONS:
            raise MalformedMessage(ControlFailure.UNKNOWN_COMMAND, "Stop-Sessions: wrong Command Number")
        values["accept"] = _accept(values["accept"])
        return cls(**values)


# ------------------------------------------------------------------ RFC 5938 individual session control

_N_HEADER = _Layout(("command", "B"), ("accept", "B"), ("mbz", "10s"), ("number_of_sessions", "I"))
_N_SID = _Layout(("sid", "16s"))
_N_HMAC = _Layout(("hmac", "16s"))


def n_message_length(number_of_sessions: int) -> int:
    """Header block + one block per SID + HMAC block."""
    return _N_HEADER.size + number_of_sessions * BLOCK + BLOCK


@dataclass(frozen=True, slots=True)
class NSessionsMessage:
    """Start-N-Sessions (7), Start-N-Ack (8), Stop-N-Sessions (9), Stop-N-Ack (10): one layout.

    The requests carry MBZ where the acks carry Accept (octet 1); the acks echo the SID list.
    """

    command: Command
    sids: tuple[bytes, ...]
    accept: Accept = Accept.OK
    hmac: bytes = ZERO_HMAC

    N_COMMANDS: ClassVar[frozenset[Command]] = frozenset(
        {Command.START_N_SESSIONS, Command.START_N_ACK, Command.STOP_N_SESSIONS, Command.STOP_N_ACK}
    )

    def __post_init__(self) -> None:
        if self.command not in self.N_COMMANDS:
            raise ValueError(f"{self.command!r} is not an RFC 5938 command")
        if not self.is_ack and self.accept != Accept.OK:
            raise ValueError("Start-N/Stop-N requests carry no Accept")
        for sid in self.sids:
            _check_len(sid, 16, "SID")
        _check_len(self.hmac, 16, "HMAC")

    @property
    def is_ack(self) -> bool:
        return self.command in (Command.START_N_ACK, Command.STOP_N_ACK)

    def encode(self) -> bytes:
        header = _N_HEADER.pack(command=self.command, accept=self.accept, number_of_sessions=len(self.sids))
        return header + b"".join(_N_SID.pack(sid=sid) for sid in self.sids) + _N_HMAC.pack(hmac=self.hmac)

    @staticmethod
    def peek_length(first_block: bytes) -> int:
        """Whole message length from its header block, before the rest has arrived."""
        return n_message_length(struct.unpack_from("!I", first_block, 12)[0])

    @classmethod
    def decode(cls, data: bytes, *, strict_mbz: bool = True) -> Self:
        if len(data) < _N_HEADER.size + BLOCK or len(data) % BLOCK:
            raise MalformedMessage(ControlFailure.BAD_LENGTH, f"RFC 5938 message: {len(data)} octets")
        header = _N_HEADER.unpack(data[: _N_HEADER.size], "RFC 5938 header", strict_mbz)
        try:
            command = Command(header["command"])
        except ValueError:
            command = None
        if command not in cls.N_COMMANDS:
            raise MalformedMessage(ControlFailure.UNKNOWN_COMMAND, "not an RFC 5938 Command Number")
        assert command is not None
        count = header["number_of_sessions"]
        if len(data) != n_message_length(count):
            raise MalformedMessage(
                ControlFailure.BAD_LENGTH, f"RFC 5938 message: {len(data)} octets for {count} sessions"
            )
        if command in (Command.START_N_SESSIONS, Command.STOP_N_SESSIONS):
            if strict_mbz and header["accept"]:
                raise MalformedMessage(ControlFailure.NONZERO_MBZ, "RFC 5938 request: octet 1 is not zero")
            accept = Accept.OK
        else:
            accept = _accept(header["accept"])
        body = data[_N_HEADER.size : -BLOCK]
        sids = tuple(body[i : i + BLOCK] for i in range(0, len(body), BLOCK))
        return cls(command=command, sids=sids, accept=accept, hmac=data[-BLOCK:])


# ------------------------------------------------------------------ framing helpers for the machines

ClientCommand = RequestTwSession | StartSessions | StopSessions | NSessionsMessage
_FIXED_COMMAND_LENGTH = {
    Command.START_SESSIONS: StartSessions.LAYOUT.size,
    Command.STOP_SESSIONS: StopSessions.LAYOUT.size,
    Command.REQUEST_TW_SESSION: RequestTwSession.LAYOUT.size,
}


def client_command_length(first_block: bytes) -> int:
    """Length of the client command whose first (plaintext) block is given; unknown commands raise."""
    number = first_block[0]
    if number in _FIXED_COMMAND_LENGTH:
        return _FIXED_COMMAND_LENGTH[Command(number)]
    if number in (Command.START_N_SESSIONS, Command.STOP_N_SESSIONS):
        return NSessionsMessage.peek_length(first_block)
    raise MalformedMessage(ControlFailure.UNKNOWN_COMMAND, f"Command Number {number} is not a TWAMP command")


def decode_client_command(data: bytes, *, strict_mbz: bool = True) -> ClientCommand:
    number = data[0] if data else -1
    if number == Command.REQUEST_TW_SESSION:
        return RequestTwSession.decode(data, strict_mbz=strict_mbz)
    if number == Command.START_SESSIONS:
        return StartSessions.decode(data, strict_mbz=strict_mbz)
    if number == Command.STOP_SESSIONS:
        return StopSessions.decode(data, strict_mbz=strict_mbz)
    if number in (Command.START_N_SESSIONS, Command.STOP_N_SESSIONS):
        return NSessionsMessage.decode(data, strict_mbz=strict_mbz)
    raise MalformedMessage(ControlFailure.UNKNOWN_COMMAND, f"Command Number {number} is not a TWAMP command")
