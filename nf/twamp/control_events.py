"""What the TWAMP-Control machines report to their adapter: events, and why a connection or message failed.

The asyncio adapters (nf/net/) drive ControlServer / ControlClient and react only to these types, so this
module is the whole vocabulary between the sans-IO machines and the I/O layer. Every rejection or protocol
violation carries a ControlFailure reason so the adapter can keep one counter per reason and log rate-limited
without parsing exception text. No event or exception text ever carries key material.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nf.twamp.modes import Accept, Modes, SecurityMode
from nf.twamp.test_session import TestSessionParams


class ControlFailure(enum.Enum):
    """Why a control message was refused or a control connection ended abnormally; one counter each."""

    # Framing and field checks (control_messages).
    BAD_LENGTH = "bad-length"  # message shorter/longer than its layout, or not whole blocks
    MESSAGE_TOO_LARGE = "message-too-large"  # over the configured max message size (Start-N/Stop-N lists)
    NONZERO_MBZ = "nonzero-mbz"
    UNKNOWN_COMMAND = "unknown-command"  # a Command Number TWAMP does not define or forbids (0, 1, 4, 6, >10)
    UNEXPECTED_MESSAGE = "unexpected-message"  # a valid command in the wrong state
    BAD_IPVN = "bad-ipvn"  # IPVN neither 4 nor 6
    BAD_FIELD = "bad-field"  # a field outside its TWAMP range (Conf-Sender, slots, packets, Count, ...)
    # Never raised since undefined Accept values read as 1 (RFC 4656 s3.3); kept so counter names stay stable.
    BAD_ACCEPT = "bad-accept"
    # Setup and negotiation.
    NO_COMMON_MODE = "no-common-mode"  # client: nothing in its preference chain is offered
    CLIENT_DECLINED = "client-declined"  # server: Set-Up-Response Mode 0
    MODE_NOT_OFFERED = "mode-not-offered"  # server: the selected Mode has bits it did not offer
    MODE_INVALID = "mode-invalid"  # selected Mode is not exactly one security mode
    COUNT_TOO_LARGE = "count-too-large"  # client: Greeting Count above 2^max-count-exponent
    UNKNOWN_KEY_ID = "unknown-key-id"  # server: the KeySource knows no secret for the Key ID
    UNKNOWN_SA = "unknown-sa"  # server: IKEv2-derived mode and no IKE SA for SPIi|SPIr (RFC 7717)
    KEY_SOURCE_ERROR = "key-source-error"  # the KeySource itself failed (server answers Accept=2)
    BAD_TOKEN = "bad-token"  # server: decrypted Token does not start with our Challenge
    BAD_HMAC = "bad-hmac"  # either side: a message HMAC did not verify
    SERVER_REFUSED = "server-refused"  # client: Server-Start Accept != 0
    # Session management.
    SESSION_LIMIT = "session-limit"  # server: more Request-TW-Session than max sessions per connection
    UNKNOWN_SID = "unknown-sid"  # Start-N/Stop-N/ack names a SID this connection never accepted
    PEER_CLOSED = "peer-closed"  # the peer closed the TCP connection mid-protocol


class ControlProtocolError(Exception):
    """A control message or exchange that violates the protocol; `reason` is what adapters count."""

    def __init__(self, reason: ControlFailure, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class MalformedMessage(ControlProtocolError):
    """The octets do not form a valid message (length, MBZ, command, field ranges)."""


class NegotiationError(ControlProtocolError):
    """Setup could not agree on a mode, a Count or a key."""


class IntegrityError(ControlProtocolError):
    """A Token or HMAC failed to verify: the peer does not hold the same key, or the stream was altered."""


class ConnectionState(enum.Enum):
    """Where a control connection is; the adapter arms SERVWAIT/REFWAIT from this (see `idle`)."""

    GREETING = "greeting"  # server sent / client awaits the Server Greeting
    SETUP = "setup"  # server awaits Set-Up-Response / client awaits Server-Start
    REQUEST = "request"  # authenticated; sessions may be requested (nothing started yet)
    TESTING = "testing"  # Start-Sessions acknowledged; sessions running
    CLOSED = "closed"  # nothing more is sent or accepted; the adapter closes the socket after flushing


# ---------------------------------------------------------------- events of both machines


@dataclass(frozen=True, slots=True)
class SetupCompleted:
    """Server-Start with Accept=0 was sent (server) or received (client): the connection is authenticated."""

    mode: Modes  # the full selected Mode word, security bit plus feature bits
    security: SecurityMode
    key_id: bytes  # the 80-octet Key ID field with trailing zeros stripped (b"" in unauthenticated mode)
    server_start_time: float  # Unix seconds from Server-Start (client) or as sent (server)


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """The connection is over. Flush data_to_send() (it may hold a final Server-Start) and close."""

    reason: ControlFailure
    detail: str
    accept: Accept | None = None  # what a refusing Server-Start carried, if one was sent or received


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection where that is allowed (after Stop-Sessions or with nothing pending)."""


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """The machine refused or ignored a request on its own (limits, policy, bad fields); count `reason`.

    `accept` is what the refusal carried on the wire, or None when the message was ignored without a reply.
    The connection stays up.
    """

    reason: ControlFailure
    detail: str
    accept: Accept | None


# ---------------------------------------------------------------- server-side events


@dataclass(frozen=True, slots=True)
class SessionRequested:
    """A Request-TW-Session to answer with ControlServer.accept_session() or reject_session().

    Addresses are already resolved: a zero address in the request was replaced by the control connection's
    peer (sender) or local (reflector) address, as RFC 4656 s3.5 asks.
    """

    sender_address: str
    sender_port: int
    reflector_address: str
    reflector_port: int  # the port the client asked for; the adapter may reserve a different one
    padding_length: int
    start_time: float  # Unix seconds
    timeout: float  # seconds
    dscp: int
    octets_to_reflect: int  # RFC 6038, 0 unless Reflect Octets was negotiated
    padding_to_reflect: int  # RFC 6038 "Length of padding to reflect" (informational; see control_server)


@dataclass(frozen=True, slots=True)
class StartRequested:
    """Start-Sessions: answer with ControlServer.ack_start(); on OK every accepted session starts."""

    sids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StopRequested:
    """Stop-Sessions: every session stops (after its Timeout); no reply is sent."""

    accept: Accept  # OK = normal stop, anything else = the client reports an abnormal end
    sids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StartNRequested:
    """RFC 5938 Start-N-Sessions: answer with ControlServer.ack_start_n()."""

    sids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StopNRequested:
    """RFC 5938 Stop-N-Sessions: answer with ControlServer.ack_stop_n()."""

    sids: tuple[bytes, ...]


# ---------------------------------------------------------------- client-side events


@dataclass(frozen=True, slots=True)
class SessionAccepted:
    """Accept-Session with Accept=0: everything the session-sender needs."""

    params: TestSessionParams


@dataclass(frozen=True, slots=True)
class SessionRejected:
    accept: Accept


@dataclass(frozen=True, slots=True)
class StartAcked:
    accept: Accept


@dataclass(frozen=True, slots=True)
class StartNAcked:
    accept: Accept
    sids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StopNAcked:
    accept: Accept
    sids: tuple[bytes, ...]


ServerEvent = (
    SetupCompleted
    | RequestRejected
    | SessionRequested
    | StartRequested
    | StopRequested
    | StartNRequested
    | StopNRequested
    | ConnectionFailed
    | ConnectionClosed
)
ClientEvent = (
    SetupCompleted
    | RequestRejected
    | SessionAccepted
    | SessionRejected
    | StartAcked
    | StartNAcked
    | StopNAcked
    | ConnectionFailed
    | ConnectionClosed
)
