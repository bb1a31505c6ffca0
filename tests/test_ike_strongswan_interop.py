"""Our IKE endpoint against a real strongSwan charon (private instance), in both roles.

For every SA the test proves that charon's logged SK_d equals ours without either key leaving its holder:
SharedSecret(prf(SK_d_from_log, "IPPM")) is compared in constant time with our keymat's ippm_secret().
charon is driven through swanctl in a worker thread so our asyncio endpoint keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from nf.ike.auth import PreSharedKey
from nf.ike.counters import Reason
from nf.ike.exchanges import IKEEngine, Limits, PeerConfig
from nf.ike.message import ExchangeType, decode_header, unframe
from nf.ike.sa import Deleted, Established, Event, Failed, Rekeyed, SAState
from nf.net.ike_endpoint import IKEEndpoint, open_ike_endpoint
from nf.twamp.keysource import SharedSecret
from tests.ike_peers import cert_peer, psk_peer, run
from tests.strongswan_peer import Charon, CharonError, CharonPKI, Connection, make_pki

pytestmark = pytest.mark.strongswan

PSK = bytes(range(7, 39))
T = TypeVar("T")
# (auth, swanctl proposal): every DH group (14, 15, 16, 19, 20, 21, 31, 32) and cipher suite (AES-GCM-16
# 128/256, AES-CBC with HMAC-SHA2-256/384/512) appears at least once, and every auth method with two suites.
MATRIX = [
    ("psk", "aes128-sha256-modp2048"),
    ("psk", "aes256-sha384-ecp384"),
    ("psk", "aes256-sha512-x25519"),
    ("psk", "aes128gcm16-prfsha256-ecp256"),
    ("psk", "aes256gcm16-prfsha384-x25519"),
    ("ecdsa", "aes256gcm16-prfsha384-ecp256"),
    ("ecdsa", "aes128-sha256-x25519"),
    ("ecdsa384", "aes256gcm16-prfsha384-ecp384"),
    ("rsa", "aes128-sha256-modp2048"),
    ("rsa", "aes256gcm16-prfsha512-ecp384"),
    ("rsa-pss", "aes256-sha384-modp2048"),
    ("ed25519", "aes128gcm16-prfsha256-x25519"),
    ("ed25519", "aes256-sha512-ecp256"),
    ("psk", "aes256-sha512-ecp521"),
    ("psk", "aes128-sha256-modp3072"),
    ("psk", "aes256gcm16-prfsha384-modp4096"),
    ("ecdsa", "aes128gcm16-prfsha256-curve448"),
    ("ecdsa384", "aes256-sha384-ecp521"),
]
IDS = {
    "psk": ("sw.test", "py.test"),
    "ecdsa": ("sw-ec.test", "py-ec.test"),
    "ecdsa384": ("sw-ec384.test", "py-ec384.test"),  # P-384 keys and certificates
    "rsa": ("sw-rsa.test", "py-rsa.test"),
    "rsa-pss": ("sw-rsa.test", "py-rsa.test"),  # both sign RSASSA-PSS (charon.rsa_pss = yes)
    "ed25519": ("sw-ed.test", "py-ed.test"),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CharonPKI:
    names = {ident: kind.split("-")[0] for kind, pair in IDS.items() if kind != "psk" for ident in pair}
    return make_pki(tmp_path_factory.mktemp("pki"), names)


@pytest.fixture(scope="module")
def charon() -> Iterator[Charon]:
    with Charon("i") as instance:
        yield instance


@pytest.fixture(scope="module")
def charon_pss() -> Iterator[Charon]:
    """A charon that signs with RSASSA-PSS (the default one uses PKCS#1 v1.5 for RSA)."""
    with Charon("p", rsa_pss=True) as instance:
        yield instance


def our_config(pki: CharonPKI, auth: str, proposals: str, psk: bytes = PSK) -> PeerConfig:
    sw, py = IDS[auth]
    if auth == "psk":
        return psk_peer(py, sw, PreSharedKey(psk), proposals)
    return cert_peer(pki, py, sw, proposals, rsa_pss=auth == "rsa-pss")


def charon_conn(
    charon: Charon, pki: CharonPKI, auth: str, proposals: str, our_port: int, **extra: str
) -> None:
    sw, py = IDS[auth]
    conn = Connection(
        "py",
        charon.port,
        our_port,
        sw,
        py,
        proposals=proposals,
        auth="psk" if auth == "psk" else "pubkey",
        cert=None if auth == "psk" else pki.identity(sw),
        **extra,
    )
    charon.load([conn], psk=PSK, pki=pki)


async def in_thread(func: Callable[[], T]) -> T:
    return await asyncio.to_thread(func)


@contextlib.asynccontextmanager
async def facing_charon(
    charon: Charon, pki: CharonPKI, auth: str, proposals: str, config: PeerConfig, **extra: str
) -> AsyncIterator[IKEEndpoint]:
    """Our endpoint on a free loopback port, and charon's connection to it loaded; closed on the way out."""
    endpoint = await open_ike_endpoint(("127.0.0.1", 0), peers=[config])
    try:
        await in_thread(lambda: charon_conn(charon, pki, auth, proposals, endpoint.local[1], **extra))
        yield endpoint
    finally:
        endpoint.close()


def assert_same_keys(charon: Charon, endpoint: IKEEndpoint, spis: tuple[bytes, bytes]) -> None:
    sa = endpoint.lookup(*spis)
    assert sa is not None and sa.state == SAState.ESTABLISHED
    logged = charon.keys_for(spis)
    assert SharedSecret(logged.ippm_secret_bytes()) == sa.ippm_secret()


class Recorder:
    def __init__(self, endpoint: IKEEndpoint) -> None:
        self.events: list[Event] = []
        endpoint.add_listener(self.events.append)

    async def wait(self, predicate: Callable[[Event], bool], timeout: float = 60.0) -> Event:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no matching event; got {self.events!r}")
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(("auth", "proposals"), MATRIX)
@pytest.mark.parametrize("we_initiate", [True, False], ids=["py-initiator", "charon-initiator"])
def test_childless_sa_with_charon(
    request: pytest.FixtureRequest, pki: CharonPKI, auth: str, proposals: str, we_initiate: bool
) -> None:
    charon: Charon = request.getfixturevalue("charon_pss" if auth == "rsa-pss" else "charon")

    async def scenario() -> None:
        config = our_config(pki, auth, proposals)
        endpoint = await open_ike_endpoint(("127.0.0.1", 0), peers=[config])
        recorder = Recorder(endpoint)
        try:
            await in_thread(lambda: charon_conn(charon, pki, auth, proposals, endpoint.local[1]))
            log_start = len(charon.log_text())
            event: Event
            if we_initiate:
                event = await endpoint.initiate(("127.0.0.1", charon.port), config)
            else:
                await in_thread(lambda: charon.initiate("py"))
                event = await recorder.wait(lambda e: isinstance(e, Established | Failed))
            assert isinstance(event, Established), event
            assert event.initiator is we_initiate and event.peer_id == IDS[auth][0]
            info = await in_thread(lambda: charon.wait_sa(spis=event.spis))
            assert info.initiator is not we_initiate
            assert_same_keys(charon, endpoint, event.spis)
            told = charon.log_text()[log_start:]
            # our IKE_SA_INIT carries NAT-D (right hashes: charon sees no NAT), RFC 7427 hashes, RFC 6023
            ours = "response" if not we_initiate else "request"
            init = re.search(rf"parsed IKE_SA_INIT {ours} 0 \[ (.*) \]", told)
            assert init is not None, told[-2000:]
            for notify in ("N(NATD_S_IP)", "N(NATD_D_IP)", "N(HASH_ALG)", "N(CHDLESS_SUP)"):
                assert notify in init[1].split(), (notify, init[1])
            assert "behind NAT" not in told and "received supported signature hash algorithms" in told
            if auth == "rsa-pss":  # charon verified our PSS signature and signed with PSS itself
                assert re.search(r"authentication of 'py-rsa.test' with RSA_EMSA_PSS_SHA2_\d+_SALT", told)
                assert re.search(r"authentication of 'sw-rsa.test' \(myself\) with RSA_EMSA_PSS_", told)
            sa = endpoint.lookup(*event.spis)
            assert sa is not None
            deleted = await endpoint.delete(sa)
            assert deleted.reason == "deleted"
            await in_thread(lambda: charon.wait_gone(event.spis))
            # nothing refused (a slow answer may legitimately draw a retransmission from charon)
            assert set(endpoint.counters.snapshot()) <= {Reason.RETRANSMITTED_REQUEST.value}
        finally:
            endpoint.close()

    run(scenario())


@pytest.mark.parametrize("rekeyer", ["py", "charon"])
def test_rekey_then_delete_from_either_side(charon: Charon, pki: CharonPKI, rekeyer: str) -> None:
    proposals = "aes256gcm16-prfsha384-ecp256"

    async def scenario() -> None:
        config = our_config(pki, "psk", proposals)
        endpoint = await open_ike_endpoint(("127.0.0.1", 0), peers=[config])
        recorder = Recorder(endpoint)
        try:
            await in_thread(lambda: charon_conn(charon, pki, "psk", proposals, endpoint.local[1]))
            event = await endpoint.initiate(("127.0.0.1", charon.port), config)
            assert isinstance(event, Established)
            old = event.spis
            before = endpoint.lookup(*old)
            assert before is not None
            old_secret = before.ippm_secret()
            rekeyed: Event
            if rekeyer == "py":
                rekeyed = await endpoint.rekey(before)
            else:
                info = await in_thread(lambda: charon.wait_sa(spis=old))
                await in_thread(lambda: charon.rekey(info.uniqueid))
                rekeyed = await recorder.wait(lambda e: isinstance(e, Rekeyed | Failed))
            assert isinstance(rekeyed, Rekeyed) and rekeyed.old_spis == old
            new = rekeyed.new_spis
            await recorder.wait(lambda e: isinstance(e, Deleted) and e.spis == old)
            await in_thread(lambda: charon.wait_sa(spis=new))
            await in_thread(lambda: charon.wait_gone(old))
            assert endpoint.lookup(*old) is None
            assert_same_keys(charon, endpoint, new)
            after = endpoint.lookup(*new)
            assert after is not None and after.ippm_secret() != old_secret
            assert after.initiator is (rekeyer == "py")
            # and the delete comes from the other side this time
            if rekeyer == "py":
                info = await in_thread(lambda: charon.wait_sa(spis=new))
                await in_thread(lambda: charon.terminate(info.uniqueid))
                gone = await recorder.wait(lambda e: isinstance(e, Deleted) and e.spis == new)
                assert isinstance(gone, Deleted) and gone.reason == "deleted-by-peer"
            else:
                assert (await endpoint.delete(after)).reason == "deleted"
                await in_thread(lambda: charon.wait_gone(new))
        finally:
            endpoint.close()

    run(scenario())


def test_liveness_both_ways(charon: Charon, pki: CharonPKI) -> None:
    proposals = "aes128-sha256-x25519"

    async def scenario() -> None:
        config = our_config(pki, "psk", proposals)
        async with facing_charon(charon, pki, "psk", proposals, config, dpd_delay="1s") as endpoint:
            event = await endpoint.initiate(("127.0.0.1", charon.port), config)
            assert isinstance(event, Established)
            sa = endpoint.lookup(*event.spis)
            assert sa is not None
            heard = sa.last_heard
            assert endpoint.check_liveness(sa)
            for _ in range(3000):
                if not sa.busy:
                    break
                await asyncio.sleep(0.01)
            assert not sa.busy and sa.last_heard > heard and sa.state == SAState.ESTABLISHED
            # charon (dpd_delay = 1s) checks on us when idle; we answer and it keeps the SA
            start = len(charon.log_text())
            pattern = re.compile(r"sending DPD request.*?parsed INFORMATIONAL response \d+ \[ \]", re.S)
            for _ in range(3000):
                if pattern.search(charon.log_text()[start:]):
                    break
                await asyncio.sleep(0.02)
            assert pattern.search(charon.log_text()[start:]), "charon sent no liveness check"
            info = await in_thread(lambda: charon.wait_sa(spis=event.spis))
            assert info.state == "ESTABLISHED" and sa.state == SAState.ESTABLISHED
            await endpoint.delete(sa)

    run(scenario())


def test_invalid_ke_retry_against_charon(charon: Charon, pki: CharonPKI) -> None:
    async def scenario() -> None:
        config = our_config(pki, "psk", "aes128-sha256-x25519-ecp256")  # our KE: x25519
        async with facing_charon(charon, pki, "psk", "aes128-sha256-ecp256", config) as endpoint:
            event = await endpoint.initiate(("127.0.0.1", charon.port), config)
            assert isinstance(event, Established) and event.algorithms.endswith("ecp256")
            assert_same_keys(charon, endpoint, event.spis)
            assert "INVALID_KE_PAYLOAD" in charon.log_text() or "N(INVAL_KE)" in charon.log_text()
            sa = endpoint.lookup(*event.spis)
            assert sa is not None
            await endpoint.delete(sa)

    run(scenario())


def test_charon_answers_our_cookie(charon: Charon, pki: CharonPKI) -> None:
    proposals = "aes128gcm16-prfsha256-x25519"

    async def scenario() -> None:
        config = our_config(pki, "psk", proposals)
        endpoint = await open_ike_endpoint(
            ("127.0.0.1", 0), peers=[config], limits=Limits(cookie_always=True)
        )
        recorder = Recorder(endpoint)
        try:
            await in_thread(lambda: charon_conn(charon, pki, "psk", proposals, endpoint.local[1]))
            await in_thread(lambda: charon.initiate("py"))
            event = await recorder.wait(lambda e: isinstance(e, Established | Failed))
            assert isinstance(event, Established)
            assert endpoint.counters[Reason.COOKIE_REQUIRED] == 1
            assert_same_keys(charon, endpoint, event.spis)
        finally:
            endpoint.close()

    run(scenario())


@pytest.mark.parametrize("we_initiate", [True, False], ids=["py-initiator", "charon-initiator"])
def test_wrong_psk_is_authentication_failed(charon: Charon, pki: CharonPKI, we_initiate: bool) -> None:
    proposals = "aes128-sha256-modp2048"

    async def scenario() -> None:
        config = our_config(pki, "psk", proposals, psk=b"not the secret charon has")
        endpoint = await open_ike_endpoint(("127.0.0.1", 0), peers=[config])
        recorder = Recorder(endpoint)
        try:
            await in_thread(lambda: charon_conn(charon, pki, "psk", proposals, endpoint.local[1]))
            event: Event
            if we_initiate:
                event = await endpoint.initiate(("127.0.0.1", charon.port), config)
            else:
                with pytest.raises(CharonError):
                    await in_thread(lambda: charon.initiate("py", timeout=20))
                event = await recorder.wait(lambda e: isinstance(e, Established | Failed))
            assert isinstance(event, Failed) and event.reason == "authentication-failed"
            assert endpoint.counters[Reason.AUTHENTICATION_FAILED] == 1
            assert endpoint.engine is not None and len(endpoint.engine.registry) == 0
        finally:
            endpoint.close()

    run(scenario())


def test_untrusted_certificate_is_authentication_failed(
    charon: Charon, tmp_path: Path, pki: CharonPKI
) -> None:
    """charon's certificate chains to a CA we do not trust."""
    other = make_pki(tmp_path / "other", {"py-ec.test": "ecdsa"})
    proposals = "aes256gcm16-prfsha384-ecp256"

    async def scenario() -> None:
        config = cert_peer(pki, "py-ec.test", "sw-ec.test", proposals, trust=other)
        async with facing_charon(charon, pki, "ecdsa", proposals, config) as endpoint:
            event = await endpoint.initiate(("127.0.0.1", charon.port), config)
            assert isinstance(event, Failed) and event.reason == "authentication-failed"
            assert "untrusted-certificate" in event.detail

    run(scenario())


def test_childless_never_peer_is_refused(charon: Charon, pki: CharonPKI) -> None:
    """RFC 6023: without the responder's CHILDLESS_IKEV2_SUPPORTED we must not send a childless IKE_AUTH."""
    proposals = "aes128-sha256-x25519"

    async def scenario() -> None:
        config = our_config(pki, "psk", proposals)
        async with facing_charon(charon, pki, "psk", proposals, config, childless="never") as endpoint:
            event = await endpoint.initiate(("127.0.0.1", charon.port), config)
            assert isinstance(event, Failed) and event.reason == "peer-refused"
            assert "childless" in event.detail

    run(scenario())


def test_child_sa_in_ike_auth_is_refused_but_the_ike_sa_comes_up(charon: Charon, pki: CharonPKI) -> None:
    """s2.21.2: authenticate normally, answer N(NO_PROPOSAL_CHOSEN) instead of SAr2/TS; no kernel state."""
    proposals = "aes256gcm16-prfsha384-ecp256"
    child = "\n".join(
        [
            "children {",
            "c {",
            "esp_proposals = aes128gcm16",
            "local_ts = 127.0.0.1/32",
            "remote_ts = 127.0.0.1/32",
            "}",
            "}",
        ]
    )
    xfrm_before = _xfrm_state()

    async def scenario() -> None:
        config = our_config(pki, "psk", proposals)
        endpoint = await open_ike_endpoint(("127.0.0.1", 0), peers=[config])
        recorder = Recorder(endpoint)
        try:
            await in_thread(
                lambda: charon_conn(
                    charon, pki, "psk", proposals, endpoint.local[1], childless="allow", extra=child
                )
            )
            out = await in_thread(lambda: charon.swanctl("--initiate", "--child", "c", check=False))
            event = await recorder.wait(lambda e: isinstance(e, Established | Failed))
            assert isinstance(event, Established), out
            assert endpoint.counters[Reason.CHILD_SA_REFUSED] == 1
            assert "NO_PROP" in out or "no CHILD_SA built" in charon.log_text()
            info = await in_thread(lambda: charon.wait_sa(spis=event.spis))
            assert info.state == "ESTABLISHED"  # charon keeps the IKE SA without the Child SA
            assert_same_keys(charon, endpoint, event.spis)
            await in_thread(lambda: charon.terminate(info.uniqueid))
        finally:
            endpoint.close()

    run(scenario())
    assert _xfrm_state() == xfrm_before  # the refused Child SA never reached the kernel


def _xfrm_state() -> str:
    return subprocess.run(["ip", "xfrm", "state"], capture_output=True, text=True, check=False).stdout


class ScriptedRng:
    """os.urandom, except that queued nonces answer the next requests for 32 octets (with ECP-384 and
    AES-GCM nothing else asks for 32 octets), so the test decides which rekey holds the lowest nonce."""

    def __init__(self) -> None:
        self.nonces: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        if size == 32 and self.nonces:
            return self.nonces.pop(0)
        return os.urandom(size)


class Driven:
    """Our sans-IO engine on a real UDP socket, stepped by the test so it can hold any datagram back."""

    def __init__(self, config: PeerConfig, rng: ScriptedRng, peer: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.engine = IKEEngine(self.sock.getsockname(), rng, time.monotonic(), peers=[config])
        self.peer = peer
        self.events: list[Event] = []

    def close(self) -> None:
        self.sock.close()

    def take(self) -> list[bytes]:
        """What the engine wants to send (not sent), and its events."""
        while (event := self.engine.next_event()) is not None:
            self.events.append(event)
        return [datagram for datagram, addr in self.engine.datagrams_to_send() if addr == self.peer]

    def send(self, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            self.sock.sendto(datagram, self.peer)

    def receive(self, exchange: int, timeout: float = 30.0) -> bytes:
        """The next datagram from charon of this exchange type (anything else is fed to the engine)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65535)
            if decode_header(unframe(data, self.engine.local[1], self.peer[1])).exchange == exchange:
                return data
            self.feed(data)

    def feed(self, datagram: bytes) -> list[bytes]:
        self.engine.receive_datagram(datagram, self.peer, time.monotonic())
        return self.take()

    def run_until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        """Plain adapter loop: send, receive, timers, until `done()`."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"not done; events {self.events!r}"
            self.send(self.take())
            deadline_timer = self.engine.next_timer()
            if deadline_timer is not None and deadline_timer <= time.monotonic():
                self.engine.handle_timer(time.monotonic())
            self.sock.settimeout(0.05)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.engine.receive_datagram(data, self.peer, time.monotonic())
        self.send(self.take())


LOW, HIGH = bytes(32), b"\xff" * 32


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.01)


@pytest.mark.parametrize("case", ["py-wins", "charon-wins", "charon-misses-it", "py-misses-it"])
def test_simultaneous_rekey_collision_with_charon(charon: Charon, pki: CharonPKI, case: str) -> None:
    """Both rekey the IKE SA at once (RFC 7296 s2.8.2). We hold datagrams back so the two requests cross:
    whoever holds the lowest nonce deletes the SA it created; if one side misses the collision, it answers
    the late request TEMPORARY_FAILURE and the other keeps the SA the first created. Either way both end
    with one and the same IKE SA, whose SK_d charon logged equals ours."""
    proposals = "aes256gcm16-prfsha384-ecp384"
    config = our_config(pki, "psk", proposals)
    rng = ScriptedRng()
    ours = Driven(config, rng, ("127.0.0.1", charon.port))
    try:
        charon_conn(charon, pki, "psk", proposals, ours.engine.local[1])
        sa = ours.engine.initiate(ours.peer, config, time.monotonic())
        ours.run_until(lambda: sa.state == SAState.ESTABLISHED)
        old = sa.spis
        uid = charon.wait_sa(spis=old).uniqueid
        # our Ni and our Nr: the lowest nonce of all four decides (charon's are random, so above zero)
        rng.nonces = [HIGH, LOW] if case == "py-wins" else [LOW, HIGH]
        ours.engine.rekey(sa, time.monotonic())
        (our_request,) = ours.take()
        log_start = len(charon.log_text())
        charon.rekey(uid)
        charon_request = ours.receive(ExchangeType.CREATE_CHILD_SA)
        if case == "py-misses-it":  # charon's answer to our request reaches us before its request
            ours.send([our_request])
            ours.feed(ours.receive(ExchangeType.CREATE_CHILD_SA))
            ours.send(ours.take())
            ours.send(ours.feed(charon_request))  # TEMPORARY_FAILURE: we are deleting the old SA
        elif case == "charon-misses-it":  # our answer reaches charon before our request (never sent)
            ours.send(ours.feed(charon_request))
        else:  # both requests cross, both sides see the collision
            (our_answer,) = ours.feed(charon_request)
            ours.send([our_request])
            charon_answer = ours.receive(ExchangeType.CREATE_CHILD_SA)
            ours.send([our_answer])
            # as on a real network, our Delete follows our answer by a round trip: charon handles each
            # datagram in its own thread and would otherwise see the Delete first (a missed collision)
            wait_for(lambda: "parsed CREATE_CHILD_SA response" in charon.log_text()[log_start:])
            ours.send(ours.feed(charon_answer))

        def settled() -> bool:
            established = [s for s in ours.engine.registry if s.state == SAState.ESTABLISHED]
            if len(ours.engine.registry) != 1 or len(established) != 1:
                return False
            theirs = [s for s in charon.list_sas() if s.uniqueid > uid]  # earlier cases' SAs are not ours
            return len(theirs) == 1 and (theirs[0].spi_i, theirs[0].spi_r) == established[0].spis

        try:
            ours.run_until(settled)
        except AssertionError as exc:
            lines = [
                line
                for line in charon.log_text().splitlines()
                if re.search(r"collision|rekey|delet|parsed|generating|TEMPORARY", line, re.I)
            ]
            state = f"ours {list(ours.engine.registry)}; charon {charon.list_sas()} {lines[-25:]}"
            raise AssertionError(f"{exc}; {state}") from None
        (survivor,) = list(ours.engine.registry)
        (rekeyed,) = [e for e in ours.events if isinstance(e, Rekeyed)]
        assert rekeyed == Rekeyed(old, survivor.spis)
        assert not [e for e in ours.events if isinstance(e, Failed)]
        info = charon.wait_sa(spis=survivor.spis)
        assert info.state == "ESTABLISHED"
        # the new SA's original initiator is whoever created it
        expect_ours = case in ("py-wins", "py-misses-it")
        assert survivor.initiator is expect_ours and info.initiator is not expect_ours
        logged = charon.keys_for(survivor.spis)
        assert SharedSecret(logged.ippm_secret_bytes()) == survivor.ippm_secret()
        # charon's own account of the collision (strongSwan 5.9 ike_rekey.c wording)
        told = charon.log_text()[log_start:]
        expected = {
            "py-wins": "IKE_SA rekey collision lost",
            "charon-wins": "IKE_SA rekey collision won",
            "py-misses-it": "detected IKE_REKEY collision with IKE_REKEY",
            "charon-misses-it": "rekeyed between",  # an ordinary rekey, then charon deletes the old SA
        }
        assert expected[case] in told
        assert ("collision" in told) is (case != "charon-misses-it")
        ours.engine.delete(survivor, time.monotonic())
        ours.run_until(lambda: len(ours.engine.registry) == 0)
        charon.wait_gone(survivor.spis)
    finally:
        ours.close()
