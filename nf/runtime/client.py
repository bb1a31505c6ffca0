"""The runtime's Control-Client: one task per configured ctrl-connection that runs its test sessions.

A run connects (keyed from the bound IKE peer's SA by nf.binding, or from the key-chain), requests every
test-session-request a Session-Sender test-session names, starts them, sends with one SessionSender each,
stops them and keeps each session's results for state and the test-session-completed notification. The
protocol work is nf.net.control_connector's ControlConnection; this module adds the mode chain, the RFC
7717 keying and the bookkeeping management reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nf.binding import ClientBinding, ClientPeer, NoIKESA, NoSAPolicy, SAKeying, client_config
from nf.net.control_connector import (
    ControlClientError,
    ControlConnection,
    MeasurementConfig,
    records_of,
)
from nf.net.sender import SenderResult, SessionSender
from nf.net.socket_options import set_dscp
from nf.runtime import events
from nf.runtime.config import ConnectionPlan, PeerPlan, SessionPlan, modes_to_text, ntp_to_unix, unix_to_ntp
from nf.runtime.ike import IKEHub, ListenerScope
from nf.twamp.control_client import ClientConfig, ControlClient, SessionRequest
from nf.twamp.control_events import SessionAccepted, SessionRejected, SetupCompleted, StartAcked
from nf.twamp.modes import SECURITY_MODES, Accept, Modes, SecurityMode
from nf.twamp.results import Summary, summarize
from nf.twamp.test_session import TestSessionParams

log = logging.getLogger("nf.runtime.client")

CONTROL_TIMEOUT = 30.0  # seconds for connect and each control reply
RETRY_DELAY = 10.0  # seconds before a failed connection is tried again
FOREVER = 2**32 - 1  # YANG repeat value meaning "repeat forever"
NO_IKE_SA = "control-no-ike-sa"  # RFC 7717 binding: the peer gave no SA in time


@dataclass(frozen=True, slots=True)
class _Measurement(MeasurementConfig):
    """A MeasurementConfig whose ClientConfig is given (mode chain and RFC 7717 keys) rather than derived."""

    given: ClientConfig | None = None

    def client_config(self) -> ClientConfig:
        assert self.given is not None
        return self.given


class _Connection(ControlConnection):
    """ControlConnection from a configured local address (client-ip), with the configured DSCP."""

    def __init__(self, config: _Measurement, local_address: str | None, dscp: int) -> None:
        super().__init__(config, os.urandom)
        self._local_address = local_address
        self._dscp = dscp

    async def connect(self) -> None:
        config = self.config
        local = (self._local_address, 0) if self._local_address is not None else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(config.host, config.port, local_addr=local), config.timeout
            )
        except TimeoutError:
            raise ControlClientError(f"timed out connecting to {config.host} port {config.port}") from None
        except OSError as exc:
            raise ControlClientError(
                f"cannot connect to {config.host} port {config.port}: {exc.strerror or exc}"
            ) from None
        sock = writer.get_extra_info("socket")
        if sock is not None and self._dscp:
            with contextlib.suppress(OSError):
                set_dscp(sock, self._dscp)
        self.reader, self.writer = reader, writer
        self.local = str(writer.get_extra_info("sockname")[0]).split("%", 1)[0]
        self.machine = ControlClient(
            config.client_config(),
            rng=self.rng,
            local_address=self.local,
            peer_address=str(writer.get_extra_info("peername")[0]).split("%", 1)[0],
        )


@dataclass
class SessionState:
    state: str = "scheduled"
    accept: Accept | None = None
    sid: bytes | None = None
    summary: Summary | None = None


@dataclass
class ConnectionState:
    state: str = "idle"
    client_port: int | None = None
    server_start_time: int | None = None
    selected_mode: Modes | None = None
    last_error: str | None = None
    key_id: str | None = None
    spis: tuple[bytes, bytes] | None = None
    ike_peer: str | None = None
    sessions: dict[str, SessionState] = field(default_factory=dict)


class ClientRun:
    """One ctrl-connection's task and state; `close()` cancels it."""

    def __init__(
        self,
        plan: ConnectionPlan,
        hub: IKEHub,
        peer: PeerPlan | None,
        publish: Callable[[tuple[str, dict[str, Any]]], None],
        errors: Counter[str],
    ) -> None:
        self.plan = plan
        self.state = ConnectionState(sessions={s.name: SessionState() for s in plan.sessions})
        self._publish = publish
        self._errors = errors
        self._scope: ListenerScope | None = None
        self._binding: ClientBinding | None = None
        if plan.ikev2 is not None and peer is not None:
            self._scope = hub.scope()
            self._binding = ClientBinding(
                self._scope,
                ClientPeer(
                    plan.ikev2.peer,
                    peer.config,
                    (peer.address, peer.port),
                    NoSAPolicy(plan.ikev2.no_sa_policy),
                    plan.ikev2.initiate_timeout,
                ),
            )
            self._binding.add_observer(self._on_fallback)
            existing = hub.established(plan.ikev2.peer)
            if existing is not None:
                self._scope.replay_established(existing)
        self._senders: list[SessionSender] = []
        self._keying: SAKeying | None = None
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        if self._binding is not None:
            self._binding.close()
        if self._scope is not None:
            self._scope.close()

    def _on_fallback(self, _event: object) -> None:
        assert self.plan.ikev2 is not None
        fallback = next((m for m in self.plan.chain if not m & Modes.IKEV2_DERIVED), None)
        self._publish(
            events.key_source_fallback(
                self.plan.name,
                self.plan.ikev2.peer,
                modes_to_text(fallback) if fallback is not None else None,
            )
        )

    def _fail(self, reason: str, accept: Accept | None = None) -> None:
        self.state.state = "failed"
        self.state.last_error = reason
        self._errors[reason] += 1
        self._publish(
            events.ctrl_connection_failed(
                role="client",
                reason=reason,
                connection=self.plan.name,
                server=(self.plan.server_address, self.plan.server_port),
                accept=accept,
            )
        )
        for session in self.plan.sessions:
            state = self.state.sessions[session.name]
            if state.state in ("scheduled", "active"):
                state.state = "failed"

    async def _run(self) -> None:
        plan = self.plan
        runs = 1 + max((s.repeat for s in plan.sessions), default=0)
        interval = max((s.repeat_interval for s in plan.sessions), default=0.0)
        done = 0
        while runs > FOREVER or done < runs:
            try:
                await self._once()
                done += 1
            except ControlClientError as exc:
                if exc.accept is Accept.UNKNOWN_SA and self._binding is not None and self._keying is not None:
                    self._binding.server_rejected(self._keying)
                reason = f"control-{exc.reason.value}" if exc.reason else "control-peer-closed"
                log.warning("ctrl-connection %s: %s", plan.name, exc)
                self._fail(reason, exc.accept)
            except NoIKESA as exc:
                log.warning("ctrl-connection %s: %s", plan.name, exc)
                self._fail(NO_IKE_SA)
            except (OSError, ValueError) as exc:
                log.warning("ctrl-connection %s: %s", plan.name, exc)
                self._fail("control-peer-closed")
            else:
                if done < runs or runs > FOREVER:
                    await asyncio.sleep(max(interval, 1.0))
                continue
            await asyncio.sleep(RETRY_DELAY)  # YANG state failed, then idle: retried later

    async def _keys(self) -> ClientConfig:
        plan = self.plan
        key_source = plan.key_chain
        key_id = plan.key_id.encode("utf-8") if plan.key_id is not None else None
        keying: SAKeying | None = None
        chain = plan.chain
        if self._binding is not None and any(m & Modes.IKEV2_DERIVED for m in chain):
            self.state.state = "waiting-for-ike-sa"
            keying = await self._binding.keying()
            self._keying = keying
            if keying is not None:
                self.state.spis, self.state.ike_peer = keying.spis, self._binding.peer.name
        else:
            chain = tuple(m for m in chain if not m & Modes.IKEV2_DERIVED)
        if keying is None:
            self.state.spis = None
        return client_config(
            keying,
            chain,
            key_id=key_id,
            key_source=key_source,
            max_count_exponent=plan.max_count_exponent,
            features=_features(plan),
        )

    async def _once(self) -> None:
        plan = self.plan
        for state in self.state.sessions.values():
            state.state, state.summary, state.sid, state.accept = "scheduled", None, None, None
        self.state.state = "connecting"
        given = await self._keys()
        self.state.state = "connecting"
        security = (
            SecurityMode.from_modes(given.mode_preference[0] & SECURITY_MODES) or SecurityMode.UNAUTHENTICATED
        )
        config = _Measurement(
            host=plan.server_address,
            port=plan.server_port,
            mode=security,
            key_id=plan.key_id,
            timeout=CONTROL_TIMEOUT,
            max_count_exponent=plan.max_count_exponent,
            given=given,
        )
        control = _Connection(config, plan.client_address, plan.dscp)
        try:
            await control.connect()
            assert control.writer is not None and control.machine is not None
            self.state.client_port = int(control.writer.get_extra_info("sockname")[1])
            setup = await control.expect((SetupCompleted,), "the Server Greeting and Server-Start")
            assert isinstance(setup, SetupCompleted)
            if (
                setup.mode & Modes.IKEV2_DERIVED
                and self._binding is not None
                and given.ikev2_key_source is not None
            ):
                self.state.key_id = None
            else:
                self.state.spis = None
                self.state.key_id = setup.key_id.decode("utf-8", "replace") if setup.key_id else None
            self.state.selected_mode = setup.mode
            self.state.server_start_time = unix_to_ntp(setup.server_start_time)
            self.state.state = "active"
            await self._sessions(control)
        finally:
            await control.close()
            for sender in self._senders:
                sender.close()
            self._senders.clear()
        if self.state.state == "active":
            self.state.state = "idle"

    async def _sessions(self, control: ControlConnection) -> None:
        machine = control.machine
        assert machine is not None
        accepted: list[tuple[SessionPlan, SessionSender, TestSessionParams]] = []
        for session in self.plan.sessions:
            state = self.state.sessions[session.name]
            sender = SessionSender(session.sender_address or control.local, session.sender_port)
            self._senders.append(sender)
            machine.request_session(_request(session, sender.port))
            event = await control.expect((SessionAccepted, SessionRejected), "Accept-Session")
            if isinstance(event, SessionRejected):
                state.state, state.accept = "failed", event.accept
                continue
            assert isinstance(event, SessionAccepted)
            state.accept, state.sid = Accept.OK, event.params.sid
            accepted.append((session, sender, event.params))
        if not accepted:
            return
        machine.start_sessions()
        ack = await control.expect((StartAcked,), "Start-Ack")
        assert isinstance(ack, StartAcked)
        if ack.accept is not Accept.OK:
            raise ControlClientError(f"Start-Ack {int(ack.accept)}", None, ack.accept)
        for session, _, _ in accepted:
            self.state.sessions[session.name].state = "active"
        results = await _run_senders(accepted)
        machine.stop_sessions(Accept.OK)
        await control.flush()
        for (session, _, params), result in zip(accepted, results, strict=True):
            summary = summarize([records_of(result)])
            state = self.state.sessions[session.name]
            state.state, state.summary = "completed", summary
            for reason, count in result.dropped.items():
                if count:
                    self._errors[f"sender-{reason.value}"] += count
            self._publish(events.test_session_completed(session.name, params.sid, "completed", summary))


def _features(plan: ConnectionPlan) -> Modes:
    features = plan.features & (Modes.REFLECT_OCTETS | Modes.SYMMETRICAL_SIZE)
    if any(s.octets_to_reflect or s.padding_to_reflect for s in plan.sessions):
        features |= Modes.REFLECT_OCTETS
    if any(s.symmetric for s in plan.sessions):
        features |= Modes.SYMMETRICAL_SIZE
    return features


def _request(session: SessionPlan, sender_port: int) -> SessionRequest:
    start = ntp_to_unix(session.start_time_ntp) if session.start_time_ntp else 0.0
    return SessionRequest(
        sender_port=sender_port,
        reflector_port=session.reflector_port,
        start_time=start,
        timeout=session.timeout,
        padding_length=session.padding_length,
        dscp=session.dscp,
        sender_address=session.sender_address,
        reflector_address=session.reflector_address,
        octets_to_reflect=session.octets_to_reflect,
        padding_to_reflect=session.padding_to_reflect,
    )


def _zero_fill(length: int) -> bytes:
    return bytes(length)


async def _run_senders(
    accepted: list[tuple[SessionPlan, SessionSender, TestSessionParams]],
) -> list[SenderResult]:
    """Each SessionSender in a worker thread (the sender is a blocking fast path). When the run is
    cancelled (reconfiguration, shutdown) the senders are told to stop and their threads are waited for,
    so no thread is left using a socket that is about to be closed."""
    loop = asyncio.get_running_loop()
    futures = [
        loop.run_in_executor(
            None,
            functools.partial(
                sender.run,
                params,
                count=session.count,
                interval=session.interval,
                schedule=session.schedule,
                max_interval=session.max_interval,
                reply_timeout=max(session.timeout, 1.0),
                random_bytes=os.urandom if session.random_fill else _zero_fill,
                start_at=ntp_to_unix(session.start_time_ntp) if session.start_time_ntp else None,
            ),
        )
        for session, sender, params in accepted
    ]
    try:
        return list(await asyncio.shield(asyncio.gather(*futures)))
    except asyncio.CancelledError:
        for _, sender, _ in accepted:
            sender.cancel()
        await asyncio.wait(futures)
        raise


class LightRun:
    """One TWAMP Light Session-Sender test-session (RFC 5357 Appendix I): no control connection, the
    configuration is the agreement; unauthenticated test packets, run once per apply."""

    def __init__(
        self,
        plan: SessionPlan,
        publish: Callable[[tuple[str, dict[str, Any]]], None],
        errors: Counter[str],
    ) -> None:
        self.plan = plan
        self.state = SessionState()
        self._publish = publish
        self._errors = errors
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    async def _run(self) -> None:
        plan = self.plan
        family_any = "::" if ":" in plan.reflector_address else "0.0.0.0"
        try:
            sender = SessionSender(plan.sender_address or family_any, plan.sender_port)
        except OSError as exc:
            log.warning("TWAMP Light session %s: cannot bind its UDP port: %s", plan.name, exc)
            self.state.state = "failed"
            return
        try:
            params = TestSessionParams(
                sid=bytes(16),  # TWAMP Light has no SID; unauthenticated packets do not carry one
                mode=SecurityMode.UNAUTHENTICATED,
                sender_address=sender.address,
                sender_port=sender.port,
                reflector_address=plan.reflector_address,
                reflector_port=plan.reflector_port,
                padding_length=plan.padding_length,
                start_time=0.0,
                timeout=plan.timeout,
                dscp=plan.dscp,
                reflect_octets=plan.octets_to_reflect,
                server_octets=b"",
                symmetric=plan.symmetric,
                keys=None,
            )
            self.state.state = "active"
            (result,) = await _run_senders([(plan, sender, params)])
        finally:
            sender.close()
        summary = summarize([records_of(result)])
        self.state.state, self.state.summary = "completed", summary
        for reason, count in result.dropped.items():
            if count:
                self._errors[f"sender-{reason.value}"] += count
        self._publish(events.test_session_completed(plan.name, None, "completed", summary))
