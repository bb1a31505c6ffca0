"""TWAMP-Control server side (Server + the control half of the Session-Reflector) as a sans-IO machine.

Use it like h11: the adapter creates one ControlServer per accepted TCP connection, sends
`data_to_send()` (the Server Greeting is ready at once), feeds every received chunk to `receive_data()`
(b"" on EOF) and drains `next_event()` until it returns None:

    SetupCompleted      -> the connection is authenticated; arm SERVWAIT while `awaiting_client`
    SessionRequested    -> reserve a UDP port, then accept_session(port, now=...) or reject_session(accept)
    StartRequested      -> start the reflectors, then ack_start(Accept.OK) (or a refusal)
    StartNRequested / StopNRequested -> ack_start_n(accept) / ack_stop_n(accept) (RFC 5938)
    StopRequested       -> stop every session after its Timeout; no reply
    RequestRejected     -> the machine refused something itself; count `reason`
    ConnectionFailed / ConnectionClosed -> flush data_to_send(), then close the socket

While a SessionRequested/StartRequested/Start-N/Stop-N answer is outstanding the machine reads no further
commands (the client may not pipeline past a reply). Time and randomness come from the caller: `rng` for the
Challenge, Salt, Server-IV and SID, `now` for the SID timestamp, `start_time` for Server-Start.

Failures: a mode not offered or not exactly one security mode -> Server-Start Accept=3; an unknown Key ID ->
Accept=1; IKEv2-derived mode (bit 7) and no IKE SA for SPIi|SPIr -> Accept=6 (RFC 7717 s5.3); a Token without
our Challenge -> Accept=1; a failing KeySource -> Accept=2; all then close. A bad HMAC, a malformed message or
a command out of turn closes the connection with no reply. Every one is a ControlFailure reason.

Where the RFC text could not be read in full, our reading and what it rests on:
- Accept for a refused Mode: 3 ("some aspect of request is not supported"). RFC 4656 s3.3 lets a sender use
  1 for every refusal but asks for the right value when it uses others, and makes the receiver read values
  it does not know as 1, so any non-zero value is a refusal to every client. emirica/fnoobt twamp-protocol
  (server.c) also answers 3 for a Mode with no usable bit. perfSONAR owamp (sapi.c OWPControlAccept) closes
  without Server-Start when the Mode is not exactly one security mode, and meant to answer 1 for a mode not
  offered (early versions test `mode & ~offered`; current ones `!(mode | offered)`, which no non-zero Mode
  reaches). Unknown Key ID and a wrong Token -> 1, and a failing key store -> 2, are what owamp sends too.
- SERVWAIT (RFC 5357 s3.1: the server MAY close a control connection with no packet "associated with that
  connection" for SERVWAIT seconds): `awaiting_client` is true in TESTING too; the listener suspends SERVWAIT
  while a started session of the connection is still reflecting (REFWAIT or its Timeout governs it then), as
  owamp's twampd stops its control timer from Start-Sessions until the sessions are over (owampd.c). A
  session accepted but not yet started does not suspend it.
- RFC 5938: Start-N/Stop-N naming an unknown, repeated or no SID is answered with the matching -Ack carrying
  Accept=1 and the connection stays up; Stop-Sessions still stops every session of the connection. Whether a
  session stopped by Stop-N may be started again is left to the adapter (the listener refuses, Accept=1);
  no stored RFC 5938 text or implementation settles it.
- RFC 6038: Octets to be reflected is granted as asked (Reflected Octets = the request's value) and
  Server Octets is the adapter's choice. "Length of padding to reflect" counts the octets at the start of
  the sender's padding that the reflector returns at the start of its own: RFC 6038 s5.1.3 (quoted in
  verified erratum EID 6408) has the sender append the truncation amount plus this length. It is refused
  as non-zero MBZ without Reflect Octets and handed to the test plane as TestSessionParams.padding_to_reflect.
- Stop-Sessions whose Number of Sessions differs from the sessions of the connection fails the connection,
  as owamp's twampd does (protocol.c _OWPReadStopSessions); some other reflectors ignore the field.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from nf.twamp.control_crypto import ControlKeys, Inbound, Outbound
from nf.twamp.control_events import (
    ConnectionClosed,
    ConnectionFailed,
    ConnectionState,
    ControlFailure,
    ControlProtocolError,
    MalformedMessage,
    NegotiationError,
    RequestRejected,
    ServerEvent,
    SessionRequested,
    SetupCompleted,
    StartNRequested,
    StartRequested,
    StopNRequested,
    StopRequested,
)
from nf.twamp.control_messages import (
    BLOCK,
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
    n_message_length,
    ntp_to_unix,
    unix_to_ntp,
)
from nf.twamp.keysource import KeySource, SharedSecret
from nf.twamp.modes import KNOWN_MODES, SECURITY_MODES, Accept, Modes, SecurityMode
from nf.twamp.test_session import TestSessionParams

_DSCP_MASK = 0x3F << 24
# Decrypting an unknown Key ID's Token with a fixed stand-in keeps the reply time independent of whether the
# Key ID exists (owamp does the same); the result is discarded.
_STAND_IN_SECRET = SharedSecret(b"twamp-nf unknown key id stand-in")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Policy of a TWAMP server; one instance is shared by all of its connections.

    key_source serves pre-shared Key IDs; ikev2_key_source serves RFC 7717 Key IDs (SPIi|SPIr, the first 16
    octets of the field) and must be set when IKEV2_DERIVED is offered.
    """

    modes: Modes
    key_source: KeySource | None = None
    ikev2_key_source: KeySource | None = None
    count: int = 2048
    max_sessions: int = 16
    max_message_size: int | None = None  # default: room for Start-N/Stop-N naming max_sessions SIDs
    strict_mbz: bool = True

    def __post_init__(self) -> None:
        unknown = int(self.modes) & ~int(KNOWN_MODES)  # int: IntFlag's ~ would drop unknown bits
        if unknown:
            raise ValueError(f"unknown Modes bits {unknown:#x}")
        if self.count < 1024 or self.count >= 2**32 or self.count & (self.count - 1):
            raise ValueError("Count must be a power of 2, at least 1024")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if self.modes & Modes.IKEV2_DERIVED and self.ikev2_key_source is None:
            raise ValueError("IKEv2-derived mode offered without an IKEv2 key source")
        protected = self.modes & (Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED)
        if protected and self.key_source is None and self.ikev2_key_source is None:
            raise ValueError("authenticated/encrypted/mixed modes offered without a key source")
        if self.max_message_size is not None and self.max_message_size < RequestTwSession.LAYOUT.size:
            raise ValueError("max_message_size must fit a Request-TW-Session (112 octets)")

    @property
    def message_limit(self) -> int:
        if self.max_message_size is not None:
            return self.max_message_size
        return max(RequestTwSession.LAYOUT.size, n_message_length(self.max_sessions))


@dataclass(slots=True)
class _Pending:
    """A request handed to the adapter and not yet answered."""

    command: Command
    request: RequestTwSession | None = None
    sids: tuple[bytes, ...] = ()


class ControlServer:
    def __init__(
        self,
        config: ServerConfig,
        *,
        rng: Callable[[int], bytes],
        start_time: float,
        local_address: str,
        peer_address: str,
    ) -> None:
        """`start_time`: when this server instance started (Unix seconds), sent in every Server-Start.

        `local_address` / `peer_address` are the control connection's endpoints; they replace zero addresses
        in Request-TW-Session (RFC 4656 s3.5).
        """
        self._config = config
        self._rng = rng
        self._start_time = start_time
        self._local = ipaddress.ip_address(local_address)
        self._peer = ipaddress.ip_address(peer_address)
        self._in = Inbound()
        self._out = Outbound()
        self._events: collections.deque[ServerEvent] = collections.deque()
        self._state = ConnectionState.GREETING
        self._mode = Modes(0)
        self._security: SecurityMode | None = None
        self._keys: ControlKeys | None = None
        self._pending: _Pending | None = None
        self._sessions: dict[bytes, TestSessionParams] = {}
        self._running: set[bytes] = set()
        self._greeting = ServerGreeting(
            modes=int(config.modes), challenge=rng(16), salt=rng(16), count=config.count
        )
        self._out.send_clear(self._greeting.encode())
        if not config.modes:
            self._close(ConnectionFailed(ControlFailure.SERVER_REFUSED, "no modes offered to this client"))

    def __repr__(self) -> str:
        state, sessions = self._state.value, len(self._sessions)
        return f"ControlServer(state={state}, mode={int(self._mode)}, sessions={sessions})"

    # ------------------------------------------------------------ adapter-facing state

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def mode(self) -> Modes:
        """The selected Mode word (0 until setup completes)."""
        return self._mode

    @property
    def awaiting_client(self) -> bool:
        """True when only a client message can move the connection on: the adapter's SERVWAIT applies."""
        return (
            self._state in (ConnectionState.GREETING, ConnectionState.REQUEST, ConnectionState.TESTING)
            and self._pending is None
        )

    @property
    def sessions(self) -> dict[bytes, TestSessionParams]:
        """Accepted sessions by SID (a copy)."""
        return dict(self._sessions)

    @property
    def running(self) -> frozenset[bytes]:
        """SIDs started and not yet stopped."""
        return frozenset(self._running)

    # ------------------------------------------------------------ sans-IO plumbing

    def receive_data(self, data: bytes) -> None:
        """Octets from the TCP stream; b"" means the client closed its side."""
        if self._state is ConnectionState.CLOSED:
            return
        if not data:
            self._on_eof()
            return
        self._in.feed(data)
        if self._in.buffered > 2 * self._config.message_limit + SetupResponse.LAYOUT.size:
            self._fail(MalformedMessage(ControlFailure.MESSAGE_TOO_LARGE, "client sent too much unread data"))
            return
        self._process()

    def next_event(self) -> ServerEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        return self._out.take()

    # ------------------------------------------------------------ adapter decisions

    def accept_session(self, port: int, *, now: float, server_octets: int = 0) -> TestSessionParams:
        """Answer the pending SessionRequested with Accept=0 and the reflector port the adapter reserved.

        `server_octets` is the RFC 6038 value returned in Accept-Session (used with Reflect Octets).
        Like every answer method, this raises RuntimeError when nothing of its kind is pending, e.g. because
        the connection failed meanwhile: check `state` after an await.
        """
        if not 0 < port < 65536 or not 0 <= server_octets < 65536:
            raise ValueError("port must be 1..65535 and server_octets 0..65535")
        pending = self._take_pending(Command.REQUEST_TW_SESSION)
        request = pending.request
        assert request is not None and self._security is not None
        reflector = self._resolve(request.receiver_address, self._local)
        sender = self._resolve(request.sender_address, self._peer)
        sid = self._make_sid(reflector, now)
        reflecting = bool(self._mode & Modes.REFLECT_OCTETS)
        reflect = request.octets_to_reflect if reflecting else 0
        params = TestSessionParams(
            sid=sid,
            mode=self._security,
            sender_address=str(sender),
            sender_port=request.sender_port,
            reflector_address=str(reflector),
            reflector_port=port,
            padding_length=request.padding_length,
            start_time=ntp_to_unix(request.start_time),
            timeout=interval_to_seconds(request.timeout),
            dscp=request.dscp,
            reflect_octets=reflect,
            server_octets=server_octets.to_bytes(2, "big"),
            symmetric=bool(self._mode & Modes.SYMMETRICAL_SIZE),
            keys=self._keys.test_session_keys(sid, reflector=True)
            if self._keys is not None and self._security.test_is_protected
            else None,
            padding_to_reflect=request.padding_to_reflect if reflecting else 0,
        )
        self._sessions[sid] = params
        self._out.send_message(
            AcceptSession(
                accept=Accept.OK, port=port, sid=sid, reflected_octets=reflect, server_octets=server_octets
            ).encode()
        )
        self._process()
        return params

    def reject_session(self, accept: Accept) -> None:
        if accept is Accept.OK:
            raise ValueError("reject_session needs a non-zero Accept")
        self._take_pending(Command.REQUEST_TW_SESSION)
        self._send_session_refusal(accept)
        self._process()

    def ack_start(self, accept: Accept = Accept.OK) -> None:
        """Answer StartRequested; on OK every accepted session counts as running."""
        self._take_pending(Command.START_SESSIONS)
        self._out.send_message(StartAck(accept=accept).encode())
        if accept is Accept.OK:
            self._running.update(self._sessions)
            self._state = ConnectionState.TESTING
        self._process()

    def ack_start_n(self, accept: Accept = Accept.OK) -> None:
        pending = self._take_pending(Command.START_N_SESSIONS)
        self._out.send_message(NSessionsMessage(Command.START_N_ACK, pending.sids, accept).encode())
        if accept is Accept.OK:
            self._running.update(pending.sids)
            self._state = ConnectionState.TESTING
        self._process()

    def ack_stop_n(self, accept: Accept = Accept.OK) -> None:
        pending = self._take_pending(Command.STOP_N_SESSIONS)
        self._out.send_message(NSessionsMessage(Command.STOP_N_ACK, pending.sids, accept).encode())
        if accept is Accept.OK:
            self._running.difference_update(pending.sids)
            if not self._running:
                self._state = ConnectionState.REQUEST
        self._process()

    # ------------------------------------------------------------ internals

    def _take_pending(self, command: Command) -> _Pending:
        pending = self._pending
        if pending is None or pending.command is not command:
            raise RuntimeError(f"no {command.name} is waiting for an answer")
        self._pending = None
        return pending

    def _close(self, event: ConnectionFailed | ConnectionClosed) -> None:
        self._state = ConnectionState.CLOSED
        self._pending = None
        self._events.append(event)

    def _fail(self, exc: ControlProtocolError, accept: Accept | None = None) -> None:
        self._close(ConnectionFailed(exc.reason, exc.detail, accept))

    def _on_eof(self) -> None:
        quiet = self._in.buffered == 0 and self._pending is None
        if quiet and self._state in (ConnectionState.REQUEST, ConnectionState.TESTING):
            self._close(ConnectionClosed())
        else:
            self._close(ConnectionFailed(ControlFailure.PEER_CLOSED, f"client closed in {self._state.value}"))

    def _process(self) -> None:
        try:
            while self._state is not ConnectionState.CLOSED and self._pending is None:
                if self._state is ConnectionState.GREETING:
                    progressed = self._read_setup()
                else:
                    progressed = self._read_command()
                if not progressed:
                    return
        except ControlProtocolError as exc:
            self._fail(exc)

    # setup ----------------------------------------------------------------

    def _read_setup(self) -> bool:
        raw = self._in.take_clear(SetupResponse.LAYOUT.size)
        if raw is None:
            return False
        response = SetupResponse.decode(raw, strict_mbz=self._config.strict_mbz)
        if response.mode == 0:
            raise NegotiationError(ControlFailure.CLIENT_DECLINED, "client sent Mode 0")
        security = SecurityMode.from_modes(response.mode & SECURITY_MODES)
        if security is None:
            self._refuse(Accept.NOT_SUPPORTED, ControlFailure.MODE_INVALID, f"Mode {response.mode:#x}")
            return True
        if response.mode & ~int(self._config.modes):
            self._refuse(Accept.NOT_SUPPORTED, ControlFailure.MODE_NOT_OFFERED, f"Mode {response.mode:#x}")
            return True
        mode = Modes(response.mode)
        if security is SecurityMode.UNAUTHENTICATED:
            self._start(mode, security, key_id=b"", keys=None, client_iv=b"")
            return True
        ikev2 = bool(mode & Modes.IKEV2_DERIVED)
        key_id = response.key_id[:16] if ikev2 else response.key_id.rstrip(b"\0")
        source = self._config.ikev2_key_source if ikev2 else self._config.key_source
        try:
            secret = source.secret_for(key_id) if source is not None else None
        except Exception as exc:  # a plug-in boundary (e.g. an IKE daemon): its failure must not kill us
            detail = f"key source failed: {type(exc).__name__}"
            self._refuse(Accept.INTERNAL_ERROR, ControlFailure.KEY_SOURCE_ERROR, detail)
            return True
        try:
            keys: ControlKeys | None = ControlKeys.open_token(
                secret if secret is not None else _STAND_IN_SECRET,
                self._greeting.salt,
                self._greeting.count,
                response.token,
                self._greeting.challenge,
            )
            token_error: ControlProtocolError | None = None
        except ControlProtocolError as exc:
            keys, token_error = None, exc
        if secret is None and ikev2:
            self._refuse(Accept.UNKNOWN_SA, ControlFailure.UNKNOWN_SA, "no IKEv2 SA for SPIi|SPIr")
        elif secret is None:
            self._refuse(Accept.FAILURE, ControlFailure.UNKNOWN_KEY_ID, "Key ID not in the key source")
        elif token_error is not None or keys is None:
            self._refuse(Accept.FAILURE, ControlFailure.BAD_TOKEN, "Token does not carry our Challenge")
        else:
            self._start(mode, security, key_id=key_id, keys=keys, client_iv=response.client_iv)
        return True

    def _refuse(self, accept: Accept, reason: ControlFailure, detail: str) -> None:
        """Server-Start with a non-zero Accept: no keys in force, octets 32-47 go in clear, then close."""
        self._out.send_clear(ServerStart(accept=accept, server_iv=bytes(16), start_time=0).encode())
        self._close(ConnectionFailed(reason, detail, accept))

    def _start(
        self,
        mode: Modes,
        security: SecurityMode,
        *,
        key_id: bytes,
        keys: ControlKeys | None,
        client_iv: bytes,
    ) -> None:
        self._mode, self._security, self._keys = mode, security, keys
        start = unix_to_ntp(self._start_time)
        if keys is None:
            self._out.send_clear(ServerStart(Accept.OK, bytes(16), start).encode())
            self._in.unprotected()
        else:
            server_iv = self._rng(16)
            message = ServerStart(Accept.OK, server_iv, start).encode()
            self._out.send_clear(message[: ServerStart.CLEAR_PART])
            self._out.protect(keys, server_iv)
            self._out.send_carried(message[ServerStart.CLEAR_PART :])
            self._in.protect(keys, client_iv)
        self._state = ConnectionState.REQUEST
        self._events.append(SetupCompleted(mode, security, key_id, ntp_to_unix(start)))

    # commands -------------------------------------------------------------

    def _read_command(self) -> bool:
        first = self._in.peek(BLOCK)
        if first is None:
            return False
        length = client_command_length(first)
        if length > self._config.message_limit:
            raise MalformedMessage(
                ControlFailure.MESSAGE_TOO_LARGE,
                f"{length} octets over the {self._config.message_limit} limit",
            )
        data = self._in.take(length)
        if data is None:
            return False
        self._in.verify(data)
        command = decode_client_command(data, strict_mbz=self._config.strict_mbz)
        individual = bool(self._mode & Modes.INDIVIDUAL_SESSION_CONTROL)
        testing = self._state is ConnectionState.TESTING
        if isinstance(command, RequestTwSession):
            self._expect(individual or not testing, "Request-TW-Session while sessions run")
            self._on_request(command)
        elif isinstance(command, StartSessions):
            self._expect(individual or not testing, "Start-Sessions while sessions run")
            self._pending = _Pending(Command.START_SESSIONS, sids=tuple(self._sessions))
            self._events.append(StartRequested(tuple(self._sessions)))
        elif isinstance(command, StopSessions):
            self._expect(individual or testing, "Stop-Sessions before Start-Sessions")
            self._on_stop(command)
        else:
            self._expect(individual, "RFC 5938 command without Individual Session Control")
            self._expect(not command.is_ack, f"{command.command.name} is a server message")
            self._on_n_command(command)
        return True

    def _expect(self, allowed: bool, detail: str) -> None:
        if not allowed:
            raise MalformedMessage(ControlFailure.UNEXPECTED_MESSAGE, detail)

    def _on_request(self, request: RequestTwSession) -> None:
        refusal: tuple[Accept, ControlFailure, str] | None = None
        if len(self._sessions) >= self._config.max_sessions:
            refusal = (
                Accept.PERMANENT_RESOURCE_LIMITATION,
                ControlFailure.SESSION_LIMIT,
                f"already {len(self._sessions)} sessions on this connection",
            )
        elif request.type_p & ~_DSCP_MASK:
            refusal = (Accept.NOT_SUPPORTED, ControlFailure.BAD_FIELD, "Type-P is not a DSCP descriptor")
        elif (
            self._config.strict_mbz
            and not self._mode & Modes.REFLECT_OCTETS
            and (request.octets_to_reflect or request.padding_to_reflect)
        ):
            refusal = (Accept.NOT_SUPPORTED, ControlFailure.NONZERO_MBZ, "RFC 6038 fields without the mode")
        if refusal is not None:
            accept, reason, detail = refusal
            self._send_session_refusal(accept)
            self._events.append(RequestRejected(reason, detail, accept))
            return
        self._pending = _Pending(Command.REQUEST_TW_SESSION, request=request)
        sender = self._resolve(request.sender_address, self._peer)
        reflector = self._resolve(request.receiver_address, self._local)
        self._events.append(
            SessionRequested(
                sender_address=str(sender),
                sender_port=request.sender_port,
                reflector_address=str(reflector),
                reflector_port=request.receiver_port,
                padding_length=request.padding_length,
                start_time=ntp_to_unix(request.start_time),
                timeout=interval_to_seconds(request.timeout),
                dscp=request.dscp,
                octets_to_reflect=request.octets_to_reflect,
                padding_to_reflect=request.padding_to_reflect,
            )
        )

    def _on_stop(self, stop: StopSessions) -> None:
        if stop.number_of_sessions != len(self._sessions):
            # owamp's twampd (protocol.c _OWPReadStopSessions) fails the control session on this too.
            raise MalformedMessage(
                ControlFailure.BAD_FIELD,
                f"Stop-Sessions names {stop.number_of_sessions} sessions, {len(self._sessions)} exist",
            )
        sids = tuple(self._sessions)
        self._sessions.clear()
        self._running.clear()
        self._state = ConnectionState.REQUEST
        self._events.append(StopRequested(stop.accept, sids))

    def _on_n_command(self, message: NSessionsMessage) -> None:
        start = message.command is Command.START_N_SESSIONS
        unknown = [sid for sid in message.sids if sid not in self._sessions]
        if not message.sids or unknown or len(set(message.sids)) != len(message.sids):
            ack = Command.START_N_ACK if start else Command.STOP_N_ACK
            self._out.send_message(NSessionsMessage(ack, message.sids, Accept.FAILURE).encode())
            reason = ControlFailure.UNKNOWN_SID if unknown else ControlFailure.BAD_FIELD
            self._events.append(
                RequestRejected(
                    reason, f"{message.command.name} names unknown/no/repeated SIDs", Accept.FAILURE
                )
            )
            return
        if start:
            self._pending = _Pending(Command.START_N_SESSIONS, sids=message.sids)
            self._events.append(StartNRequested(message.sids))
        else:
            self._pending = _Pending(Command.STOP_N_SESSIONS, sids=message.sids)
            self._events.append(StopNRequested(message.sids))

    def _send_session_refusal(self, accept: Accept) -> None:
        self._out.send_message(AcceptSession(accept=accept, port=0, sid=bytes(16)).encode())

    @staticmethod
    def _resolve(
        address: ipaddress.IPv4Address | ipaddress.IPv6Address,
        fallback: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return fallback if address.is_unspecified else address

    def _make_sid(self, reflector: ipaddress.IPv4Address | ipaddress.IPv6Address, now: float) -> bytes:
        """Receiver address (last 4 octets for IPv6) | NTP timestamp | 4 random octets (RFC 4656 s3.5)."""
        prefix = reflector.packed[-4:] + unix_to_ntp(now).to_bytes(8, "big")
        tail = int.from_bytes(self._rng(4), "big")
        while (sid := prefix + tail.to_bytes(4, "big")) in self._sessions:
            tail = (tail + 1) & 0xFFFFFFFF  # at most max_sessions steps
        return sid
