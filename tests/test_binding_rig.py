"""Shared rig of the RFC 7717 binding tests (no tests of its own): two IKE endpoints, a real TWAMP server
keyed by a ServerBinding, and a real Control-Client (ControlConnection + SessionSender) keyed by a
ClientBinding snapshot.

Everything binds 127.0.0.1 (or ::1) on kernel-chosen ports and is closed by `Rig.close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field

from nf.binding import (
    ClientBinding,
    ClientPeer,
    NoSAPolicy,
    SAKeying,
    ServerBinding,
    UnknownSA,
    client_config,
)
from nf.ike.auth import PreSharedKey
from nf.ike.exchanges import PeerConfig
from nf.ike.identities import Identity
from nf.net.control_connector import ControlConnection, MeasurementConfig
from nf.net.control_listener import ControlListener
from nf.net.ike_endpoint import IKEEndpoint, open_ike_endpoint
from nf.net.limits import Limits
from nf.net.reflector import Reflector
from nf.net.sender import SenderResult, SessionSender
from nf.twamp.control_client import ClientConfig, SessionRequest
from nf.twamp.control_events import SessionAccepted, SetupCompleted, StartAcked
from nf.twamp.control_server import ServerConfig
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import Accept, Modes, SecurityMode
from nf.twamp.test_session import TestSessionParams
from tests import ike_peers
from tests.strongswan_peer import CharonPKI

PSK = PreSharedKey(b"binding wire test secret, long enough")
CLIENT_ID, SERVER_ID = "client.test", "server.test"
KEYCHAIN = KeyChain({"fallback": b"key-chain secret for the fallback"})
OFFERED = Modes.UNAUTHENTICATED | Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED | Modes.IKEV2_DERIVED
IKEV2_AUTH = Modes.AUTHENTICATED | Modes.IKEV2_DERIVED  # 130
IKEV2_ENC = Modes.ENCRYPTED | Modes.IKEV2_DERIVED  # 132
IKEV2_MIXED = Modes.MIXED | Modes.IKEV2_DERIVED  # 136


def psk_peer(local: str, remote: str) -> PeerConfig:
    return ike_peers.psk_peer(local, remote, PSK)


def cert_peer(pki: CharonPKI, local: str, remote: str) -> PeerConfig:
    return ike_peers.cert_peer(pki, local, remote, "aes256-sha384-ecp384")


def run(coro: Awaitable[None], timeout: float = 150.0) -> None:
    """Longer than the IKE tests' bound: a TWAMP session runs on top of the IKE SA."""
    ike_peers.run(coro, timeout)


@dataclass
class Rig:
    client_ike: IKEEndpoint
    server_ike: IKEEndpoint
    client_peer: PeerConfig
    server_binding: ServerBinding
    listener: ControlListener
    address: str
    port: int
    unknown: list[UnknownSA] = field(default_factory=list)
    bindings: list[ClientBinding] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        client_peer: PeerConfig,
        server_peer: PeerConfig,
        *,
        allowed: Sequence[str] = (CLIENT_ID,),
        offered: Modes = OFFERED,
        host: str = "127.0.0.1",
    ) -> Rig:
        client_ike = await open_ike_endpoint((host, 0), peers=[client_peer])
        server_ike = await open_ike_endpoint((host, 0), peers=[server_peer])
        binding = ServerBinding(server_ike, [Identity.parse(a) for a in allowed])
        config = ServerConfig(modes=offered, key_source=KEYCHAIN, ikev2_key_source=binding, count=1024)
        listener = ControlListener(config, Limits(servwait=60.0, refwait=60.0), Reflector())
        address = (await listener.listen(host, 0))[0]
        port = int(address.rsplit(":", 1)[1])
        rig = cls(client_ike, server_ike, client_peer, binding, listener, host, port)
        binding.add_observer(rig.unknown.append)
        return rig

    def client_binding(
        self, policy: NoSAPolicy = NoSAPolicy.INITIATE, timeout: float = 30.0
    ) -> ClientBinding:
        peer = ClientPeer("server", self.client_peer, self.server_ike.local, policy, timeout)
        binding = ClientBinding(self.client_ike, peer)
        self.bindings.append(binding)
        return binding

    async def __aenter__(self) -> Rig:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for binding in self.bindings:
            binding.close()
        await self.listener.close()
        self.listener.reflector.close()
        self.client_ike.close()
        self.server_ike.close()

    def measurement(self, config: ClientConfig) -> MeasurementConfig:
        """The binding's ClientConfig (IKEv2-derived Key ID and secret) as given, not derived from `mode`."""
        return MeasurementConfig(
            host=self.address, port=self.port, mode=SecurityMode.AUTHENTICATED, client=config, timeout=30.0
        )

    async def connect(self, keying: SAKeying | None, chain: Sequence[Modes]) -> ControlConnection:
        config = client_config(keying, chain, key_id=b"fallback", key_source=KEYCHAIN, max_count_exponent=12)
        connection = ControlConnection(self.measurement(config), rng=os.urandom)
        await connection.connect()
        return connection

    @contextlib.asynccontextmanager
    async def connected(
        self, keying: SAKeying | None, chain: Sequence[Modes]
    ) -> AsyncIterator[ControlConnection]:
        connection = await self.connect(keying, chain)
        try:
            yield connection
        finally:
            await connection.close()


async def setup(connection: ControlConnection) -> SetupCompleted:
    event = await connection.expect((SetupCompleted,), "Server-Start")
    assert isinstance(event, SetupCompleted)
    return event


async def run_test_session(connection: ControlConnection, count: int = 5) -> SenderResult:
    """One test session on an authenticated control connection: request, start, send, stop."""
    machine = connection.machine
    assert machine is not None
    with SessionSender(connection.local) as sender:
        machine.request_session(
            SessionRequest(sender_port=sender.port, reflector_port=0, start_time=time.time(), timeout=2.0)
        )
        accepted = await connection.expect((SessionAccepted,), "Accept-Session")
        assert isinstance(accepted, SessionAccepted)
        params: TestSessionParams = accepted.params
        machine.start_sessions()
        ack = await connection.expect((StartAcked,), "Start-Ack")
        assert isinstance(ack, StartAcked) and ack.accept is Accept.OK
        result = await asyncio.to_thread(sender.run, params, count=count, interval=0.01, reply_timeout=10.0)
        machine.stop_sessions(Accept.OK)
        await connection.flush()
    return result
