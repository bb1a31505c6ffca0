"""RFC 7717 against strongSwan: a remote peer deriving from the same IKE SA agrees with our binding.

Our IKE endpoint sets up a childless SA with a private charon (either side initiating). The secret our
binding hands to TWAMP, on the client side (ClientBinding snapshot) and the server side (ServerBinding by
SPIs), must equal SharedSecret(prf(SK_d as charon logged it, "IPPM")), computed independently from charon's
key log. Then that charon-derived secret, in a plain static KeySource on the client, completes an
authenticated TWAMP control connection and test session against our server, whose binding keys from our own
IKE SA: the two derivations interoperate on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from nf.binding import ClientBinding, ClientPeer, NoSAPolicy, ServerBinding
from nf.ike.auth import PreSharedKey
from nf.ike.exchanges import PeerConfig
from nf.ike.identities import Identity
from nf.net.control_connector import ControlConnection, MeasurementConfig
from nf.net.control_listener import ControlListener
from nf.net.ike_endpoint import open_ike_endpoint
from nf.net.limits import Limits
from nf.net.reflector import Reflector
from nf.twamp.control_client import ClientConfig
from nf.twamp.control_server import ServerConfig
from nf.twamp.keysource import SharedSecret
from nf.twamp.modes import Modes, SecurityMode
from tests.ike_peers import cert_peer, psk_peer
from tests.strongswan_peer import Charon, CharonPKI, Connection, make_pki
from tests.test_binding_rig import IKEV2_AUTH, run, run_test_session, setup

pytestmark = pytest.mark.strongswan

PSK = bytes(range(40, 72))
CHARON_ID, OUR_ID = "charon.binding.test", "nf.binding.test"
T = TypeVar("T")


class StaticKeySource:
    """A fixed table Key ID (SPIi | SPIr) -> secret: what a remote RFC 7717 implementation would hold."""

    def __init__(self, table: dict[bytes, SharedSecret]) -> None:
        self._table = table

    def secret_for(self, key_id: bytes) -> SharedSecret | None:
        return self._table.get(key_id[:16])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CharonPKI:
    return make_pki(tmp_path_factory.mktemp("pki"), {CHARON_ID: "ecdsa", OUR_ID: "ecdsa"})


@pytest.fixture(scope="module")
def charon() -> Iterator[Charon]:
    with Charon("bind") as instance:
        yield instance


async def in_thread(func: Callable[[], T]) -> T:
    return await asyncio.to_thread(func)


def our_peer(pki: CharonPKI, auth: str, proposals: str) -> PeerConfig:
    if auth == "psk":
        return psk_peer(OUR_ID, CHARON_ID, PreSharedKey(PSK), proposals)
    return cert_peer(pki, OUR_ID, CHARON_ID, proposals)


@pytest.mark.parametrize(
    ("auth", "proposals"),
    [
        ("psk", "aes128-sha256-x25519"),
        ("psk", "aes256gcm16-prfsha384-ecp256"),
        ("cert", "aes256-sha512-ecp384"),
    ],
)
@pytest.mark.parametrize("we_initiate", [True, False], ids=["py-initiator", "charon-initiator"])
def test_charon_derived_secret_equals_ours_and_keys_our_server(
    charon: Charon,
    pki: CharonPKI,
    auth: str,
    proposals: str,
    we_initiate: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[bytes] = []

    async def scenario() -> None:
        config = our_peer(pki, auth, proposals)
        endpoint = await open_ike_endpoint(("127.0.0.1", 0), peers=[config])
        server_binding = ServerBinding(endpoint, [Identity.parse(CHARON_ID)])
        server_config = ServerConfig(
            modes=Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.IKEV2_DERIVED,
            ikev2_key_source=server_binding,
            count=1024,
        )
        listener = ControlListener(server_config, Limits(servwait=60.0, refwait=60.0), Reflector())
        client_binding = ClientBinding(
            endpoint, ClientPeer("charon", config, ("127.0.0.1", charon.port), NoSAPolicy.INITIATE, 60.0)
        )
        try:
            port = int((await listener.listen("127.0.0.1", 0))[0].rsplit(":", 1)[1])
            conn = Connection(
                "py",
                charon.port,
                endpoint.local[1],
                CHARON_ID,
                OUR_ID,
                proposals=proposals,
                auth="psk" if auth == "psk" else "pubkey",
                cert=None if auth == "psk" else pki.identity(CHARON_ID),
            )
            await in_thread(lambda: charon.load([conn], psk=PSK, pki=pki))
            if we_initiate:
                keying = await client_binding.keying()  # policy initiate: the binding starts the SA
            else:
                await in_thread(lambda: charon.initiate("py"))
                keying = await client_binding.wait_established(60.0)
            assert keying is not None
            assert client_binding.counters["initiated"] == (1 if we_initiate else 0)
            spis = keying.spis
            info = await in_thread(lambda: charon.wait_sa(spis=spis))
            assert info.initiator is not we_initiate
            logged = await in_thread(lambda: charon.keys_for(spis))
            charons = SharedSecret(logged.ippm_secret_bytes())
            secrets.extend([logged.ippm_secret_bytes(), logged.secrets["Sk_d"]])
            # both of our binding's faces give exactly the secret charon's SK_d gives
            assert keying.secret_for(keying.key_id) == charons
            assert server_binding.secret_for(keying.key_id + bytes(64)) == charons
            # and charon's secret, held by a plain static table, keys a control session with our server
            remote = StaticKeySource({keying.key_id: charons})
            client = ClientConfig(
                mode_preference=(IKEV2_AUTH,), ikev2_key_id=keying.key_id, ikev2_key_source=remote
            )
            measurement = MeasurementConfig(
                host="127.0.0.1", port=port, mode=SecurityMode.AUTHENTICATED, client=client, timeout=30.0
            )
            connection = ControlConnection(measurement, rng=os.urandom)
            await connection.connect()
            try:
                done = await setup(connection)
                assert int(done.mode) == 130 and done.key_id == keying.key_id
                result = await run_test_session(connection)
                assert result.sent == result.received == 5
            finally:
                await connection.close()
            assert server_binding.counters() == {"served": 2}
            texts = [repr(x) for x in (server_binding, client_binding, keying, remote, charons, endpoint)]
            secrets.append("|".join(texts).encode())
            assert listener.counters.modes == {"authenticated": 1} and listener.counters.bad_input == {}
            sa = endpoint.lookup(*spis)
            assert sa is not None
            await endpoint.delete(sa)
            await in_thread(lambda: charon.wait_gone(spis))
        finally:
            client_binding.close()
            await listener.close()
            listener.reflector.close()
            endpoint.close()

    run(scenario())
    # neither the derived secret nor SK_d shows up in any log record or repr (hex or raw)
    ippm, sk_d, reprs = secrets
    assert caplog.records  # the IKE and TWAMP layers did log at DEBUG level
    for secret in (ippm, sk_d):
        for form in (secret.hex(), repr(secret)[2:-1]):
            assert form not in caplog.text and form not in reprs.decode()
