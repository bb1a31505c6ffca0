"""The RFC 7717 binding without sockets: Key ID <-> SPIs, ServerBinding over a sans-IO IKE engine pair,
SAKeying snapshots and the ClientConfig the binding builds. The loopback and charon tests are elsewhere."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nf.binding import (
    ClientPeer,
    NoIKESA,
    NoSAPolicy,
    SAKeying,
    ServerBinding,
    UnknownSA,
    UnknownSAReason,
    client_config,
    key_id_of,
    spis_of,
)
from nf.ike.auth import PreSharedKey
from nf.ike.exchanges import IKEEngine, PeerConfig
from nf.ike.identities import Identity
from nf.ike.proposals import parse_proposals
from nf.ike.sa import IKESA, SAState
from nf.twamp.control_events import ConnectionFailed, ControlFailure
from nf.twamp.control_messages import ServerGreeting, ServerStart, SetupResponse
from nf.twamp.control_server import ControlServer, ServerConfig
from nf.twamp.keysource import KeyChain, SharedSecret
from nf.twamp.modes import Accept, Modes

A = ("127.0.0.1", 41000)
B = ("127.0.0.1", 41001)
PSK = PreSharedKey(bytes(range(32)))


def peer(local: str, remote: str, proposals: str = "aes128-sha256-modp2048") -> PeerConfig:
    return PeerConfig(Identity.parse(local), Identity.parse(remote), parse_proposals(proposals), psk=PSK)


def pump(a: IKEEngine, b: IKEEngine, limit: int | None = None) -> None:
    """Deliver datagrams both ways until quiet (or after `limit` datagrams)."""
    moved, count = True, 0
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            for datagram, _ in src.datagrams_to_send():
                if limit is not None and count >= limit:
                    return
                dst.receive_datagram(datagram, src.local, 0.0)
                moved, count = True, count + 1


def engines(proposals: str = "aes128-sha256-modp2048") -> tuple[IKEEngine, IKEEngine]:
    client = IKEEngine(A, os.urandom, 0.0, peers=[peer("client.test", "server.test", proposals)])
    server = IKEEngine(B, os.urandom, 0.0, peers=[peer("server.test", "%any", proposals)])
    return client, server


def established(proposals: str = "aes128-sha256-modp2048") -> tuple[IKEEngine, IKESA, IKESA]:
    client, server = engines(proposals)
    sa = client.initiate(B, client.peers[0], 0.0)
    pump(client, server)
    theirs = server.lookup(*sa.spis)
    assert theirs is not None and sa.state is theirs.state is SAState.ESTABLISHED
    return server, sa, theirs


SPI = st.binary(min_size=8, max_size=8)


@given(SPI, SPI, st.binary(max_size=64))
def test_key_id_round_trip_ignores_octets_16_to_79(spi_i: bytes, spi_r: bytes, tail: bytes) -> None:
    key_id = key_id_of((spi_i, spi_r))
    assert len(key_id) == 16 and key_id[:8] == spi_i and key_id[8:] == spi_r
    assert spis_of(key_id + tail) == (spi_i, spi_r)


@pytest.mark.parametrize("bad", [(b"", bytes(8)), (bytes(8), bytes(7)), (bytes(9), bytes(8))])
def test_key_id_needs_8_octet_spis(bad: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="8 octets"):
        key_id_of(bad)


def test_short_key_id_is_refused() -> None:
    with pytest.raises(ValueError, match=r"SPIi \| SPIr"):
        spis_of(bytes(15))


@pytest.mark.parametrize("proposals", ["aes128-sha256-modp2048", "aes256gcm16-prfsha384-x25519"])
def test_server_serves_the_sa_secret_whatever_octets_16_79_hold(proposals: str) -> None:
    server, sa, theirs = established(proposals)
    binding = ServerBinding(server, [Identity.parse("client.test")])
    key_id = key_id_of(sa.spis)
    assert binding.secret_for(key_id + bytes(64)) == sa.ippm_secret() == theirs.ippm_secret()
    assert binding.secret_for(key_id + os.urandom(64)) == sa.ippm_secret()  # R16
    assert binding.counters() == {"served": 2}


def test_swapped_spis_name_no_sa() -> None:
    """Q4: SPIi/SPIr are the IKE roles; the other order is another (unknown) SA."""
    server, sa, _ = established()
    binding = ServerBinding(server, [Identity.parse("%any")])
    assert binding.secret_for(sa.spi_r + sa.spi_i) is None
    assert binding.counters() == {"served": 0, "no-sa": 1}


def test_half_open_sa_is_not_established() -> None:
    client, server = engines()
    sa = client.initiate(B, client.peers[0], 0.0)
    pump(client, server, limit=2)  # IKE_SA_INIT both ways; IKE_AUTH not delivered
    half_open = server.lookup(*sa.spis)
    assert half_open is not None and half_open.state is SAState.HALF_OPEN
    events: list[UnknownSA] = []
    binding = ServerBinding(server, [Identity.parse("%any")])
    binding.add_observer(events.append)
    assert binding.secret_for(key_id_of(sa.spis)) is None
    assert [e.reason for e in events] == [UnknownSAReason.NOT_ESTABLISHED]


def test_allow_list_matches_the_authenticated_identity() -> None:
    server, sa, _ = established()
    events: list[UnknownSA] = []
    binding = ServerBinding(server, [Identity.parse("other.test"), Identity.parse("@#0102")])
    binding.add_observer(events.append)
    assert binding.secret_for(key_id_of(sa.spis)) is None
    assert events == [UnknownSA(sa.spi_i, sa.spi_r, UnknownSAReason.PEER_NOT_ALLOWED, "client.test")]
    binding.set_allowed_peers([Identity.parse("CLIENT.test")])  # FQDNs compare without case
    assert binding.secret_for(key_id_of(sa.spis)) == sa.ippm_secret()
    binding.set_allowed_peers([])
    assert binding.secret_for(key_id_of(sa.spis)) is None
    assert binding.counters() == {"served": 1, "peer-not-allowed": 2}


@pytest.mark.parametrize("text", ["ipv4:xyz", "C=ZZ, CN", ""])
def test_peer_identity_text_that_does_not_parse_fails_closed(text: str) -> None:
    server, _, theirs = established()
    theirs.peer_id = text  # what the IKE layer recorded for the SA; the binding must not trust odd text
    binding = ServerBinding(server, [Identity.parse("%any")])
    assert binding.secret_for(key_id_of(theirs.spis)) is None
    assert binding.counters() == {"served": 0, "peer-not-allowed": 1}


def test_a_failing_observer_does_not_fail_the_lookup() -> None:
    server, _, _ = established()
    binding = ServerBinding(server, [Identity.parse("%any")])

    def broken(event: UnknownSA) -> None:
        raise RuntimeError("notification sink is down")

    binding.add_observer(broken)
    assert binding.secret_for(bytes(16)) is None
    assert binding.counters() == {"served": 0, "no-sa": 1}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_any_key_id_gives_a_secret_or_none_and_is_counted(key_id: bytes) -> None:
    server, sa, _ = _SHARED
    binding = ServerBinding(server, [Identity.parse("%any")])
    secret = binding.secret_for(key_id)
    if key_id[:16] == key_id_of(sa.spis):
        assert secret == sa.ippm_secret() and binding.counters() == {"served": 1}
    else:
        reason = "bad-key-id" if len(key_id) < 16 else "no-sa"
        assert secret is None and binding.counters() == {"served": 0, reason: 1}


_SHARED = established()


def test_snapshot_answers_only_its_own_key_id_and_hides_the_secret() -> None:
    _, sa, _ = established()
    keying = SAKeying(sa.spis, sa.ippm_secret())
    assert keying.key_id == sa.spi_i + sa.spi_r
    assert keying.secret_for(keying.key_id + bytes(64)) == sa.ippm_secret()
    assert keying.secret_for(bytes(16)) is None
    assert repr(keying) == str(keying) == f"SAKeying({sa.spi_i.hex()}_i/{sa.spi_r.hex()}_r)"
    binding = ServerBinding(IKEEngine(A, os.urandom, 0.0), [Identity.parse("client.test")])
    assert "client.test" in repr(binding) and "b'" not in repr(binding)


def test_client_config_from_a_snapshot_and_for_fallback() -> None:
    keying = SAKeying((bytes(range(8)), bytes(range(8, 16))), SharedSecret(b"prf output"))
    chain = (Modes.ENCRYPTED | Modes.IKEV2_DERIVED, Modes.AUTHENTICATED)
    keychain = KeyChain({"alice": b"pre-shared"})
    config = client_config(keying, chain, key_id=b"alice", key_source=keychain, features=Modes.REFLECT_OCTETS)
    assert config.mode_preference == chain and config.ikev2_key_id == bytes(range(16))
    assert config.ikev2_key_source is keying and config.features == Modes.REFLECT_OCTETS
    fallback = client_config(None, chain, key_id=b"alice", key_source=keychain)
    assert fallback.mode_preference == (Modes.AUTHENTICATED,) and fallback.ikev2_key_id is None
    with pytest.raises(NoIKESA, match="without ikev2-derived"):
        client_config(None, chain[:1])


def test_client_peer_timeout_bounds() -> None:
    config = peer("client.test", "server.test")
    for bad in (0.0, 301.0):
        with pytest.raises(ValueError, match="initiate_timeout"):
            ClientPeer("server", config, B, NoSAPolicy.INITIATE, bad)
    assert ClientPeer("server", config, B).policy is NoSAPolicy.INITIATE  # the YANG default


@pytest.mark.parametrize(
    ("mode", "offered", "reason"),
    [
        (130, Modes.AUTHENTICATED | Modes.ENCRYPTED, ControlFailure.MODE_NOT_OFFERED),  # bit 7 not offered
        (128, Modes.AUTHENTICATED | Modes.IKEV2_DERIVED, ControlFailure.MODE_INVALID),  # no security mode
        (134, Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.IKEV2_DERIVED, ControlFailure.MODE_INVALID),
    ],
)
def test_server_refuses_bad_ikev2_mode_words_with_accept_3(
    mode: int, offered: Modes, reason: ControlFailure
) -> None:
    """Q6: bit 7 only with exactly one of authenticated/encrypted/mixed, and only when offered."""
    binding = ServerBinding(IKEEngine(A, os.urandom, 0.0), [Identity.parse("%any")])
    config = ServerConfig(modes=offered, key_source=KeyChain({"k": b"s"}), ikev2_key_source=binding)
    server = ControlServer(config, rng=os.urandom, start_time=0.0, local_address=A[0], peer_address=B[0])
    assert ServerGreeting.decode(server.data_to_send()).modes == int(offered)
    server.receive_data(SetupResponse(mode=mode).encode())
    assert ServerStart.decode(server.data_to_send()).accept is Accept.NOT_SUPPORTED
    failed = server.next_event()
    assert isinstance(failed, ConnectionFailed) and failed.reason is reason
    assert binding.counters() == {"served": 0}  # never consulted
