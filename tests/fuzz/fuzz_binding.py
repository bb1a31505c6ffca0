"""Fuzz target: any Key ID octets given to the RFC 7717 ServerBinding (nf.binding) yield the named SA's secret
or None (counted as an unknown SA); nothing raises. Octets 0-15 naming the one established SA must be served
whatever follows them."""

from __future__ import annotations

import logging
import os

from nf.binding import ServerBinding, key_id_of, spis_of
from nf.ike.auth import PreSharedKey
from nf.ike.exchanges import IKEEngine, PeerConfig
from nf.ike.identities import Identity
from nf.ike.proposals import parse_proposals
from nf.ike.sa import SAState

logging.getLogger("nf.binding").setLevel(logging.CRITICAL)  # rejections are logged by design


def _established() -> tuple[IKEEngine, bytes]:
    proposals = parse_proposals("aes128-sha256-x25519")
    psk = PreSharedKey(bytes(range(32)))
    a = ("127.0.0.1", 500)
    b = ("127.0.0.1", 4500)
    client = IKEEngine(
        a,
        os.urandom,
        0.0,
        peers=[PeerConfig(Identity.parse("c.test"), Identity.parse("s.test"), proposals, psk=psk)],
    )
    server = IKEEngine(
        b,
        os.urandom,
        0.0,
        peers=[PeerConfig(Identity.parse("s.test"), Identity.parse("%any"), proposals, psk=psk)],
    )
    sa = client.initiate(b, client.peers[0], 0.0)
    moved = True
    while moved:
        moved = False
        for src, dst in ((client, server), (server, client)):
            for datagram, _ in src.datagrams_to_send():
                dst.receive_datagram(datagram, src.local, 0.0)
                moved = True
    assert sa.state is SAState.ESTABLISHED
    return server, key_id_of(sa.spis)


_SERVER, _KEY_ID = _established()
_SA = _SERVER.lookup(*spis_of(_KEY_ID))
assert _SA is not None
_SECRET = _SA.ippm_secret()
_BINDING = ServerBinding(_SERVER, [Identity.parse("%any")])


def fuzz_one(data: bytes) -> None:
    for key_id in (data, _KEY_ID + data):
        secret = _BINDING.secret_for(key_id)
        if key_id[:16] == _KEY_ID:
            assert secret == _SECRET
        else:
            assert secret is None
    if len(data) >= 16:
        assert key_id_of(spis_of(data)) == data[:16]
