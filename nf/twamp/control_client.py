"""TWAMP-Control client side (Control-Client + the control half of the Session-Sender) as a sans-IO machine.

Use it like h11: the adapter connects, creates one ControlClient, feeds every received chunk to
`receive_data()` (b"" on EOF), sends `data_to_send()` after every call, and drains `next_event()`:

    SetupCompleted     -> authenticated; request_session(...) as often as needed, then start_sessions()
    SessionAccepted    -> `params` (TestSessionParams, with TestSessionKeys when test packets are protected)
    SessionRejected    -> the server refused that one request; the connection stays up
    StartAcked / StartNAcked / StopNAcked -> replies to start_sessions() / start_n() / stop_n()
    ConnectionFailed / ConnectionClosed   -> flush data_to_send(), then close the socket

Mode selection follows RFC 8913's mode-preference-chain: the first entry of `mode_preference` whose bits the
Server Greeting all offers wins, and the requested feature bits (Individual Session Control, Reflect Octets,
Symmetrical Size) the server also offers are added. An entry with IKEV2_DERIVED (RFC 7717) uses the
16-octet SPIi|SPIr Key ID and the IKEv2 key source. A Count above 2^max_count_exponent is refused (the client
would spend unbounded CPU on PBKDF2). Randomness (session keys, Client-IV) comes from the injected `rng`.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nf.twamp.control_crypto import ControlKeys, Inbound, Outbound
from nf.twamp.control_events import (
    ClientEvent,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionState,
    ControlFailure,
    ControlProtocolError,
    MalformedMessage,
    NegotiationError,
    SessionAccepted,
    SessionRejected,
    SetupCompleted,
    StartAcked,
    StartNAcked,
    StopNAcked,
)
from nf.twamp.control_messages import (
    BLOCK,
    AcceptSession,
    Command,
    IPAddress,
    NSessionsMessage,
    RequestTwSession,
    ServerGreeting,
    ServerStart,
    SetupResponse,
    StartAck,
    StartSessions,
    StopSessions,
    ntp_to_unix,
    seconds_to_interval,
    unix_to_ntp,
)
from nf.twamp.keysource import KeySource, SharedSecret
from nf.twamp.modes import SECURITY_MODES, Accept, Modes, SecurityMode
from nf.twamp.test_session import TestSessionParams

MIN_COUNT = 1024
NO_FEATURES = Modes(0)
_FEATURES = Modes.INDIVIDUAL_SESSION_CONTROL | Modes.REFLECT_OCTETS | Modes.SYMMETRICAL_SIZE


def key_id_field(key_id: bytes) -> bytes:
    """The 80-octet Key ID field: an identity (or RFC 7717 SPIi|SPIr) zero-padded."""
    if not 0 < len(key_id) <= 80:
        raise ValueError("Key ID must be 1..80 octets")
    return key_id.ljust(80, b"\0")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What this client is willing to do; shared by all its connections.

    mode_preference: Mode words, best first; each is exactly one security mode, optionally + IKEV2_DERIVED.
    key_id/key_source: pre-shared identity (UTF-8 octets). ikev2_key_id/ikev2_key_source: RFC 7717, the
    16-octet SPIi|SPIr of the IKE SA. features: feature bits to request when offered.
    """

    mode_preference: tuple[Modes, ...]
    key_id: bytes | None = None
    key_source: KeySource | None = None
    ikev2_key_id: bytes | None = None
    ikev2_key_source: KeySource | None = None
    max_count_exponent: int = 20
    features: Modes = NO_FEATURES
    strict_mbz: bool = True
    max_message_size: int = 16 + 16 * 1024 + 16

    def __post_init__(self) -> None:
        if not self.mode_preference:
            raise ValueError("mode_preference is empty")
        for entry in self.mode_preference:
            security = SecurityMode.from_modes(entry & SECURITY_MODES)
            if security is None or int(entry) & ~int(SECURITY_MODES | Modes.IKEV2_DERIVED):
                raise ValueError(f"preference {int(entry):#x} must be one security mode (+ IKEv2Derived)")
            if security.control_is_protected and entry & Modes.IKEV2_DERIVED:
                if self.ikev2_key_id is None or len(self.ikev2_key_id) != 16 or self.ikev2_key_source is None:
                    raise ValueError("IKEv2-derived preference needs a 16-octet SPIi|SPIr and a key source")
            elif security.control_is_protected and (self.key_id is None or self.key_source is None):
                raise ValueError(f"preference {int(entry):#x} needs a key_id and a key_source")
        if self.key_id is not None:
            key_id_field(self.key_id)
        if int(self.features) & ~int(_FEATURES):
            raise ValueError("features may only hold bits 4-6")
        if not 10 <= self.max_count_exponent <= 31:
            raise ValueError("max_count_exponent must be 10..31")


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """One Request-TW-Session. None addresses go out as zero: 'the control connection's address'."""

    sender_port: int
    reflector_port: int
    start_time: float  # Unix seconds
    timeout: float  # seconds the reflector keeps reflecting after Stop-Sessions
    padding_length: int = 0
    dscp: int = 0
    sender_address: str | None = None
    reflector_address: str | None = None
    octets_to_reflect: int = 0  # RFC 6038, needs Reflect Octets negotiated
    padding_to_reflect: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.sender_port < 65536 and 0 <= self.reflector_port < 65536):
            raise ValueError("ports must be 0..65535")
        if not 0 <= self.dscp < 64:
            raise ValueError("DSCP must be 0..63")
        if not 0 <= self.padding_length < 2**32:
            raise ValueError("padding length out of range")
        if not (0 <= self.octets_to_reflect < 65536 and 0 <= self.padding_to_reflect < 65536):
            raise ValueError("RFC 6038 fields must be 0..65535")


class _Awaiting(enum.Enum):
    SESSION = "accept-session"
    START = "start-ack"
    START_N = "start-n-ack"
    STOP_N = "stop-n-ack"


@dataclass(frozen=True, slots=True)
class _Outstanding:
    kind: _Awaiting
    request: SessionRequest | None = None
    sids: tuple[bytes, ...] = ()


class ControlClient:
    def __init__(
        self, config: ClientConfig, *, rng: Callable[[int], bytes], local_address: str, peer_address: str
    ) -> None:
        """`local_address` / `peer_address` are the control connection's endpoints (our side / the server)."""
        self._config = config
        self._rng = rng
        self._local = ipaddress.ip_address(local_address)
        self._peer = ipaddress.ip_address(peer_address)
        self._in = Inbound()
        self._out = Outbound()
        self._events: collections.deque[ClientEvent] = collections.deque()
        self._state = ConnectionState.GREETING
        self._mode = Modes(0)
        self._security: SecurityMode | None = None
        self._key_id = b""
        self._keys: ControlKeys | None = None
        self._outstanding: collections.deque[_Outstanding] = collections.deque()
        self._sessions: dict[bytes, TestSessionParams] = {}
        self._running: set[bytes] = set()
        self._start_head: bytes | None = None

    def __repr__(self) -> str:
        return f"ControlClient(state={self._state.value}, mode={int(self._mode)})"

    # ------------------------------------------------------------ adapter-facing state

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def mode(self) -> Modes:
        """The Mode word sent in Set-Up-Response (0 before the greeting)."""
        return self._mode

    @property
    def idle(self) -> bool:
        """True when no reply is outstanding: the adapter may send the next command or close."""
        return self._state in (ConnectionState.REQUEST, ConnectionState.TESTING) and not self._outstanding

    @property
    def sessions(self) -> dict[bytes, TestSessionParams]:
        return dict(self._sessions)

    # ------------------------------------------------------------ sans-IO plumbing

    def receive_data(self, data: bytes) -> None:
        """Octets from the TCP stream; b"" means the server closed its side."""
        if self._state is ConnectionState.CLOSED:
            return
        if not data:
            if self._state in (ConnectionState.REQUEST, ConnectionState.TESTING) and not self._outstanding:
                self._close(ConnectionClosed())
            else:
                detail = f"server closed in {self._state.value}"
                self._close(ConnectionFailed(ControlFailure.PEER_CLOSED, detail))
            return
        self._in.feed(data)
        if self._in.buffered > 2 * self._config.max_message_size:
            self._fail(MalformedMessage(ControlFailure.MESSAGE_TOO_LARGE, "server sent too much unread data"))
            return
        try:
            while self._step():
                pass
        except ControlProtocolError as exc:
            self._fail(exc)

    def next_event(self) -> ClientEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        return self._out.take()

    # ------------------------------------------------------------ commands

    def request_session(self, request: SessionRequest) -> None:
        """Queue a Request-TW-Session; answered by SessionAccepted or SessionRejected."""
        self._require_commands(self._state is ConnectionState.REQUEST or self._individual)
        if (
            request.octets_to_reflect or request.padding_to_reflect
        ) and not self._mode & Modes.REFLECT_OCTETS:
            raise ValueError("Reflect Octets fields need the Reflect Octets mode")
        version = self._local.version
        sender = ipaddress.ip_address(request.sender_address) if request.sender_address else None
        reflector = ipaddress.ip_address(request.reflector_address) if request.reflector_address else None
        for given in (sender, reflector):
            if given is not None:
                version = given.version
        zero: IPAddress = ipaddress.IPv4Address(0) if version == 4 else ipaddress.IPv6Address(0)
        message = RequestTwSession(
            sender_address=sender or zero,
            receiver_address=reflector or zero,
            sender_port=request.sender_port,
            receiver_port=request.reflector_port,
            padding_length=request.padding_length,
            start_time=unix_to_ntp(request.start_time),
            timeout=seconds_to_interval(request.timeout),
            type_p=request.dscp << 24,
            octets_to_reflect=request.octets_to_reflect,
            padding_to_reflect=request.padding_to_reflect,
        )
        self._out.send_message(message.encode())
        self._outstanding.append(_Outstanding(_Awaiting.SESSION, request=request))

    def start_sessions(self) -> None:
        self._require_commands(self._state is ConnectionState.REQUEST or self._individual)
        self._out.send_message(StartSessions().encode())
        self._outstanding.append(_Outstanding(_Awaiting.START))

    def stop_sessions(self, accept: Accept = Accept.OK) -> None:
        """Stop every session (no reply); Accept != OK reports an abnormal end to the server."""
        self._require_commands(self._state is ConnectionState.TESTING or self._individual)
        self._out.send_message(StopSessions(accept=accept, number_of_sessions=len(self._sessions)).encode())
        self._sessions.clear()
        self._running.clear()
        self._state = ConnectionState.REQUEST

    def start_n(self, sids: Sequence[bytes]) -> None:
        """RFC 5938 Start-N-Sessions for a subset of the accepted sessions."""
        self._send_n(Command.START_N_SESSIONS, _Awaiting.START_N, tuple(sids))

    def stop_n(self, sids: Sequence[bytes]) -> None:
        self._send_n(Command.STOP_N_SESSIONS, _Awaiting.STOP_N, tuple(sids))

    def _send_n(self, command: Command, kind: _Awaiting, sids: tuple[bytes, ...]) -> None:
        self._require_commands(self._individual)
        if not sids or any(sid not in self._sessions for sid in sids):
            raise ValueError("Start-N/Stop-N need SIDs of accepted sessions")
        self._out.send_message(NSessionsMessage(command, sids).encode())
        self._outstanding.append(_Outstanding(kind, sids=sids))

    @property
    def _individual(self) -> bool:
        return self._state is not ConnectionState.CLOSED and bool(
            self._mode & Modes.INDIVIDUAL_SESSION_CONTROL
        )

    def _require_commands(self, allowed: bool) -> None:
        if self._state not in (ConnectionState.REQUEST, ConnectionState.TESTING) or not allowed:
            raise RuntimeError(f"command not allowed in state {self._state.value}")

    # ------------------------------------------------------------ internals

    def _close(self, event: ConnectionFailed | ConnectionClosed) -> None:
        self._state = ConnectionState.CLOSED
        self._outstanding.clear()
        self._events.append(event)

    def _fail(self, exc: ControlProtocolError, accept: Accept | None = None) -> None:
        self._close(ConnectionFailed(exc.reason, exc.detail, accept))

    def _step(self) -> bool:
        if self._state is ConnectionState.CLOSED:
            return False
        if self._state is ConnectionState.GREETING:
            return self._read_greeting()
        if self._state is ConnectionState.SETUP:
            return self._read_server_start()
        return self._read_reply()

    # setup ----------------------------------------------------------------

    def _choose(self, offered: int) -> Modes | None:
        for entry in self._config.mode_preference:
            if not int(entry) & ~offered:  # int: IntFlag's ~ would drop unknown bits
                return entry | (self._config.features & offered)
        return None

    def _decline(self, exc: NegotiationError) -> bool:
        """Set-Up-Response with Mode 0 tells the server we will not continue (RFC 4656 s3.1)."""
        self._out.send_clear(SetupResponse(mode=0).encode())
        self._fail(exc)
        return True

    def _read_greeting(self) -> bool:
        raw = self._in.take_clear(ServerGreeting.LAYOUT.size)
        if raw is None:
            return False
        greeting = ServerGreeting.decode(raw, strict_mbz=self._config.strict_mbz)
        if greeting.modes == 0:
            self._close(ConnectionFailed(ControlFailure.SERVER_REFUSED, "server offers no modes"))
            return True
        mode = self._choose(greeting.modes)
        if mode is None:
            detail = f"server offers {greeting.modes:#x}, none of our preferences"
            return self._decline(NegotiationError(ControlFailure.NO_COMMON_MODE, detail))
        security = SecurityMode.from_modes(mode & SECURITY_MODES)
        assert security is not None
        self._mode, self._security = mode, security
        if not security.control_is_protected:
            self._out.send_clear(SetupResponse(mode=int(mode)).encode())
            self._state = ConnectionState.SETUP
            return True
        if greeting.count < MIN_COUNT:
            detail = f"Count {greeting.count} below {MIN_COUNT}"
            return self._decline(NegotiationError(ControlFailure.BAD_FIELD, detail))
        if greeting.count > 2**self._config.max_count_exponent:
            detail = f"Count {greeting.count} above 2^{self._config.max_count_exponent}"
            return self._decline(NegotiationError(ControlFailure.COUNT_TOO_LARGE, detail))
        if mode & Modes.IKEV2_DERIVED:
            key_id, source = self._config.ikev2_key_id, self._config.ikev2_key_source
        else:
            key_id, source = self._config.key_id, self._config.key_source
        assert key_id is not None and source is not None  # ClientConfig checked the chain
        try:
            secret: SharedSecret | None = source.secret_for(key_id)
        except Exception as exc:  # a plug-in boundary (e.g. an IKE daemon): its failure must not kill us
            detail = f"key source failed: {type(exc).__name__}"
            return self._decline(NegotiationError(ControlFailure.KEY_SOURCE_ERROR, detail))
        if secret is None:
            return self._decline(NegotiationError(ControlFailure.UNKNOWN_KEY_ID, "no secret for our Key ID"))
        keys = ControlKeys.generate(self._rng)
        client_iv = self._rng(16)
        token = keys.seal_token(secret, greeting.salt, greeting.count, greeting.challenge)
        self._out.send_clear(
            SetupResponse(
                mode=int(mode), key_id=key_id_field(key_id), token=token, client_iv=client_iv
            ).encode()
        )
        self._out.protect(keys, client_iv)
        self._keys, self._key_id = keys, key_id
        self._state = ConnectionState.SETUP
        return True

    def _read_server_start(self) -> bool:
        if self._start_head is None:
            head = self._in.peek_clear(ServerStart.CLEAR_PART)
            if head is None:
                return False
            if head[15] == Accept.OK and self._keys is not None:
                # Octets 32-47 are the first block of the server's CBC stream, keyed by the IV in 16-31.
                self._in.take_clear(ServerStart.CLEAR_PART)
                self._in.protect(self._keys, head[16:32])
                self._start_head = head
            else:
                whole = self._in.take_clear(ServerStart.LAYOUT.size)
                if whole is None:
                    return False
                self._in.unprotected()
                return self._on_server_start(whole)
        tail = self._in.take(ServerStart.LAYOUT.size - ServerStart.CLEAR_PART)
        if tail is None:
            return False
        self._in.carry(tail)
        return self._on_server_start(self._start_head + tail)

    def _on_server_start(self, raw: bytes) -> bool:
        start = ServerStart.decode(raw, strict_mbz=self._config.strict_mbz)
        if start.accept is not Accept.OK:
            reason = (
                ControlFailure.UNKNOWN_SA
                if start.accept is Accept.UNKNOWN_SA
                else ControlFailure.SERVER_REFUSED
            )
            self._close(ConnectionFailed(reason, f"Server-Start Accept={int(start.accept)}", start.accept))
            return True
        assert self._security is not None
        self._state = ConnectionState.REQUEST
        self._events.append(
            SetupCompleted(self._mode, self._security, self._key_id, ntp_to_unix(start.start_time))
        )
        return True

    # replies --------------------------------------------------------------

    def _read_reply(self) -> bool:
        first = self._in.peek(BLOCK)
        if first is None:
            return False
        if not self._outstanding:
            raise MalformedMessage(
                ControlFailure.UNEXPECTED_MESSAGE, "server sent a message nobody asked for"
            )
        expected = self._outstanding[0]
        if expected.kind is _Awaiting.SESSION:
            length = AcceptSession.LAYOUT.size
        elif expected.kind is _Awaiting.START:
            length = StartAck.LAYOUT.size
        else:
            length = NSessionsMessage.peek_length(first)
            if length > self._config.max_message_size:
                raise MalformedMessage(ControlFailure.MESSAGE_TOO_LARGE, f"{length}-octet RFC 5938 ack")
        data = self._in.take(length)
        if data is None:
            return False
        self._in.verify(data)
        self._outstanding.popleft()
        strict = self._config.strict_mbz
        if expected.kind is _Awaiting.SESSION:
            assert expected.request is not None
            self._on_accept_session(AcceptSession.decode(data, strict_mbz=strict), expected.request)
        elif expected.kind is _Awaiting.START:
            ack = StartAck.decode(data, strict_mbz=strict)
            if ack.accept is Accept.OK:
                self._running.update(self._sessions)
                self._state = ConnectionState.TESTING
            self._events.append(StartAcked(ack.accept))
        else:
            self._on_n_ack(NSessionsMessage.decode(data, strict_mbz=strict), expected)
        return True

    def _on_accept_session(self, reply: AcceptSession, request: SessionRequest) -> None:
        if reply.accept is not Accept.OK:
            self._events.append(SessionRejected(reply.accept))
            return
        if reply.port == 0 or reply.sid in self._sessions:
            raise MalformedMessage(ControlFailure.BAD_FIELD, "Accept-Session with port 0 or a repeated SID")
        assert self._security is not None
        protected = self._keys is not None and self._security.test_is_protected
        params = TestSessionParams(
            sid=reply.sid,
            mode=self._security,
            sender_address=request.sender_address or str(self._local),
            sender_port=request.sender_port,
            reflector_address=request.reflector_address or str(self._peer),
            reflector_port=reply.port,
            padding_length=request.padding_length,
            start_time=request.start_time,
            timeout=request.timeout,
            dscp=request.dscp,
            reflect_octets=reply.reflected_octets if self._mode & Modes.REFLECT_OCTETS else 0,
            server_octets=reply.server_octets.to_bytes(2, "big"),
            symmetric=bool(self._mode & Modes.SYMMETRICAL_SIZE),
            keys=self._keys.test_session_keys(reply.sid, reflector=False)
            if protected and self._keys is not None
            else None,
            padding_to_reflect=request.padding_to_reflect if self._mode & Modes.REFLECT_OCTETS else 0,
        )
        self._sessions[reply.sid] = params
        self._events.append(SessionAccepted(params))

    def _on_n_ack(self, ack: NSessionsMessage, expected: _Outstanding) -> None:
        want = Command.START_N_ACK if expected.kind is _Awaiting.START_N else Command.STOP_N_ACK
        if ack.command is not want:
            raise MalformedMessage(
                ControlFailure.UNEXPECTED_MESSAGE, f"got {ack.command.name}, want {want.name}"
            )
        if ack.sids != expected.sids:
            raise MalformedMessage(ControlFailure.UNKNOWN_SID, f"{want.name} lists other SIDs than requested")
        if want is Command.START_N_ACK:
            if ack.accept is Accept.OK:
                self._running.update(ack.sids)
                self._state = ConnectionState.TESTING
            self._events.append(StartNAcked(ack.accept, ack.sids))
        else:
            if ack.accept is Accept.OK:
                self._running.difference_update(ack.sids)
                if not self._running:
                    self._state = ConnectionState.REQUEST
            self._events.append(StopNAcked(ack.accept, ack.sids))
