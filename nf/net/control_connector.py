"""The TWAMP client's asyncio shell: one control connection that requests, starts and stops test sessions.

The sans-IO ControlClient decides everything about the protocol; this module connects, moves octets, waits
for each reply with a timeout, runs one SessionSender per session in a worker thread (the sender is a
blocking fast path), and turns every failure into a ControlClientError whose text says in words what went
wrong (refused mode, wrong key, an Accept value by name, a timeout ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from nf.net.sender import SenderResult, SessionSender
from nf.twamp.control_client import ClientConfig, ControlClient, SessionRequest
from nf.twamp.control_events import (
    ClientEvent,
    ConnectionClosed,
    ConnectionFailed,
    ControlFailure,
    SessionAccepted,
    SessionRejected,
    SetupCompleted,
    StartAcked,
    StartNAcked,
    StopNAcked,
)
from nf.twamp.keysource import KeySource
from nf.twamp.modes import Accept, Modes, SecurityMode
from nf.twamp.results import Reply, SessionRecords
from nf.twamp.test_session import TestSessionParams

log = logging.getLogger(__name__)

READ_SIZE = 65536

ACCEPT_WORDS = {
    Accept.OK: "OK",
    Accept.FAILURE: "failure",
    Accept.INTERNAL_ERROR: "internal error",
    Accept.NOT_SUPPORTED: "not supported",
    Accept.PERMANENT_RESOURCE_LIMITATION: "permanent resource limitation",
    Accept.TEMPORARY_RESOURCE_LIMITATION: "temporary resource limitation",
    Accept.UNKNOWN_SA: "no IKEv2 SA for the Key ID",
}

_FEATURE_NAMES = {
    Modes.INDIVIDUAL_SESSION_CONTROL: "Individual Session Control (RFC 5938)",
    Modes.REFLECT_OCTETS: "Reflect Octets (RFC 6038)",
    Modes.SYMMETRICAL_SIZE: "Symmetrical Size (RFC 6038)",
}


def accept_text(accept: Accept | None) -> str:
    if accept is None:
        return "no Accept value"
    return f"Accept={int(accept)} ({ACCEPT_WORDS.get(accept, accept.name.lower())})"


class ControlClientError(Exception):
    """The control session failed; str() is the reason in words (never key material)."""

    def __init__(
        self, message: str, reason: ControlFailure | None = None, accept: Accept | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.accept = accept


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """The test traffic of each session."""

    count: int = 10
    interval: float = 0.1
    padding: int = 0
    dscp: int = 0
    reflect_octets: int = 0  # RFC 6038: octets of padding the reflector should copy back
    symmetric: bool = False  # RFC 6038 Symmetrical Size
    wait: float = 2.0  # seconds for late replies after the last packet; also the session Timeout


@dataclass(frozen=True, slots=True)
class MeasurementConfig:
    """One measurement run. `client`, when given, is the complete ClientConfig (e.g. an RFC 8913 mode chain
    with RFC 7717 keys from nf.binding.client_config) and takes the place of mode/key_id/keys/individual/
    max_count_exponent and the features derived from `plan`; `mode` then only names the run in messages."""

    host: str
    port: int
    mode: SecurityMode
    key_id: str | None = None
    keys: KeySource | None = None
    sessions: int = 1
    individual: bool = False  # RFC 5938 Start-N/Stop-N per session instead of Start/Stop-Sessions
    plan: SessionPlan = SessionPlan()
    timeout: float = 10.0  # seconds to wait for connect and for each control reply
    max_count_exponent: int = 20
    client: ClientConfig | None = None

    def client_config(self) -> ClientConfig:
        if self.client is not None:
            return self.client
        features = Modes(0)
        if self.individual:
            features |= Modes.INDIVIDUAL_SESSION_CONTROL
        if self.plan.reflect_octets:
            features |= Modes.REFLECT_OCTETS
        if self.plan.symmetric:
            features |= Modes.SYMMETRICAL_SIZE
        protected = self.mode.control_is_protected
        return ClientConfig(
            mode_preference=(self.mode.flag,),
            key_id=self.key_id.encode("utf-8") if protected and self.key_id else None,
            key_source=self.keys if protected else None,
            max_count_exponent=self.max_count_exponent,
            features=features,
        )


def _modes_text(config: MeasurementConfig) -> str:
    if config.client is None:
        return f"mode {config.mode.value}"
    return "any mode of the chain " + ", ".join(str(int(m)) for m in config.client.mode_preference)


def _key_text(config: MeasurementConfig) -> str:
    if config.client is None:
        return f"unknown key-id {config.key_id!r}"
    return "unknown Key ID"


def describe_failure(event: ConnectionFailed, config: MeasurementConfig) -> str:
    """Turns a ConnectionFailed into the sentence an operator needs."""
    reason, accept = event.reason, event.accept
    if reason is ControlFailure.SERVER_REFUSED and event.detail == "server offers no modes":
        return "server refused the connection: it offers no modes (connection limit reached or not allowed)"
    if reason is ControlFailure.SERVER_REFUSED and accept is Accept.NOT_SUPPORTED:
        return f"server does not support {_modes_text(config)}: Server-Start {accept_text(accept)}"
    if reason is ControlFailure.SERVER_REFUSED and accept is Accept.FAILURE:
        return (
            f"server rejected the authentication (wrong key or {_key_text(config)}): "
            f"Server-Start {accept_text(accept)}"
        )
    if reason is ControlFailure.SERVER_REFUSED:
        return f"server refused the control connection: Server-Start {accept_text(accept)}"
    if reason is ControlFailure.UNKNOWN_SA:
        return f"server knows no IKEv2 SA for our Key ID: Server-Start {accept_text(accept)}"
    if reason is ControlFailure.NO_COMMON_MODE:
        return f"server does not offer {_modes_text(config)} ({event.detail})"
    if reason is ControlFailure.COUNT_TOO_LARGE:
        return f"server asks for too many PBKDF2 iterations ({event.detail}); see --max-count-exponent"
    if reason is ControlFailure.BAD_HMAC:
        return "control message failed its HMAC check (the server does not hold our key, or data was altered)"
    if reason is ControlFailure.PEER_CLOSED:
        return f"server closed the control connection unexpectedly ({event.detail})"
    return f"control protocol error: {reason.value}: {event.detail}"


class ControlConnection:
    """The connection: a ControlClient fed from the socket; waits for one kind of event at a time."""

    def __init__(self, config: MeasurementConfig, rng: Callable[[int], bytes]) -> None:
        self.config = config
        self.rng = rng
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.machine: ControlClient | None = None
        self.local = ""

    async def connect(self) -> None:
        config = self.config
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(config.host, config.port), config.timeout
            )
        except TimeoutError:
            raise ControlClientError(f"timed out connecting to {config.host} port {config.port}") from None
        except OSError as exc:
            raise ControlClientError(
                f"cannot connect to {config.host} port {config.port}: {exc.strerror or exc}"
            ) from None
        self.reader, self.writer = reader, writer
        local = writer.get_extra_info("sockname")
        peer = writer.get_extra_info("peername")
        self.local = local[0].split("%", 1)[0]
        self.machine = ControlClient(
            config.client_config(),
            rng=self.rng,
            local_address=self.local,
            peer_address=peer[0].split("%", 1)[0],
        )

    async def flush(self) -> None:
        assert self.machine is not None and self.writer is not None
        data = self.machine.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def expect(self, kinds: tuple[type, ...], waiting_for: str) -> ClientEvent:
        """Reads until an event of `kinds` arrives; any failure becomes ControlClientError."""
        assert self.machine is not None and self.reader is not None
        deadline = asyncio.get_running_loop().time() + self.config.timeout
        while True:
            await self.flush()
            event = self.machine.next_event()
            if event is None:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise ControlClientError(
                        f"timed out after {self.config.timeout:g} s waiting for {waiting_for}"
                    )
                try:
                    data = await asyncio.wait_for(self.reader.read(READ_SIZE), remaining)
                except TimeoutError:
                    continue
                except OSError as exc:
                    raise ControlClientError(f"control connection lost: {exc}") from None
                self.machine.receive_data(data)
                continue
            if isinstance(event, ConnectionFailed):
                await self.flush()
                raise ControlClientError(describe_failure(event, self.config), event.reason, event.accept)
            if isinstance(event, ConnectionClosed):
                raise ControlClientError(
                    f"server closed the control connection while we waited for {waiting_for}"
                )
            if isinstance(event, kinds):
                return event

    def check_open(self, during: str) -> None:
        """Raises when the server closed the control connection while we were not reading (during a test)."""
        if self.reader is not None and self.reader.at_eof():
            raise ControlClientError(f"server closed the control connection during {during}")

    async def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError):
                await self.flush()
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def measure(
    config: MeasurementConfig,
    *,
    rng: Callable[[int], bytes] = os.urandom,
    clock: Callable[[], float] = time.time,
) -> list[SessionRecords]:
    """Connect, negotiate, request config.sessions sessions, run them, stop, and return what each measured."""
    control = ControlConnection(config, rng)
    senders: list[SessionSender] = []
    try:
        return await _measure(control, config, clock, senders)
    except (ConnectionError, OSError) as exc:
        raise ControlClientError(f"control connection lost: {exc.strerror or exc}") from None
    finally:
        for sender in senders:
            sender.close()
        await control.close()


async def _measure(
    control: ControlConnection,
    config: MeasurementConfig,
    clock: Callable[[], float],
    senders: list[SessionSender],
) -> list[SessionRecords]:
    await control.connect()
    machine = control.machine
    assert machine is not None
    setup = await control.expect((SetupCompleted,), "the Server Greeting and Server-Start")
    assert isinstance(setup, SetupCompleted)
    log.info(
        "control connection %s -> %s port %d: mode %#x (%s), Key ID %s",
        control.local,
        config.host,
        config.port,
        int(setup.mode),
        setup.security.value,
        _key_id_text(setup.key_id),
    )
    _check_features(setup.mode, config)
    sessions: list[tuple[SessionSender, TestSessionParams]] = []
    for _ in range(config.sessions):
        sender = SessionSender(control.local)
        senders.append(sender)
        machine.request_session(_request(config.plan, sender.port, clock()))
        event = await control.expect((SessionAccepted, SessionRejected), "Accept-Session")
        if isinstance(event, SessionRejected):
            raise ControlClientError(
                f"server rejected the test session: Accept-Session {accept_text(event.accept)}"
            )
        assert isinstance(event, SessionAccepted)
        sessions.append((sender, event.params))
        _log_session(event.params)
    if config.individual:
        results = await _run_individually(control, machine, sessions, config.plan)
    else:
        machine.start_sessions()
        ack = await control.expect((StartAcked,), "Start-Ack")
        assert isinstance(ack, StartAcked)
        if ack.accept is not Accept.OK:
            raise ControlClientError(
                f"server did not start the sessions: Start-Ack {accept_text(ack.accept)}"
            )
        log.info("Start-Sessions acknowledged for %d sessions", len(sessions))
        results = await asyncio.gather(*(_run_sender(s, p, config.plan) for s, p in sessions))
        control.check_open("the test")
        machine.stop_sessions(Accept.OK)
        log.info("Stop-Sessions sent for %d sessions", len(sessions))
        await control.flush()
    return [records_of(result) for result in results]


def _key_id_text(key_id: bytes) -> str:
    """A Key ID is an identity, not a secret; RFC 7717 ones (SPIi|SPIr) are binary, so show those in hex."""
    if not key_id:
        return "none"
    try:
        text = key_id.decode("ascii")
    except UnicodeDecodeError:
        return key_id.hex()
    return repr(text) if text.isprintable() else key_id.hex()


def _log_session(params: TestSessionParams) -> None:
    log.info(
        "session %s accepted: %s port %d -> reflector %s port %d, padding %d, reflect octets %d%s",
        params.sid.hex(),
        params.sender_address,
        params.sender_port,
        params.reflector_address,
        params.reflector_port,
        params.padding_length,
        params.reflect_octets,
        ", symmetrical size" if params.symmetric else "",
    )


def _check_features(mode: Modes, config: MeasurementConfig) -> None:
    wanted = config.client_config().features
    for bit, name in _FEATURE_NAMES.items():
        if wanted & bit and not mode & bit:
            raise ControlClientError(f"server does not offer {name}")


def _request(plan: SessionPlan, sender_port: int, now: float) -> SessionRequest:
    return SessionRequest(
        sender_port=sender_port,
        reflector_port=0,
        start_time=now,
        timeout=plan.wait,
        padding_length=plan.padding,
        dscp=plan.dscp,
        octets_to_reflect=plan.reflect_octets,
    )


async def _run_sender(sender: SessionSender, params: TestSessionParams, plan: SessionPlan) -> SenderResult:
    return await asyncio.to_thread(
        sender.run, params, count=plan.count, interval=plan.interval, reply_timeout=plan.wait
    )


async def _run_individually(
    control: ControlConnection,
    machine: ControlClient,
    sessions: list[tuple[SessionSender, TestSessionParams]],
    plan: SessionPlan,
) -> list[SenderResult]:
    """RFC 5938: start each session with its own Start-N-Sessions, stop it with Stop-N-Sessions when its
    sender is done; the other sessions keep running meanwhile."""
    running: dict[bytes, asyncio.Task[SenderResult]] = {}
    for sender, params in sessions:
        machine.start_n([params.sid])
        ack = await control.expect((StartNAcked,), "Start-N-Ack")
        assert isinstance(ack, StartNAcked)
        if ack.accept is not Accept.OK:
            raise ControlClientError(f"server did not start session: Start-N-Ack {accept_text(ack.accept)}")
        log.info("session %s started (Start-N-Ack)", params.sid.hex())
        running[params.sid] = asyncio.create_task(_run_sender(sender, params, plan))
    results: dict[bytes, SenderResult] = {}
    pending = set(running.values())
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            result = task.result()
            control.check_open("the test")
            results[result.sid] = result
            machine.stop_n([result.sid])
            stop = await control.expect((StopNAcked,), "Stop-N-Ack")
            assert isinstance(stop, StopNAcked)
            if stop.accept is not Accept.OK:
                raise ControlClientError(
                    f"server did not stop session: Stop-N-Ack {accept_text(stop.accept)}"
                )
            log.info("session %s stopped (Stop-N-Ack)", result.sid.hex())
    return [results[params.sid] for _, params in sessions]


def records_of(result: SenderResult) -> SessionRecords:
    """Sender records -> statistics input; replies in arrival order (by T4) so reordering can be seen."""
    replies: list[Reply] = []
    for record in result.records:
        if record.t2 is None or record.t3 is None or record.t4 is None:
            continue
        reply = Reply(
            seq=record.sender_seq,
            t1=record.t1,
            t2=record.t2,
            t3=record.t3,
            t4=record.t4,
            sender_synchronized=record.sender_error.synchronized,
            reflector_synchronized=record.reflector_error is not None and record.reflector_error.synchronized,
        )
        replies.extend([reply] * (1 + record.duplicates))
    replies.sort(key=lambda r: r.t4)
    return SessionRecords(sent=result.sent, replies=replies)
