"""The sans-IO IKE engine against itself: every exchange, retries, windows, limits and bad input.

Two engines exchange datagrams in memory (the wire tests with sockets and strongSwan are elsewhere); time
is passed in, so retransmission and timeouts are driven without sleeping.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nf.ike.auth import PreSharedKey
from nf.ike.counters import Reason
from nf.ike.exchanges import IKEEngine, Limits, PeerConfig
from nf.ike.identities import Identity
from nf.ike.message import HEADER, ExchangeType, decode_header, decode_message, unframe
from nf.ike.payloads import GENERIC_HEADER, NoncePayload, NotifyType, PayloadType
from nf.ike.proposals import parse_proposals
from nf.ike.sa import IKESA, Deleted, Established, Event, Failed, Rekeyed, RetransmitPolicy, SAState

A = ("127.0.0.1", 41000)
B = ("127.0.0.1", 41001)
PSK_BYTES = bytes(range(32))
PSK = PreSharedKey(PSK_BYTES)
FAST = RetransmitPolicy(timeout=1.0, base=2.0, tries=2)


def config(
    local: str, remote: str, proposals: str = "aes128-sha256-modp2048", psk: PreSharedKey = PSK
) -> PeerConfig:
    return PeerConfig(
        Identity.parse(local), Identity.parse(remote), parse_proposals(proposals), psk=psk, retransmit=FAST
    )


def engines(
    init_props: str = "aes128-sha256-modp2048",
    resp_props: str | None = None,
    limits: Limits | None = None,
    resp_psk: PreSharedKey = PSK,
) -> tuple[IKEEngine, IKEEngine]:
    a = IKEEngine(A, os.urandom, 0.0, peers=[config("a.test", "b.test", init_props)])
    b = IKEEngine(
        B,
        os.urandom,
        0.0,
        peers=[config("b.test", "a.test", resp_props or init_props, resp_psk)],
        limits=limits,
    )
    return a, b


def pump(
    a: IKEEngine, b: IKEEngine, now: float = 0.0, tamper: Callable[[bytes], bytes | None] | None = None
) -> list[bytes]:
    """Deliver datagrams both ways until quiet; returns everything that went over the 'wire'."""
    wire: list[bytes] = []
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            for datagram, addr in src.datagrams_to_send():
                assert addr == dst.local
                moved = True
                wire.append(datagram)
                if tamper is not None:
                    changed = tamper(datagram)
                    if changed is None:
                        continue
                    datagram = changed
                dst.receive_datagram(datagram, src.local, now)
    return wire


def reasons(engine: IKEEngine) -> list[tuple[str, str]]:
    """(event class, reason) of the Deleted/Failed events waiting in `engine`."""
    return [(type(e).__name__, e.reason) for e in events(engine) if isinstance(e, Deleted | Failed)]


def events(engine: IKEEngine) -> list[Event]:
    out = []
    while (event := engine.next_event()) is not None:
        out.append(event)
    return out


def establish(a: IKEEngine, b: IKEEngine) -> tuple[IKESA, IKESA]:
    sa = a.initiate(B, a.peers[0], 0.0)
    pump(a, b)
    peer = b.lookup(*sa.spis)
    assert peer is not None and sa.state == peer.state == SAState.ESTABLISHED
    return sa, peer


@pytest.mark.parametrize(
    "proposals",
    [
        "aes128-sha256-modp2048",
        "aes256-sha384-ecp256",
        "aes256-sha512-ecp384",
        "aes128gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha384-ecp256",
        "aes256-sha512-ecp521",
        "aes128gcm16-prfsha256-curve448",
        "aes128-sha256-modp3072",
        "aes256gcm16-prfsha384-modp4096",
    ],
)
def test_childless_sa_both_roles_same_ippm_secret(proposals: str) -> None:
    a, b = engines(proposals)
    sa, peer = establish(a, b)
    (ev_a,), (ev_b,) = events(a), events(b)
    assert isinstance(ev_a, Established) and isinstance(ev_b, Established)
    assert ev_a.spis == ev_b.spis == sa.spis and ev_a.peer_id == "b.test" and ev_b.peer_id == "a.test"
    assert ev_a.initiator and not ev_b.initiator
    assert ev_a.algorithms == ev_b.algorithms == sa.algorithms
    assert set(sa.algorithms.split("-")) >= set(proposals.split("-"))  # CBC suites add their implied PRF
    assert sa.ippm_secret() == peer.ippm_secret()
    assert a.lookup(*sa.spis) is sa and b.lookup(*sa.spis) is peer
    assert sa.next_request_id == 2 and peer.next_request_id == 0  # s2.2: per-requester counters
    assert not a.counters.snapshot() and not b.counters.snapshot()


def test_repr_shows_spis_and_algorithms_only() -> None:
    a, b = engines("aes256gcm16-prfsha384-ecp256")
    sa, _ = establish(a, b)
    text = repr(sa)
    assert sa.spi_i.hex() in text and sa.spi_r.hex() in text and "aes256gcm16-prfsha384-ecp256" in text
    assert repr(sa.keymat).startswith("IKEKeymat(spi_i=") and "b'" not in repr(sa.keymat)
    assert "b'" not in text and repr(sa.ippm_secret()) == "SharedSecret(<hidden>)"


def test_invalid_ke_payload_retry_uses_the_group_the_responder_wants() -> None:
    a, b = engines("aes128-sha256-x25519-modp2048", "aes128-sha256-modp2048")
    sa, peer = establish(a, b)
    assert b.counters[Reason.INVALID_KE_PAYLOAD] == 1
    assert sa.algorithms.endswith("modp2048") and sa.ippm_secret() == peer.ippm_secret()


def test_no_proposal_chosen_fails_the_initiator_after_the_grace_period() -> None:
    a, b = engines("aes128-sha256-modp2048", "aes256gcm16-prfsha384-ecp256")
    sa = a.initiate(B, a.peers[0], 0.0)
    pump(a, b, 0.1)
    deadline = a.next_timer()
    assert events(a) == [] and deadline is not None and deadline <= 0.1 + FAST.error_grace
    a.handle_timer(deadline)
    assert a.datagrams_to_send() == []  # no retransmission after the notify
    (failed,) = events(a)
    assert isinstance(failed, Failed) and failed.reason == "no-proposal-chosen" and failed.spis == sa.spis
    assert b.counters[Reason.NO_PROPOSAL_CHOSEN] == 1 and len(b.registry) == 0 and len(a.registry) == 0


def test_cookie_round_trip_then_sa_comes_up() -> None:
    a, b = engines(limits=Limits(cookie_always=True))
    sa = a.initiate(B, a.peers[0], 0.0)
    wire = pump(a, b)
    assert sa.state == SAState.ESTABLISHED and b.counters[Reason.COOKIE_REQUIRED] == 1
    # the retried IKE_SA_INIT carries COOKIE as its first payload (s2.6)
    retry = unframe(wire[2], A[1], B[1])
    assert decode_header(retry).next_payload == PayloadType.NOTIFY
    assert struct.unpack_from("!H", retry, HEADER.size + GENERIC_HEADER.size + 2)[0] == 16390


def test_forged_cookie_is_refused_with_a_fresh_one() -> None:
    a, b = engines(limits=Limits(cookie_always=True))
    a.initiate(B, a.peers[0], 0.0)

    def forge(datagram: bytes) -> bytes:
        data = unframe(datagram, A[1], B[1])
        header = decode_header(data)
        if (
            header.exchange == ExchangeType.IKE_SA_INIT
            and not header.is_response
            and header.next_payload == 41
        ):
            cookie_at = HEADER.size + GENERIC_HEADER.size + 4
            data = data[:cookie_at] + bytes([data[cookie_at] ^ 1]) + data[cookie_at + 1 :]
        return bytes(4) + data

    pump(a, b, tamper=forge)
    assert b.counters[Reason.COOKIE_INVALID] >= 1 and len(b.registry) == 0


def _flood(b: IKEEngine, count: int, base_port: int) -> list[IKEEngine]:
    """`count` initiators that each send one IKE_SA_INIT and never answer a cookie by themselves."""
    floods = [
        IKEEngine(("127.0.0.1", base_port + i), os.urandom, 0.0, peers=[config("x.test", "b.test")])
        for i in range(count)
    ]
    for flood in floods:
        flood.initiate(B, flood.peers[0], 0.0)
        for datagram, _ in flood.datagrams_to_send():
            b.receive_datagram(datagram, flood.local, 0.0)
    return floods


def test_half_open_flood_triggers_cookies_and_a_legitimate_sa_still_comes_up() -> None:
    b = IKEEngine(B, os.urandom, 0.0, peers=[config("b.test", "%any")], limits=Limits(cookie_threshold=2))
    _flood(b, 5, 42000)
    assert b.registry.half_open_count == 2 and b.counters[Reason.COOKIE_REQUIRED] == 3
    b.datagrams_to_send()
    a = IKEEngine(A, os.urandom, 0.0, peers=[config("a.test", "b.test")])
    sa = a.initiate(B, a.peers[0], 0.0)
    pump(a, b)
    assert sa.state == SAState.ESTABLISHED and b.counters[Reason.COOKIE_REQUIRED] == 4


def test_half_open_hard_cap_drops_even_with_valid_cookies() -> None:
    b = IKEEngine(
        B,
        os.urandom,
        0.0,
        peers=[config("b.test", "%any")],
        limits=Limits(cookie_threshold=1, max_half_open=2),
    )
    floods = _flood(b, 4, 43000)
    replies = {addr: datagram for datagram, addr in b.datagrams_to_send()}
    for flood in floods[1:]:  # the three that were asked for a cookie answer it
        flood.receive_datagram(replies[flood.local], B, 0.0)
        for datagram, _ in flood.datagrams_to_send():
            b.receive_datagram(datagram, flood.local, 0.0)
    assert b.registry.half_open_count == 2
    assert b.counters[Reason.HALF_OPEN_LIMIT] == 2


def test_half_open_sa_times_out() -> None:
    a, b = engines()
    a.initiate(B, a.peers[0], 0.0)
    for datagram, _ in a.datagrams_to_send():
        b.receive_datagram(datagram, A, 0.0)
    assert b.registry.half_open_count == 1
    deadline = b.next_timer()
    assert deadline is not None
    b.handle_timer(deadline)
    assert len(b.registry) == 0 and b.counters[Reason.HALF_OPEN_TIMEOUT] == 1
    (failed,) = events(b)
    assert isinstance(failed, Failed) and failed.reason == "half-open-timeout"


def test_retransmission_is_bit_identical_with_backoff_then_gives_up() -> None:
    a, _ = engines()
    sa = a.initiate(B, a.peers[0], 0.0)
    ((first, _),) = a.datagrams_to_send()
    assert a.next_timer() == pytest.approx(1.0)
    a.handle_timer(0.5)
    assert a.datagrams_to_send() == []
    a.handle_timer(1.0)
    assert a.datagrams_to_send() == [(first, B)]
    assert a.next_timer() == pytest.approx(3.0)  # 1.0 + 1.0 * 2**1
    a.handle_timer(3.0)
    assert a.datagrams_to_send() == [(first, B)]
    a.handle_timer(3.0 + 4.0)
    (failed,) = events(a)
    assert isinstance(failed, Failed) and failed.reason == "timeout" and failed.spis == sa.spis
    assert len(a.registry) == 0


def test_duplicate_request_gets_the_stored_response_not_reprocessed() -> None:
    a, b = engines()
    sa = a.initiate(B, a.peers[0], 0.0)
    pump(a, b, tamper=lambda d: d)
    assert sa.state == SAState.ESTABLISHED
    a.check_liveness(sa, 1.0)
    ((request, _),) = a.datagrams_to_send()
    b.receive_datagram(request, A, 1.0)
    ((response, _),) = b.datagrams_to_send()
    b.receive_datagram(request, A, 1.1)
    assert b.datagrams_to_send() == [(response, A)]
    assert b.counters[Reason.RETRANSMITTED_REQUEST] == 1
    a.receive_datagram(response, B, 1.2)
    a.receive_datagram(response, B, 1.3)  # a second copy no longer matches an outstanding request
    assert a.counters[Reason.UNEXPECTED_RESPONSE] == 1 and not sa.busy


def test_bad_icv_unknown_spi_and_truncation_are_dropped_silently_and_counted() -> None:
    a, b = engines()
    sa, _ = establish(a, b)
    a.check_liveness(sa, 1.0)
    ((request, _),) = a.datagrams_to_send()
    flipped = request[:-1] + bytes([request[-1] ^ 0x01])
    b.receive_datagram(flipped, A, 1.0)
    unknown = request[:4] + bytes(8) + request[12:]
    b.receive_datagram(unknown, A, 1.0)
    b.receive_datagram(request[:20], A, 1.0)
    b.receive_datagram(bytes(4) + b"\x00" * 10, A, 1.0)
    assert b.datagrams_to_send() == []
    assert b.counters[Reason.INTEGRITY_CHECK_FAILED] == 1
    assert b.counters[Reason.UNKNOWN_SPI] == 1
    assert b.counters[Reason.TRUNCATED] == 2
    b.receive_datagram(request, A, 1.0)  # the genuine one still works afterwards
    assert len(b.datagrams_to_send()) == 1


def test_wrong_psk_is_authentication_failed_on_both_sides() -> None:
    a, b = engines(resp_psk=PreSharedKey(b"another secret"))
    sa = a.initiate(B, a.peers[0], 0.0)
    pump(a, b)
    (failed_a,), (failed_b,) = events(a), events(b)
    assert isinstance(failed_a, Failed) and failed_a.reason == "authentication-failed"
    assert isinstance(failed_b, Failed) and failed_b.reason == "authentication-failed"
    assert failed_a.spis == failed_b.spis == sa.spis
    assert b.counters[Reason.AUTHENTICATION_FAILED] == 1 and len(a.registry) == len(b.registry) == 0


def test_identity_mismatch_is_authentication_failed() -> None:
    a = IKEEngine(A, os.urandom, 0.0, peers=[config("a.test", "b.test")])
    b = IKEEngine(B, os.urandom, 0.0, peers=[config("b.test", "someone-else.test")])
    a.initiate(B, a.peers[0], 0.0)
    pump(a, b)
    assert b.counters[Reason.AUTHENTICATION_FAILED] == 1
    assert [e.reason for e in events(a) if isinstance(e, Failed)] == ["authentication-failed"]


def _inject(a: IKEEngine, sa: IKESA, inner_first: int, inner: bytes) -> bytes:
    """An authenticated INFORMATIONAL request on `sa` with a hand-made inner payload chain."""
    keymat = sa.keymat_or_fail()
    mid = sa.take_request_id()
    sk_length = GENERIC_HEADER.size + keymat.sk_body_length(len(inner))
    header = HEADER.pack(
        spi_i=sa.spi_i,
        spi_r=sa.spi_r,
        next_payload=PayloadType.SK,
        version=0x20,
        exchange=ExchangeType.INFORMATIONAL,
        flags=0x08,
        message_id=mid,
        length=HEADER.size + sk_length,
    )
    aad = header + GENERIC_HEADER.pack(next_payload=inner_first, flags=0, length=sk_length)
    return bytes(4) + aad + keymat.protect(aad, inner)


def test_unknown_critical_payload_gets_unsupported_critical_payload() -> None:
    a, b = engines("aes256gcm16-prfsha384-ecp256")
    sa, peer = establish(a, b)
    critical = GENERIC_HEADER.pack(next_payload=0, flags=0x80, length=8) + b"\0\0\0\0"
    b.receive_datagram(_inject(a, sa, 99, critical), A, 1.0)
    ((response, _),) = b.datagrams_to_send()
    assert b.counters[Reason.UNSUPPORTED_CRITICAL_PAYLOAD] == 1
    assert peer.state == SAState.ESTABLISHED  # not fatal
    # non-critical unknown payloads are skipped: an ordinary empty answer
    skipped = GENERIC_HEADER.pack(next_payload=0, flags=0, length=8) + b"\0\0\0\0"
    b.receive_datagram(_inject(a, sa, 99, skipped), A, 1.0)
    assert len(b.datagrams_to_send()) == 1 and b.counters[Reason.UNSUPPORTED_CRITICAL_PAYLOAD] == 1
    del response


def test_malformed_authenticated_request_is_invalid_syntax_and_fatal() -> None:
    a, b = engines()
    sa, peer = establish(a, b)
    bad = GENERIC_HEADER.pack(next_payload=0, flags=0, length=40) + b"\0\0\0\0"  # length past the end
    b.receive_datagram(_inject(a, sa, PayloadType.NOTIFY, bad), A, 1.0)
    assert len(b.datagrams_to_send()) == 1 and b.counters[Reason.INVALID_SYNTAX] == 1
    assert peer.state == SAState.DELETED and b.lookup(*sa.spis) is None
    assert [e.reason for e in events(b) if isinstance(e, Deleted)] == ["invalid-syntax"]


def test_child_sa_request_is_refused_with_no_additional_sas() -> None:
    a, b = engines()
    sa, peer = establish(a, b)
    from nf.ike.payloads import NoncePayload, SAPayload, encode_payloads
    from nf.ike.proposals import Proposal, Transform

    esp = Proposal(1, 3, b"\1\2\3\4", (Transform.make(1, 12, 128), Transform.make(3, 12)))
    first, chain = encode_payloads([SAPayload((esp,)), NoncePayload(bytes(32))])
    keymat = sa.keymat_or_fail()
    mid = sa.take_request_id()
    sk_length = GENERIC_HEADER.size + keymat.sk_body_length(len(chain))
    header = HEADER.pack(
        spi_i=sa.spi_i,
        spi_r=sa.spi_r,
        next_payload=PayloadType.SK,
        version=0x20,
        exchange=ExchangeType.CREATE_CHILD_SA,
        flags=0x08,
        message_id=mid,
        length=HEADER.size + sk_length,
    )
    aad = header + GENERIC_HEADER.pack(next_payload=first, flags=0, length=sk_length)
    b.receive_datagram(bytes(4) + aad + keymat.protect(aad, chain), A, 1.0)
    assert len(b.datagrams_to_send()) == 1 and b.counters[Reason.CHILD_SA_REFUSED] == 1
    assert peer.state == SAState.ESTABLISHED


@pytest.mark.parametrize("initiator_rekeys", [True, False])
def test_rekey_from_either_side_then_delete(initiator_rekeys: bool) -> None:
    a, b = engines("aes128gcm16-prfsha256-x25519")
    sa, peer = establish(a, b)
    events(a), events(b)
    old_secret = sa.ippm_secret()
    (b if not initiator_rekeys else a).rekey(peer if not initiator_rekeys else sa, 1.0)
    pump(a, b, 1.0)
    rekeyed_a = [e for e in events(a) if isinstance(e, Rekeyed)]
    rekeyed_b = [e for e in events(b) if isinstance(e, Rekeyed)]
    assert rekeyed_a == rekeyed_b and rekeyed_a[0].old_spis == sa.spis
    new_a, new_b = a.lookup(*rekeyed_a[0].new_spis), b.lookup(*rekeyed_a[0].new_spis)
    assert (
        new_a is not None and new_b is not None and a.lookup(*sa.spis) is None and b.lookup(*sa.spis) is None
    )
    assert new_a.ippm_secret() == new_b.ippm_secret() and new_a.ippm_secret() != old_secret
    # the side that rekeyed is the new SA's original initiator (s2.2)
    assert new_a.initiator if initiator_rekeys else new_b.initiator
    assert new_a.next_request_id == 0 and new_b.next_request_id == 0
    b.delete(new_b, 2.0)
    pump(a, b, 2.0)
    assert reasons(a) == [("Deleted", "deleted-by-peer")] and reasons(b) == [("Deleted", "deleted")]
    assert len(a.registry) == len(b.registry) == 0


def test_liveness_timeout_deletes_a_dead_peer() -> None:
    a, b = engines()
    sa, _ = establish(a, b)
    events(a)
    assert a.check_liveness(sa, 10.0)
    a.datagrams_to_send()
    now = 10.0
    while (deadline := a.next_timer()) is not None:
        now = deadline
        a.handle_timer(now)
    assert now == pytest.approx(10.0 + 1.0 + 2.0 + 4.0)
    assert reasons(a) == [("Deleted", "timeout")]
    assert a.counters[Reason.TIMEOUT] == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_datagrams_never_raise(data: st.DataObject) -> None:
    """Every prefix/bit-flip/garbage of a real exchange is dropped or answered, never an exception."""
    a, b = engines("aes128-sha256-x25519")
    a.initiate(B, a.peers[0], 0.0)
    wire = pump(a, b)
    datagram = data.draw(st.sampled_from(wire))
    mutation = data.draw(st.sampled_from(["truncate", "flip", "garbage", "extend"]))
    if mutation == "truncate":
        datagram = datagram[: data.draw(st.integers(0, len(datagram) - 1))]
    elif mutation == "flip":
        index = data.draw(st.integers(0, len(datagram) - 1))
        datagram = (
            datagram[:index]
            + bytes([datagram[index] ^ data.draw(st.integers(1, 255))])
            + datagram[index + 1 :]
        )
    elif mutation == "garbage":
        datagram = data.draw(st.binary(max_size=600))
    else:
        datagram = datagram + data.draw(st.binary(min_size=1, max_size=40))
    for engine, source in ((a, B), (b, A)):
        engine.receive_datagram(datagram, source, 1.0)
        engine.datagrams_to_send()


def test_sa_limit_drops_new_ike_sa_init() -> None:
    a, b = engines(limits=Limits(max_sas=1))
    establish(a, b)
    second = a.initiate(B, a.peers[0], 0.0)
    pump(a, b)
    assert second.state == SAState.INIT_SENT and b.counters[Reason.SA_LIMIT] == 1 and len(b.registry) == 1


def test_unknown_critical_payload_in_ike_sa_init_is_refused_unencrypted() -> None:
    a, b = engines()
    a.initiate(B, a.peers[0], 0.0)
    ((request, _),) = a.datagrams_to_send()
    message = unframe(request, A[1], B[1])
    first = message[16]
    critical = GENERIC_HEADER.pack(next_payload=first, flags=0x80, length=8) + b"\0\0\0\0"
    body = critical + message[HEADER.size :]
    header = bytearray(message[: HEADER.size])
    header[16] = 99
    header[24:28] = (HEADER.size + len(body)).to_bytes(4, "big")
    b.receive_datagram(bytes(4) + bytes(header) + body, A, 0.0)
    ((reply, _),) = b.datagrams_to_send()
    decoded = unframe(reply, B[1], A[1])
    assert decode_header(decoded).is_response and decoded[
        HEADER.size + GENERIC_HEADER.size + 2 : HEADER.size + 8
    ] == ((1).to_bytes(2, "big"))
    assert decoded[-1] == 99 and b.counters[Reason.UNSUPPORTED_CRITICAL_PAYLOAD] == 1 and len(b.registry) == 0


def test_signature_by_a_key_that_is_not_the_certificates_is_authentication_failed(tmp_path: Path) -> None:
    from nf.ike.auth import Signer
    from nf.ike.certificates import TrustAnchors, load_certificates
    from tests.strongswan_peer import make_pki

    pki = make_pki(tmp_path, {"a.test": "ecdsa", "b.test": "ecdsa", "thief.test": "ecdsa"})
    trust = TrustAnchors.from_files(str(pki.ca_cert))
    proposals = parse_proposals("aes128gcm16-prfsha256-x25519")

    def cert_config(local: str, remote: str, key_of: str) -> PeerConfig:
        return PeerConfig(
            Identity.parse(local),
            Identity.parse(remote),
            proposals,
            signer=Signer.from_file(str(pki.identity(key_of).key)),
            certificates=tuple(load_certificates(str(pki.identity(local).cert))),
            trust=trust,
        )

    a = IKEEngine(A, os.urandom, 0.0, peers=[cert_config("a.test", "b.test", key_of="thief.test")])
    b = IKEEngine(B, os.urandom, 0.0, peers=[cert_config("b.test", "a.test", key_of="b.test")])
    a.initiate(B, a.peers[0], 0.0)
    pump(a, b)
    assert b.counters[Reason.AUTHENTICATION_FAILED] == 1
    assert ("Failed", "authentication-failed") in reasons(a) and len(b.registry) == 0


def test_higher_major_version_is_dropped_and_answered_invalid_major_version() -> None:
    a, b = engines()
    a.initiate(B, a.peers[0], 0.0)
    ((request, _),) = a.datagrams_to_send()
    v3 = bytearray(request)
    v3[4 + 17] = 0x30
    b.receive_datagram(bytes(v3), A, 0.0)
    ((reply, _),) = b.datagrams_to_send()
    decoded = unframe(reply, B[1], A[1])
    header = decode_header(decoded)  # we answer in 2.0
    assert header.is_response and header.spi_i == request[4:12] and header.spi_r == bytes(8)
    assert struct.unpack_from("!H", decoded, HEADER.size + GENERIC_HEADER.size + 2)[0] == 5
    assert b.counters[Reason.UNSUPPORTED_MAJOR_VERSION] == 1 and len(b.registry) == 0
    a.receive_datagram(reply, B, 0.0)  # unprotected: the initiator gives up after the grace period
    assert reasons(a) == [] and a.datagrams_to_send() == []
    a.handle_timer(FAST.error_grace)
    assert reasons(a) == [("Failed", "peer-refused")] and len(a.registry) == 0


def test_retransmitted_malformed_request_gets_the_same_single_answer() -> None:
    a, b = engines()
    sa, peer = establish(a, b)
    critical = GENERIC_HEADER.pack(next_payload=0, flags=0x80, length=8) + b"\0\0\0\0"
    request = _inject(a, sa, 99, critical)
    b.receive_datagram(request, A, 1.0)
    ((answer, _),) = b.datagrams_to_send()
    b.receive_datagram(request, A, 2.0)
    assert b.datagrams_to_send() == [(answer, A)]
    assert (
        b.counters[Reason.UNSUPPORTED_CRITICAL_PAYLOAD] == 1 and b.counters[Reason.RETRANSMITTED_REQUEST] == 1
    )
    assert peer.state == SAState.ESTABLISHED


def test_retransmitted_ike_sa_init_is_answered_from_state_and_late_copies_ignored() -> None:
    a, b = engines()
    a.initiate(B, a.peers[0], 0.0)
    ((request, _),) = a.datagrams_to_send()
    b.receive_datagram(request, A, 0.0)
    ((response, _),) = b.datagrams_to_send()
    b.receive_datagram(request, A, 0.5)  # the initiator retransmitted: same octets back, no second SA
    assert b.datagrams_to_send() == [(response, A)] and len(b.registry) == 1
    a.receive_datagram(response, B, 0.6)
    pump(a, b)
    b.receive_datagram(request, A, 5.0)  # a copy that arrives after IKE_AUTH: ignored (s2.1)
    assert b.datagrams_to_send() == [] and len(b.registry) == 1 and b.registry.half_open_count == 0
    sa = next(iter(b.registry))
    nonce = decode_message(unframe(request, A[1], B[1])).first(NoncePayload)
    assert nonce is not None and b.registry.by_init(A, sa.spi_i, nonce.data) is sa
    b.registry.remove(sa)  # removal forgets the IKE_SA_INIT index too
    assert b.registry.by_init(A, sa.spi_i, nonce.data) is None and len(b.registry) == 0


class ScriptedRng:
    """os.urandom, except that queued nonces answer the next requests for 32 octets (with ECP-256 and
    AES-GCM nothing else asks for 32 octets), so a test decides which rekey holds the lowest nonce."""

    def __init__(self) -> None:
        self.nonces: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        if size == 32 and self.nonces:
            return self.nonces.pop(0)
        return os.urandom(size)


LOW, MID, HIGH = bytes(32), b"\x80" + bytes(31), b"\xff" * 32
COLLIDING = "aes128gcm16-prfsha256-ecp256"


def colliding_rekeys(
    a_nonces: list[bytes], b_nonces: list[bytes]
) -> tuple[IKEEngine, IKEEngine, IKESA, bytes, bytes]:
    """An established SA that both engines start to rekey at once: (a, b, a's SA, a's and b's request)."""
    a_rng, b_rng = ScriptedRng(), ScriptedRng()
    a = IKEEngine(A, a_rng, 0.0, peers=[config("a.test", "b.test", COLLIDING)])
    b = IKEEngine(B, b_rng, 0.0, peers=[config("b.test", "a.test", COLLIDING)])
    sa, peer = establish(a, b)
    events(a), events(b)
    a_rng.nonces, b_rng.nonces = list(a_nonces), list(b_nonces)  # [Ni of own rekey, Nr of the answer]
    a.rekey(sa, 1.0)
    b.rekey(peer, 1.0)
    ((request_a, _),), ((request_b, _),) = a.datagrams_to_send(), b.datagrams_to_send()
    return a, b, sa, request_a, request_b


def outcome(a: IKEEngine, b: IKEEngine, old: tuple[bytes, bytes], created: int) -> IKESA:
    """Both engines agree on one surviving SA that replaced `old` (of `created` new ones), and every other
    SA is gone on both sides; returns a's copy of the survivor."""
    a_events, b_events = events(a), events(b)
    (rekeyed_a,) = [e for e in a_events if isinstance(e, Rekeyed)]
    (rekeyed_b,) = [e for e in b_events if isinstance(e, Rekeyed)]
    assert rekeyed_a == rekeyed_b and rekeyed_a.old_spis == old
    assert not [e for e in a_events + b_events if isinstance(e, Failed)]
    assert [sa.spis for sa in a.registry] == [sa.spis for sa in b.registry] == [rekeyed_a.new_spis]
    survivor, twin = a.lookup(*rekeyed_a.new_spis), b.lookup(*rekeyed_a.new_spis)
    assert survivor is not None and twin is not None
    assert survivor.state == twin.state == SAState.ESTABLISHED
    assert survivor.ippm_secret() == twin.ippm_secret()
    assert survivor.initiator is not twin.initiator
    deleted = {e.spis for e in a_events + b_events if isinstance(e, Deleted)}
    assert old in deleted and len(deleted) == created  # the old SA and any redundant one
    return survivor


@pytest.mark.parametrize(
    ("a_nonces", "b_nonces", "a_wins"),
    [([LOW, HIGH], [MID, HIGH], False), ([HIGH, LOW], [HIGH, MID], True)],
    ids=["a-holds-the-lowest-nonce", "b-holds-the-lowest-nonce"],
)
def test_simultaneous_rekey_both_detect_the_collision_lowest_nonce_loses(
    a_nonces: list[bytes], b_nonces: list[bytes], a_wins: bool
) -> None:
    """RFC 7296 s2.8.2: each answers the other's request; the SA whose exchange holds the lowest of the
    four nonces is deleted by its creator, and the survivor's creator deletes the old SA."""
    a, b, sa, request_a, request_b = colliding_rekeys(a_nonces, b_nonces)
    old = sa.spis
    b.receive_datagram(request_a, A, 1.0)
    a.receive_datagram(request_b, B, 1.0)
    ((response_b, _),), ((response_a, _),) = a.datagrams_to_send(), b.datagrams_to_send()
    assert not a.counters.snapshot() and not b.counters.snapshot()  # no TEMPORARY_FAILURE either way
    a.receive_datagram(response_a, B, 1.1)
    b.receive_datagram(response_b, A, 1.1)
    pump(a, b, 1.2)
    survivor = outcome(a, b, old, created=2)
    assert survivor.initiator is a_wins  # the rekey initiator is the new SA's original initiator
    assert not a.counters.snapshot() and not b.counters.snapshot()


@pytest.mark.parametrize("a_misses", [True, False])
def test_simultaneous_rekey_one_side_misses_the_collision(a_misses: bool) -> None:
    """The peer's response overtakes its request: the side that missed the collision completes its rekey,
    deletes the old SA and answers the late request TEMPORARY_FAILURE; the other keeps that new SA."""
    a, b, sa, request_a, request_b = colliding_rekeys([LOW, HIGH], [MID, HIGH])
    old = sa.spis
    if a_misses:  # b sees a's request while rekeying, a sees b's answer before b's request
        b.receive_datagram(request_a, A, 1.0)
        a.receive_datagram(b.datagrams_to_send()[0][0], B, 1.0)
        a.receive_datagram(request_b, B, 1.0)
    else:
        a.receive_datagram(request_b, B, 1.0)
        b.receive_datagram(a.datagrams_to_send()[0][0], A, 1.0)
        b.receive_datagram(request_a, A, 1.0)
    pump(a, b, 1.1)
    survivor = outcome(a, b, old, created=1)  # the missed request was refused, so it created nothing
    assert survivor.initiator is a_misses  # whoever missed it kept the SA it created, nonces regardless
    refuser = a if a_misses else b
    assert refuser.counters[Reason.REKEY_REFUSED] == 1


def test_superseded_sa_whose_delete_never_comes_is_dropped_locally() -> None:
    a, b = engines("aes128gcm16-prfsha256-x25519", limits=Limits(superseded_timeout=30.0))
    sa, peer = establish(a, b)
    events(b)
    a.rekey(sa, 1.0)
    ((request, _),) = a.datagrams_to_send()
    b.receive_datagram(request, A, 1.0)  # b answers; the answer and a's Delete are lost
    b.datagrams_to_send()
    assert peer.state == SAState.REKEYED and b.next_timer() == pytest.approx(31.0)
    b.handle_timer(31.0)
    assert b.lookup(*sa.spis) is None and len(b.registry) == 1
    assert [e for e in events(b) if isinstance(e, Deleted)] == [Deleted(sa.spis, "rekeyed")]


def test_forged_error_notify_in_ike_sa_init_does_not_stop_the_genuine_answer() -> None:
    """s2.21.1: an unprotected N(NO_PROPOSAL_CHOSEN) can come from anyone; the real response still counts."""
    a, b = engines()
    sa = a.initiate(B, a.peers[0], 0.0)
    ((request, _),) = a.datagrams_to_send()
    header = decode_header(unframe(request, A[1], B[1]))
    from nf.ike.message import encode_message, frame, plain
    from nf.ike.payloads import NotifyPayload

    forged = plain(
        header.spi_i,
        b"\x01" * 8,
        ExchangeType.IKE_SA_INIT,
        0,
        is_response=True,
        from_initiator=False,
        payloads=[NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)],
    )
    a.receive_datagram(frame(encode_message(forged), A[1], B[1]), B, 0.05)
    assert events(a) == [] and a.lookup(*sa.spis) is sa
    b.receive_datagram(request, A, 0.1)
    pump(a, b, 0.2)
    assert sa.state == SAState.ESTABLISHED and [type(e) for e in events(a)] == [Established]


def test_initial_contact_from_a_restarted_peer_replaces_its_old_sas() -> None:
    """s2.4: a fresh engine (no SA with the peer) sends N(INITIAL_CONTACT); the responder forgets that
    identity's older SAs from that address. An engine that still has an SA with the peer does not send it."""
    a, b = engines("aes128gcm16-prfsha256-x25519")
    first, _ = establish(a, b)
    second = a.initiate(B, a.peers[0], 1.0)  # a already has an SA with b: no INITIAL_CONTACT
    pump(a, b, 1.0)
    assert second.state == SAState.ESTABLISHED and len(b.registry) == 2
    events(a), events(b)
    restarted = IKEEngine(
        A, os.urandom, 2.0, peers=[config("a.test", "b.test", "aes128gcm16-prfsha256-x25519")]
    )
    third = restarted.initiate(B, restarted.peers[0], 2.0)
    wire = pump(restarted, b, 2.0)
    responder_sa = b.lookup(*third.spis)
    assert responder_sa is not None and responder_sa.state == SAState.ESTABLISHED
    auth_request = decode_message(unframe(wire[2], A[1], B[1]), responder_sa.keymat)
    assert auth_request.exchange == ExchangeType.IKE_AUTH
    assert auth_request.notifies(NotifyType.INITIAL_CONTACT)
    assert [sa.spis for sa in b.registry] == [third.spis]
    gone = sorted((e.spis, e.reason) for e in events(b) if isinstance(e, Deleted))
    assert gone == sorted([(first.spis, "initial-contact"), (second.spis, "initial-contact")])


def test_peer_that_cannot_rekey_gets_a_new_ike_sa_and_the_old_one_is_deleted() -> None:
    """s4: a minimal peer answers our IKE SA rekey NO_ADDITIONAL_SAS; like strongSwan we then set up a
    brand-new IKE SA (IKE_SA_INIT + IKE_AUTH) and delete the old one once it is up."""
    from nf.ike.message import encode_message, frame, protected
    from nf.ike.payloads import NotifyPayload

    a, b = engines("aes128gcm16-prfsha256-x25519")
    sa, peer = establish(a, b)
    events(a), events(b)
    a.rekey(sa, 1.0)
    ((request, _),) = a.datagrams_to_send()
    header = decode_header(unframe(request, A[1], B[1]))
    refusal = protected(
        sa.spi_i,
        sa.spi_r,
        ExchangeType.CREATE_CHILD_SA,
        header.message_id,
        is_response=True,
        from_initiator=False,
        payloads=[NotifyPayload(NotifyType.NO_ADDITIONAL_SAS)],
    )
    b.receive_datagram(request, A, 1.0)  # b keeps its message-ID window in step; its real answer is
    b.datagrams_to_send()  # replaced by the refusal a minimal implementation would send
    a.receive_datagram(frame(encode_message(refusal, peer.keymat_or_fail()), B[1], A[1]), B, 1.0)
    (refused,) = events(a)
    assert isinstance(refused, Failed) and refused.reason == "rekey-refused"
    assert refused.detail.endswith("reauthenticating") and sa.state == SAState.ESTABLISHED
    pump(a, b, 1.1)
    a_events = events(a)
    (established,) = [e for e in a_events if isinstance(e, Established)]
    assert established.spis != sa.spis and a_events[-1] == Deleted(sa.spis, "reauthenticated")
    new_a, new_b = a.lookup(*established.spis), b.lookup(*established.spis)
    assert new_a is not None and new_b is not None and new_a.ippm_secret() == new_b.ippm_secret()
    assert a.lookup(*sa.spis) is None and b.lookup(*sa.spis) is None


_KEY_SLOTS = ("_sk_d", "_sk_ai", "_sk_ar", "_sk_ei", "_sk_er", "_sk_pi", "_sk_pr")


def _spellings(secret: bytes) -> set[str]:
    import base64

    return {secret.hex(), secret.hex().upper(), repr(secret)[2:-1], base64.b64encode(secret).decode()}


def test_no_key_material_in_repr_logs_events_counters_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    """Key hygiene across a whole SA life with bad input: the SK_* of every SA, the PSK and the RFC 7717
    secret appear in no repr/str, log line, event, counter or exception text; only SPIs and algorithms."""
    import logging

    caplog.set_level(logging.DEBUG)
    a, b = engines("aes128-sha256-x25519")
    sa, peer = establish(a, b)
    texts: list[str] = []
    keymats = [sa.keymat_or_fail()]
    # bad input of every kind on the established SA
    a.check_liveness(sa, 1.0)
    ((request, _),) = a.datagrams_to_send()
    flipped = request[:-1] + bytes([request[-1] ^ 1])
    for junk in (flipped, request[:30], request[:4] + bytes(8) + request[12:]):
        b.receive_datagram(junk, A, 1.0)
    b.receive_datagram(request, A, 1.0)
    pump(a, b, 1.0)
    a.rekey(sa, 1.0)
    with pytest.raises(RuntimeError) as refused:  # a second request while one is in flight
        a.rekey(sa, 1.0)
    texts.append(str(refused.value))
    texts += [repr(sa), repr(peer), repr(sa.exchange_state), repr(peer.exchange_state)]
    pump(a, b, 1.1)
    for engine in (a, b):
        texts += [repr(engine), repr(engine.counters), str(engine.counters.snapshot())]
        for item in engine.registry:
            keymats.append(item.keymat_or_fail())
            texts += [repr(item), str(item), repr(item.keymat), repr(item.exchange_state)]
            texts.append(repr(item.ippm_secret()))
        texts += [repr(event) for event in events(engine)]
        texts += [repr(p) for p in engine.peers]
    texts.append(caplog.text)
    assert "ike: integrity-check-failed" in caplog.text and "ike: unknown-spi" in caplog.text
    secrets = [PSK_BYTES] + [getattr(k, slot) for k in keymats for slot in _KEY_SLOTS if getattr(k, slot)]
    secrets += [k.ippm_secret()._secret for k in keymats]
    assert len(keymats) >= 3 and len(secrets) >= 22  # the old SA's and both copies of the rekeyed one
    joined = "\n".join(texts)
    assert sa.spi_i.hex() in joined and "aes128-sha256" in joined
    for secret in secrets:
        for spelling in _spellings(secret):
            assert spelling not in joined


def _log_lines(caplog: pytest.LogCaptureFixture, reason: Reason) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"ike: {reason.value}")]


def test_each_kind_of_bad_datagram_is_counted_every_time_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Truncated, wrong SPI, bad ICV, unknown critical payload, invalid syntax: 20 copies each give 20 counts
    and one log line per reason (the rest are suppressed by the per-reason budget); nothing is answered
    except the authenticated malformed requests, as s2.21 asks."""
    caplog.set_level("WARNING", logger="nf.ike")
    a, b = engines("aes256gcm16-prfsha384-ecp256")
    sa, peer = establish(a, b)
    a.check_liveness(sa, 1.0)
    ((request, _),) = a.datagrams_to_send()
    b.receive_datagram(request, A, 1.0)  # the genuine one first, so the injected requests are in window
    b.datagrams_to_send()
    critical = GENERIC_HEADER.pack(next_payload=0, flags=0x80, length=8) + b"\0\0\0\0"
    cases = {
        Reason.TRUNCATED: [request[:25]] * 20,
        Reason.UNKNOWN_SPI: [request[:4] + bytes(8) + request[12:]] * 20,
        Reason.INTEGRITY_CHECK_FAILED: [request[:-1] + bytes([request[-1] ^ 1])] * 20,
        Reason.UNSUPPORTED_CRITICAL_PAYLOAD: [_inject(a, sa, 99, critical) for _ in range(20)],
    }
    for reason, datagrams in cases.items():
        for datagram in datagrams:
            b.receive_datagram(datagram, A, 1.0)
        assert b.counters[reason] == 20, reason
        assert len(_log_lines(caplog, reason)) == 1, reason
    answered = b.datagrams_to_send()
    assert len(answered) == 20 and peer.state == SAState.ESTABLISHED  # only the critical-payload requests
    bad = GENERIC_HEADER.pack(next_payload=0, flags=0, length=40) + b"\0\0\0\0"
    b.receive_datagram(_inject(a, sa, PayloadType.NOTIFY, bad), A, 1.0)  # fatal for the SA
    assert b.counters[Reason.INVALID_SYNTAX] == 1 and len(_log_lines(caplog, Reason.INVALID_SYNTAX)) == 1


def test_authentication_failures_log_the_specific_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad signature, untrusted certificate and ID mismatch all answer AUTHENTICATION_FAILED; the count is
    one reason, the log line names which check failed."""
    from nf.ike.auth import Signer
    from nf.ike.certificates import TrustAnchors, load_certificates
    from tests.strongswan_peer import CharonPKI, make_pki

    caplog.set_level("WARNING", logger="nf.ike")
    pki = make_pki(tmp_path / "a", {"a.test": "ecdsa", "b.test": "ecdsa", "thief.test": "ecdsa"})
    stranger = make_pki(tmp_path / "b", {"a.test": "ecdsa"})
    proposals = parse_proposals("aes128gcm16-prfsha256-x25519")

    def cert_config(local: str, remote: str, key_of: str, owner: CharonPKI) -> PeerConfig:
        """`owner` issued our certificate; we trust `pki`'s CA."""
        return PeerConfig(
            Identity.parse(local),
            Identity.parse(remote),
            proposals,
            signer=Signer.from_file(str(owner.identity(key_of).key)),
            certificates=tuple(load_certificates(str(owner.identity(local).cert))),
            trust=TrustAnchors.from_files(str(pki.ca_cert)),
        )

    responder = cert_config("b.test", "a.test", "b.test", pki)
    cases = {
        "wrong-auth-data": cert_config("a.test", "b.test", "thief.test", pki),  # signed with another key
        "untrusted-certificate": cert_config("a.test", "b.test", "a.test", stranger),
    }
    for expected, initiator in cases.items():
        a = IKEEngine(A, os.urandom, 0.0, peers=[initiator])
        b = IKEEngine(B, os.urandom, 0.0, peers=[responder])
        a.initiate(B, initiator, 0.0)
        pump(a, b)
        assert b.counters[Reason.AUTHENTICATION_FAILED] == 1 and len(b.registry) == 0, expected
        lines = _log_lines(caplog, Reason.AUTHENTICATION_FAILED)
        assert any(expected in line for line in lines[-2:]), lines  # the responder's line (a logs too)
    a = IKEEngine(A, os.urandom, 0.0, peers=[config("a.test", "b.test")])
    b = IKEEngine(B, os.urandom, 0.0, peers=[config("b.test", "not-a.test")])
    a.initiate(B, a.peers[0], 0.0)
    pump(a, b)
    assert b.counters[Reason.AUTHENTICATION_FAILED] == 1
    assert any("id-mismatch" in line for line in _log_lines(caplog, Reason.AUTHENTICATION_FAILED)[-2:])
