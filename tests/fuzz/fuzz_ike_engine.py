"""Fuzz target: the IKE engine's receive path, unauthenticated and authenticated.

`IKEEngine.receive_datagram` documents that it never raises for bad input (it drops, answers and counts),
so this target catches nothing: any exception is a finding. The first input octet picks the path:
raw datagrams at a fresh responder (IKE_SA_INIT parsing, cookies, proposal selection), datagrams under an
established SA's header (SPI lookup, message-ID window, ICV), or arbitrary inner payload chains that the
fuzzer gets properly encrypted and authenticated with the SA's keymat, so exchange handlers (IKE_AUTH,
INFORMATIONAL, CREATE_CHILD_SA/rekey) see every shape of payloads after decryption, also while the
responder's own rekey is in flight (collision handling).
"""

from __future__ import annotations

import logging
import os

from nf.ike.auth import PreSharedKey
from nf.ike.exchanges import IKEEngine, Limits, PeerConfig
from nf.ike.identities import Identity
from nf.ike.message import HEADER
from nf.ike.payloads import GENERIC_HEADER, PayloadType
from nf.ike.proposals import parse_proposals
from nf.ike.sa import IKESA, SAState

A = ("127.0.0.1", 41500)
B = ("127.0.0.1", 41501)
PSK = PreSharedKey(b"fuzzing secret")
PROPOSALS = parse_proposals("aes128gcm16-prfsha256-x25519,aes128-sha256-x25519")
EXCHANGES = (34, 35, 36, 37, 0, 255)
logging.getLogger("nf.ike").setLevel(logging.CRITICAL)  # every drop is logged; the fuzzer drops millions


def _config(local: str, remote: str) -> PeerConfig:
    return PeerConfig(Identity.parse(local), Identity.parse(remote), PROPOSALS, psk=PSK)


def _pump(a: IKEEngine, b: IKEEngine) -> None:
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            for datagram, _ in src.datagrams_to_send():
                moved = True
                dst.receive_datagram(datagram, src.local, 0.0)


class _Pair:
    """An initiator and a responder with one established SA, rebuilt whenever the fuzzer kills it."""

    def __init__(self) -> None:
        self.a = IKEEngine(A, os.urandom, 0.0, peers=[_config("a.test", "b.test")])
        self.b = IKEEngine(
            B, os.urandom, 0.0, peers=[_config("b.test", "%any")], limits=Limits(max_half_open=50)
        )
        self.sa: IKESA = self.a.initiate(B, self.a.peers[0], 0.0)
        _pump(self.a, self.b)

    @property
    def alive(self) -> bool:
        peer = self.b.lookup(*self.sa.spis)
        if peer is None or len(self.b.registry) >= 20:  # superseded SAs never expire at time 0: start over
            return False
        return self.sa.state == peer.state == SAState.ESTABLISHED

    def adopt_successor(self) -> None:
        """After a rekey, carry on with the new SA instead of paying for a fresh pair."""
        for candidate in self.a.registry:
            peer = self.b.lookup(*candidate.spis)
            if peer is not None and candidate.state == peer.state == SAState.ESTABLISHED:
                self.sa = candidate
                return


_pair = _Pair()


def _pair_alive() -> _Pair:
    global _pair
    if not _pair.alive:
        _pair = _Pair()
    return _pair


def _header(sa: IKESA, exchange: int, message_id: int, flags: int, length: int) -> bytes:
    return HEADER.pack(
        spi_i=sa.spi_i,
        spi_r=sa.spi_r,
        next_payload=PayloadType.SK,
        version=0x20,
        exchange=exchange,
        flags=flags,
        message_id=message_id,
        length=length,
    )


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    collide = data[0] >= 0xF0  # rarely: each collision costs a fresh SA pair afterwards
    if mode == 0:
        responder = IKEEngine(B, os.urandom, 0.0, peers=[_config("b.test", "%any")])
        responder.receive_datagram(rest, A, 0.0)
        responder.receive_datagram(bytes(4) + rest, A, 0.0)
        responder.datagrams_to_send()
        return
    pair = _pair_alive()
    sa = pair.sa
    if mode == 1:
        body = rest[2:]
        flags = rest[1] if len(rest) > 1 else 0x08
        exchange = EXCHANGES[rest[0] % len(EXCHANGES)] if rest else 37
        datagram = bytes(4) + _header(sa, exchange, sa.next_request_id, flags, HEADER.size + len(body)) + body
        pair.b.receive_datagram(datagram, A, 0.0)
        pair.b.datagrams_to_send()
        return
    # mode 2: an authenticated request whose inner payload chain is the fuzzer's; with `collide`, the same
    # while the responder's own IKE SA rekey is in flight (RFC 7296 s2.8.2), then both talk it out
    if len(rest) < 2:
        return
    if collide:
        peer = pair.b.lookup(*sa.spis)
        if peer is not None and not peer.busy:
            pair.b.rekey(peer, 0.0)
    exchange = EXCHANGES[rest[0] % 4]
    inner_first, inner = rest[1], rest[2:]
    keymat = sa.keymat_or_fail()
    sk_length = GENERIC_HEADER.size + keymat.sk_body_length(len(inner))
    total = HEADER.size + sk_length
    if total > 0xFFFF:
        return
    message_id = sa.take_request_id()
    aad = _header(sa, exchange, message_id, 0x08, total)
    aad += GENERIC_HEADER.pack(next_payload=inner_first, flags=0, length=sk_length)
    pair.b.receive_datagram(bytes(4) + aad + keymat.protect(aad, inner), A, 0.0)
    for datagram, _ in pair.b.datagrams_to_send():  # our initiator must survive whatever it answered
        pair.a.receive_datagram(datagram, B, 0.0)
    if collide:
        _pump(pair.a, pair.b)
        pair.adopt_successor()
    pair.a.datagrams_to_send()
