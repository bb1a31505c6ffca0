"""IKEv2 exchanges, sans-IO: IKE_SA_INIT, childless IKE_AUTH, INFORMATIONAL, IKE SA rekey (CREATE_CHILD_SA).

Shaped like strongSwan's tasks (ike_init, ike_auth, ike_rekey, ike_delete), each with an initiator and a
responder half, driven by one `IKEEngine` that serves every SA of a local address:port, like aioquic's
connection: feed it `receive_datagram(data, addr, now)`, `handle_timer(now)` and the commands `initiate`,
`rekey`, `delete`, `check_liveness`; collect `datagrams_to_send()` and `next_event()`. It owns no socket,
clock or randomness: time is passed in, random octets come from the injected `rng`.

Bad input never raises out of `receive_datagram`: it is dropped or answered as RFC 7296 s2.21 says, and
counted per reason (nf.ike.counters). Unauthenticated junk (bad ICV, unknown SPI, malformed IKE_SA_INIT)
is dropped silently; an authenticated malformed request gets INVALID_SYNTAX or UNSUPPORTED_CRITICAL_PAYLOAD;
a bad AUTH, untrusted certificate or identity mismatch gets AUTHENTICATION_FAILED.

Simultaneous IKE SA rekeys are resolved as RFC 7296 s2.8.2 says and strongSwan's ike_rekey does: a peer's
rekey request that crosses ours is answered as usual; once both exchanges are done, the new SA whose
exchange holds the lowest of the four nonces is redundant and its creator deletes it, and the creator of
the survivor deletes the old SA. A rekey request on an SA we are deleting gets TEMPORARY_FAILURE (s2.25.2),
and a peer that refused our rekey but then deletes the old SA leaves us the SA it created. A superseded
or redundant SA whose Delete never comes is dropped locally after `Limits.superseded_timeout`. A peer that
cannot rekey IKE SAs (NO_ADDITIONAL_SAS, s4) gets a new IKE SA instead and the old one is deleted once it is
up; other refusals leave the SA as it was (the adapter's lifetime timer tries again later).

IKE_AUTH carries N(INITIAL_CONTACT) when we have no other SA with the peer's host; receiving it, we forget
that identity's older SAs from the same address and port (s2.4). An error notify in an IKE_SA_INIT response
is unauthenticated: it stops retransmission but fails the SA only after `RetransmitPolicy.error_grace`.

Deliberate limits: window size 1, no Child SAs (a Child SA request is answered NO_ADDITIONAL_SAS), no
IKE fragmentation, no MOBIKE.
"""

from __future__ import annotations

import datetime
import hashlib
import heapq
import ipaddress
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from nf.ike.auth import (
    SUPPORTED_HASHES,
    PreSharedKey,
    Signer,
    create_auth,
    decode_hash_algorithms,
    encode_hash_algorithms,
    verify_auth,
)
from nf.ike.certificates import (
    TrustAnchors,
    cert_payloads,
    certificates_from_payloads,
    check_peer_certificate,
)
from nf.ike.cookies import CookieJar
from nf.ike.counters import IKECounters, Reason
from nf.ike.errors import (
    AuthenticationError,
    AuthReason,
    IKEError,
    IKEParseError,
    KeyExchangeError,
    ParseReason,
    ProposalError,
    ProposalReason,
)
from nf.ike.identities import Identity
from nf.ike.keymat import IKEKeymat
from nf.ike.message import (
    HEADER,
    ExchangeType,
    Header,
    HeaderFlags,
    Message,
    decode_header,
    encode_message,
    frame,
    plain,
    protected,
    unframe,
)
from nf.ike.payloads import (
    AuthPayload,
    CertPayload,
    DeletePayload,
    EncryptedPayload,
    IDiPayload,
    IDrPayload,
    KEPayload,
    NoncePayload,
    NotifyPayload,
    NotifyType,
    OpaquePayload,
    Payload,
    PayloadType,
    SAPayload,
    decode_payloads,
)
from nf.ike.proposals import (
    CipherSuite,
    Proposal,
    ProposalSpec,
    ProtocolId,
    check_reply,
    offer,
    select_proposal,
)
from nf.ike.sa import (
    IKESA,
    Address,
    Deleted,
    Established,
    Event,
    Failed,
    Rekeyed,
    RetransmitPolicy,
    SARegistry,
    SAState,
    SPIs,
    spis_text,
)
from nf.ike.transforms import DH_GROUPS, KeyExchange, Rng

log = logging.getLogger("nf.ike")
NONCE_SIZE = 32
MAX_INIT_RETRIES = 3  # COOKIE / INVALID_KE_PAYLOAD round trips before giving up
PROTOCOL_IKE = ProtocolId.IKE
_FATAL_IN_AUTH_RESPONSE = (
    NotifyType.AUTHENTICATION_FAILED,
    NotifyType.INVALID_SYNTAX,
    NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
)


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerConfig:
    """Who we are to one peer, who it must be, what we offer and how both sides authenticate.

    With `psk` both sides use shared-key AUTH; otherwise we sign with `signer` (sending `certificates`,
    end entity first) and the peer must present a chain to one of `trust`. `remote_id` %any accepts
    whoever authenticates.
    """

    local_id: Identity
    remote_id: Identity
    proposals: tuple[ProposalSpec, ...]
    psk: PreSharedKey | None = None
    signer: Signer | None = None
    certificates: tuple[x509.Certificate, ...] = ()
    trust: TrustAnchors | None = None
    retransmit: RetransmitPolicy = field(default_factory=RetransmitPolicy)

    def __post_init__(self) -> None:
        if self.psk is None and (self.signer is None or self.trust is None):
            raise ValueError("a peer needs a PSK, or a signer and trust anchors")
        if not self.proposals:
            raise ValueError("a peer needs at least one proposal")

    def __repr__(self) -> str:
        method = "psk" if self.psk is not None else f"pubkey({self.signer!r})"
        names = ",".join(p.name for p in self.proposals)
        return f"PeerConfig({self.local_id} -> {self.remote_id}, {method}, {names})"


@dataclass(frozen=True)
class Limits:
    """Responder DoS limits: above `cookie_threshold` half-open SAs we demand cookies (RFC 7296 s2.6),
    at `max_half_open` we drop new IKE_SA_INIT requests, at `max_sas` we accept no new SA at all."""

    cookie_threshold: int = 30
    max_half_open: int = 1000
    max_sas: int = 10000
    half_open_timeout: float = 30.0
    cookie_always: bool = False
    cookie_rotate: float = 60.0
    superseded_timeout: float = 90.0  # a rekeyed/redundant SA whose Delete never comes (strongSwan: 90 s)


# --- per-SA exchange state -----------------------------------------------------------------------


@dataclass
class _InitData:
    """IKE_SA_INIT material both sides keep until IKE_AUTH is done (AUTH signs the INIT messages)."""

    nonce_i: bytes = b""
    nonce_r: bytes = b""
    init_i: bytes = b""  # initiator's last IKE_SA_INIT request as sent (no marker)
    init_r: bytes = b""
    peer_hashes: tuple[int, ...] = ()
    # initiator only
    ke: KeyExchange | None = None
    offered: tuple[Proposal, ...] = ()
    cookie: bytes | None = None
    retries: int = 0
    childless_ok: bool = False
    error: tuple[Reason, str] | None = None  # an unprotected error notify we are not yet trusting


@dataclass
class _RekeyData:
    new_spi: bytes
    nonce: bytes
    ke: KeyExchange
    retries: int = 0


@dataclass(frozen=True)
class _Collision:
    """The SA a peer's rekey created while ours was in flight, and the lower nonce of its exchange."""

    sa: IKESA
    lower_nonce: bytes


@dataclass
class _Context:
    config: PeerConfig | None
    init: _InitData | None = None
    rekey: _RekeyData | None = None
    successor: IKESA | None = None  # the SA our rekey created; the Delete runs on this (old) one
    collision: _Collision | None = None  # the peer's rekey that crossed ours (s2.8.2)
    redundant: bool = False  # the loser of a rekey collision: its creator deletes it
    expires: float | None = None  # a REKEYED SA is dropped locally then if its Delete never came
    replaces: IKESA | None = None  # the SA this reauthentication replaces (deleted once we are up)
    reauthenticated: bool = False  # replaced by a new IKE SA after the peer refused to rekey it


def _ctx(sa: IKESA) -> _Context:
    ctx = sa.exchange_state
    if not isinstance(ctx, _Context):
        raise TypeError("IKE SA without exchange context")
    return ctx


class _Drop(Exception):
    """Internal: stop processing this datagram after counting `reason`."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.detail = detail


_PARSE_REASONS: dict[ParseReason, Reason] = {
    ParseReason.TRUNCATED: Reason.TRUNCATED,
    ParseReason.BAD_LENGTH: Reason.BAD_LENGTH,
    ParseReason.UNSUPPORTED_MAJOR_VERSION: Reason.UNSUPPORTED_MAJOR_VERSION,
    ParseReason.UNSUPPORTED_CRITICAL_PAYLOAD: Reason.UNSUPPORTED_CRITICAL_PAYLOAD,
    ParseReason.BAD_PAYLOAD: Reason.INVALID_SYNTAX,
    ParseReason.SK_NOT_LAST: Reason.INVALID_SYNTAX,
    ParseReason.SK_WITHOUT_KEYS: Reason.INVALID_SYNTAX,
    ParseReason.INTEGRITY_CHECK_FAILED: Reason.INTEGRITY_CHECK_FAILED,
    ParseReason.BAD_PADDING: Reason.BAD_PADDING,
    ParseReason.NON_ESP_MARKER: Reason.NON_ESP_MARKER,
}


def _nat_hash(spi_i: bytes, spi_r: bytes, address: Address) -> bytes:
    """NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | port) (RFC 7296 s2.23)."""
    packed = ipaddress.ip_address(address[0]).packed
    return hashlib.sha1(spi_i + spi_r + packed + address[1].to_bytes(2, "big")).digest()


def _packed_ip(address: Address) -> bytes:
    return ipaddress.ip_address(address[0]).packed


# --- the engine ----------------------------------------------------------------------------------


class IKEEngine:
    """All IKE SAs of one local UDP address:port, both roles. Sans-IO (see the module docstring)."""

    def __init__(
        self,
        local: Address,
        rng: Rng,
        now: float,
        *,
        peers: Sequence[PeerConfig] = (),
        limits: Limits | None = None,
        counters: IKECounters | None = None,
        wall_clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.local = local
        self.peers = tuple(peers)
        self.limits = limits or Limits()
        self.counters = counters or IKECounters()
        self.registry = SARegistry()
        self._rng = rng
        self._wall_clock = wall_clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._cookies = CookieJar(rng, now, self.limits.cookie_rotate)
        self._out: deque[tuple[bytes, Address]] = deque()
        self._events: deque[Event] = deque()
        self._timers: list[tuple[float, int, IKESA]] = []  # min-heap, lazily pruned (see next_timer)
        self._timer_seq = itertools.count()

    def __repr__(self) -> str:
        return f"IKEEngine({self.local[0]}:{self.local[1]}, {self.registry!r})"

    # --- outputs

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        """The earliest deadline (retransmission, give-up, half-open expiry), or None."""
        heap = self._timers
        while heap:
            deadline, _, sa = heap[0]
            if sa in self.registry and self._deadline(sa) == deadline:
                return deadline
            heapq.heappop(heap)  # stale: answered, re-armed or removed since
        return None

    def _deadline(self, sa: IKESA) -> float | None:
        deadline = sa.next_timer()
        expiry: float | None = None
        if sa.state == SAState.HALF_OPEN:
            expiry = sa.created + self.limits.half_open_timeout
        elif sa.state == SAState.REKEYED:
            expiry = _ctx(sa).expires
        if expiry is not None:
            deadline = expiry if deadline is None else min(deadline, expiry)
        return deadline

    def _arm(self, sa: IKESA) -> None:
        """Index the SA's current deadline; older heap entries for it become stale and are skipped."""
        deadline = self._deadline(sa)
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, next(self._timer_seq), sa))

    def lookup(self, spi_i: bytes, spi_r: bytes) -> IKESA | None:
        """The SA whose (SPIi, SPIr) is an RFC 7717 Key ID."""
        return self.registry.lookup(spi_i, spi_r)

    # --- helpers

    def _spi(self) -> bytes:
        while True:
            spi = self._rng(8)
            if any(spi) and self.registry.by_own_spi(spi) is None:
                return spi

    def _emit(self, datagram: bytes, remote: Address) -> None:
        self._out.append((datagram, remote))

    def _framed(self, message: bytes, remote: Address) -> bytes:
        return frame(message, self.local[1], remote[1])

    def _count(self, reason: Reason, detail: str = "") -> None:
        self.counters.count(reason, detail)

    def _remove(self, sa: IKESA, state: SAState) -> None:
        sa.state = state
        sa.outstanding = None
        self.registry.remove(sa)

    def _fail(self, sa: IKESA, reason: Reason, detail: str = "") -> None:
        self._count(reason, f"{spis_text(sa.spis)} {detail}".strip())
        self._remove(sa, SAState.FAILED)
        self._events.append(Failed(sa.spis, reason.value, detail))

    def _request(self, sa: IKESA, exchange: int, payloads: Sequence[Payload], now: float) -> None:
        """Send a protected request on `sa` and arm its retransmission (window 1)."""
        keymat = sa.keymat
        if keymat is None:
            raise RuntimeError("protected request before keys")
        mid = sa.take_request_id()
        message = protected(
            sa.spi_i,
            sa.spi_r,
            exchange,
            mid,
            is_response=False,
            from_initiator=sa.initiator,
            payloads=payloads,
        )
        datagram = self._framed(encode_message(message, keymat), sa.remote)
        sa.sent_request(mid, exchange, datagram, now)
        self._arm(sa)
        self._emit(datagram, sa.remote)

    def _respond(self, sa: IKESA, header: Header, payloads: Sequence[Payload]) -> None:
        keymat = sa.keymat
        if keymat is None:
            raise RuntimeError("protected response before keys")
        message = protected(
            sa.spi_i,
            sa.spi_r,
            header.exchange,
            header.message_id,
            is_response=True,
            from_initiator=sa.initiator,
            payloads=payloads,
        )
        datagram = self._framed(encode_message(message, keymat), sa.remote)
        sa.answered(header.message_id, datagram)
        self._emit(datagram, sa.remote)

    def _plain_reply(
        self, header: Header, remote: Address, payloads: Sequence[Payload], spi_r: bytes
    ) -> None:
        """An unprotected IKE_SA_INIT error reply: no state is kept (s2.6)."""
        message = plain(
            header.spi_i,
            spi_r,
            header.exchange,
            header.message_id,
            is_response=True,
            from_initiator=False,
            payloads=payloads,
        )
        self._emit(self._framed(encode_message(message), remote), remote)

    def _init_notifies(self, spi_i: bytes, spi_r: bytes, remote: Address) -> list[Payload]:
        """NAT-D (s2.23) when we know our own address: bound to a wildcard we do not, and a wrong source
        hash would make the peer believe we are behind a NAT (strongSwan then floats to its NAT-T port)."""
        notifies: list[Payload] = []
        if not ipaddress.ip_address(self.local[0]).is_unspecified:
            notifies += [
                NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, _nat_hash(spi_i, spi_r, self.local)),
                NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, _nat_hash(spi_i, spi_r, remote)),
            ]
        return [
            *notifies,
            NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, encode_hash_algorithms(SUPPORTED_HASHES)),
            NotifyPayload(NotifyType.CHILDLESS_IKEV2_SUPPORTED),
        ]

    # ============================================================== commands

    def initiate(self, remote: Address, config: PeerConfig, now: float) -> IKESA:
        """Start IKE_SA_INIT towards `remote`; the outcome arrives as Established or Failed."""
        if len(self.registry) >= self.limits.max_sas:
            raise RuntimeError(f"SA limit {self.limits.max_sas} reached")
        sa = IKESA(
            spi_i=self._spi(),
            spi_r=bytes(8),
            initiator=True,
            local=self.local,
            remote=remote,
            policy=config.retransmit,
            created=now,
        )
        group = config.proposals[0].dh_groups[0]
        init = _InitData(
            nonce_i=self._rng(NONCE_SIZE), ke=group.generate(self._rng), offered=offer(config.proposals)
        )
        sa.exchange_state = _Context(config, init=init)
        self.registry.add(sa)
        self._send_init_request(sa, now)
        return sa

    def _send_init_request(self, sa: IKESA, now: float) -> None:
        init = _ctx(sa).init
        assert init is not None and init.ke is not None
        payloads: list[Payload] = []
        if init.cookie is not None:
            payloads.append(NotifyPayload(NotifyType.COOKIE, init.cookie))  # first payload (s2.6)
        payloads += [
            SAPayload(init.offered),
            KEPayload(init.ke.group.transform_id, init.ke.public_value),
            NoncePayload(init.nonce_i),
            *self._init_notifies(sa.spi_i, bytes(8), sa.remote),
        ]
        message = plain(
            sa.spi_i,
            bytes(8),
            ExchangeType.IKE_SA_INIT,
            0,
            is_response=False,
            from_initiator=True,
            payloads=payloads,
        )
        encoded = encode_message(message)
        init.init_i = encoded
        datagram = self._framed(encoded, sa.remote)
        sa.next_request_id = 1
        sa.sent_request(0, ExchangeType.IKE_SA_INIT, datagram, now)
        self._arm(sa)
        self._emit(datagram, sa.remote)

    def rekey(self, sa: IKESA, now: float) -> None:
        """Rekey the IKE SA with CREATE_CHILD_SA (s1.3.2): same suite, new SPIs, KE and nonces."""
        if sa.state != SAState.ESTABLISHED or sa.busy or sa.keymat is None:
            raise RuntimeError(f"cannot rekey {sa!r} now")
        ctx = _ctx(sa)
        group = sa.keymat.suite.dh
        ctx.rekey = _RekeyData(self._spi(), self._rng(NONCE_SIZE), group.generate(self._rng))
        self._send_rekey_request(sa, now)

    def _send_rekey_request(self, sa: IKESA, now: float) -> None:
        ctx = _ctx(sa)
        assert ctx.rekey is not None and sa.keymat is not None
        suite = sa.keymat.suite
        proposal = CipherSuite(suite.encr, suite.prf, suite.integ, ctx.rekey.ke.group).to_proposal(
            1, ctx.rekey.new_spi
        )
        payloads: list[Payload] = [
            SAPayload((proposal,)),
            NoncePayload(ctx.rekey.nonce),
            KEPayload(ctx.rekey.ke.group.transform_id, ctx.rekey.ke.public_value),
        ]
        self._request(sa, ExchangeType.CREATE_CHILD_SA, payloads, now)

    def delete(self, sa: IKESA, now: float) -> None:
        """Send Delete for the IKE SA (s1.4.1); Deleted follows on the response or on timeout."""
        if sa.state not in (SAState.ESTABLISHED, SAState.REKEYED) or sa.busy:
            raise RuntimeError(f"cannot delete {sa!r} now")
        sa.state = SAState.DELETING
        self._request(sa, ExchangeType.INFORMATIONAL, [DeletePayload(PROTOCOL_IKE)], now)

    def check_liveness(self, sa: IKESA, now: float) -> bool:
        """An empty INFORMATIONAL request (DPD, s2.4); False if another request is in flight."""
        if sa.state != SAState.ESTABLISHED or sa.busy:
            return False
        self._request(sa, ExchangeType.INFORMATIONAL, [], now)
        return True

    # ============================================================== timers

    def handle_timer(self, now: float) -> None:
        heap = self._timers
        while heap and heap[0][0] <= now:
            deadline, _, sa = heapq.heappop(heap)
            if sa not in self.registry or self._deadline(sa) != deadline:
                continue
            if sa.state == SAState.HALF_OPEN and now >= sa.created + self.limits.half_open_timeout:
                self._fail(sa, Reason.HALF_OPEN_TIMEOUT)
                continue
            expires = _ctx(sa).expires
            if sa.state == SAState.REKEYED and expires is not None and now >= expires:
                self._count(Reason.TIMEOUT, f"{spis_text(sa.spis)} superseded SA never deleted by the peer")
                self._remove(sa, SAState.DELETED)
                self._events.append(Deleted(sa.spis, _superseded_reason(sa)))
                continue
            due = sa.retransmit_due(now)
            if due is False:
                self._timed_out(sa)
                continue
            if isinstance(due, bytes):
                self._emit(due, sa.remote)
            self._arm(sa)

    def _timed_out(self, sa: IKESA) -> None:
        if sa.state in (SAState.ESTABLISHED, SAState.DELETING, SAState.REKEYED):
            self._count(Reason.TIMEOUT, spis_text(sa.spis))
            old_state = sa.state
            self._remove(sa, SAState.DELETED)
            reason = _superseded_reason(sa) if old_state == SAState.REKEYED else "timeout"
            self._events.append(Deleted(sa.spis, reason))
        else:
            init = _ctx(sa).init
            if init is not None and init.error is not None:
                self._fail(sa, *init.error)
            else:
                self._fail(sa, Reason.TIMEOUT, "no response from the peer")

    # ============================================================== receiving

    def receive_datagram(self, datagram: bytes, remote: Address, now: float) -> None:
        """Process one UDP payload from `remote`; never raises for bad input."""
        try:
            self._receive(datagram, remote, now)
        except _Drop as drop:
            self._count(drop.reason, f"from {remote[0]}:{remote[1]} {drop.detail}".strip())
        except IKEError as exc:  # anything the codecs raise that a handler did not map
            reason = (
                _PARSE_REASONS.get(exc.reason, Reason.INVALID_SYNTAX)
                if isinstance(exc, IKEParseError)
                else Reason.INVALID_SYNTAX
            )
            self._count(reason, f"from {remote[0]}:{remote[1]} {exc.detail}")

    def _receive(self, datagram: bytes, remote: Address, now: float) -> None:
        try:
            data = unframe(datagram, self.local[1], remote[1])
            header = decode_header(data)
        except IKEParseError as exc:
            if exc.reason == ParseReason.UNSUPPORTED_MAJOR_VERSION:
                self._invalid_major_version(data, remote)
            raise _Drop(_PARSE_REASONS[exc.reason], exc.detail) from None
        if header.exchange == ExchangeType.IKE_SA_INIT:
            if header.is_response:
                self._init_response(header, data, remote, now)
            elif header.spi_r == bytes(8) and header.message_id == 0:
                self._init_request(header, data, remote, now)
            else:
                raise _Drop(Reason.UNKNOWN_SPI, "IKE_SA_INIT request with a responder SPI")
            return
        own = header.spi_r if header.from_initiator else header.spi_i
        sa = self.registry.by_own_spi(own)
        if sa is None or sa.spis != (header.spi_i, header.spi_r) or sa.initiator == header.from_initiator:
            raise _Drop(Reason.UNKNOWN_SPI, f"{header.spi_i.hex()}/{header.spi_r.hex()}")
        if header.is_response:
            if sa.outstanding is None or sa.outstanding.message_id != header.message_id:
                raise _Drop(Reason.UNEXPECTED_RESPONSE, f"message ID {header.message_id}")
            message = self._open(sa, header, data, request=False)
            sa.last_heard = now
            sa.response_arrived(header.message_id)
            self._on_response(sa, header, message, now)
            return
        kind = sa.classify_request(header.message_id)
        if kind == "retransmit":
            self._open(sa, header, data, request=True, authenticate_only=True)  # before re-sending anything
            assert sa.last_response is not None
            self._count(Reason.RETRANSMITTED_REQUEST, spis_text(sa.spis))
            self._emit(sa.last_response[1], sa.remote)
            return
        if kind == "drop":
            raise _Drop(Reason.OUT_OF_WINDOW, f"message ID {header.message_id} on {spis_text(sa.spis)}")
        message = self._open(sa, header, data, request=True)
        sa.last_heard = now
        if message is None:
            return
        self._on_request(sa, header, message, now)

    def _invalid_major_version(self, data: bytes, remote: Address) -> None:
        """s2.5: drop, and answer an IKE_SA_INIT request with N(INVALID_MAJOR_VERSION) in a 2.0 header."""
        fields = HEADER.unpack(data)
        if fields["exchange"] != ExchangeType.IKE_SA_INIT or fields["flags"] & HeaderFlags.RESPONSE:
            return
        message = plain(
            fields["spi_i"],
            fields["spi_r"],
            ExchangeType.IKE_SA_INIT,
            fields["message_id"],
            is_response=True,
            from_initiator=False,
            payloads=[NotifyPayload(NotifyType.INVALID_MAJOR_VERSION)],
        )
        self._emit(self._framed(encode_message(message), remote), remote)

    def _open(
        self, sa: IKESA, header: Header, data: bytes, *, request: bool, authenticate_only: bool = False
    ) -> Message | None:
        """Verify and decrypt an SK message. Crypto failures drop silently; an authenticated request whose
        inner payloads are malformed is answered (INVALID_SYNTAX / UNSUPPORTED_CRITICAL_PAYLOAD) -> None."""
        keymat = sa.keymat
        if keymat is None:
            raise _Drop(Reason.UNKNOWN_SPI, "SK message on an SA without keys")
        try:
            outer = decode_payloads(header.next_payload, data[HEADER.size :])
        except IKEParseError as exc:
            raise _Drop(_PARSE_REASONS[exc.reason], exc.detail) from None
        if len(outer) != 1 or not isinstance(outer[0], EncryptedPayload):
            raise _Drop(Reason.INVALID_SYNTAX, "message after IKE_SA_INIT without SK")
        sk = outer[0]
        try:
            inner = keymat.unprotect(data[: len(data) - len(sk.body)], sk.body)
        except IKEParseError as exc:
            raise _Drop(_PARSE_REASONS[exc.reason], exc.detail) from None
        if authenticate_only:
            return None
        try:
            payloads = decode_payloads(sk.inner_first, inner, allow_sk=False)
        except IKEParseError as exc:
            reason = _PARSE_REASONS.get(exc.reason, Reason.INVALID_SYNTAX)
            if reason != Reason.UNSUPPORTED_CRITICAL_PAYLOAD:
                reason = Reason.INVALID_SYNTAX
            self._count(reason, f"{spis_text(sa.spis)} {exc.detail}")
            if not request:
                self._abandon(sa, reason)
                return None
            if reason == Reason.UNSUPPORTED_CRITICAL_PAYLOAD:
                kind = bytes([exc.payload_type or 0])
                self._respond(sa, header, [NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, kind)])
            else:
                self._respond(sa, header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
            if reason == Reason.INVALID_SYNTAX:
                self._abandon(sa, reason)  # fatal for the SA (s2.21.3), and for a half-open one (s2.21.2)
            return None
        return Message(
            header.spi_i,
            header.spi_r,
            header.exchange,
            header.message_id,
            header.is_response,
            header.from_initiator,
            tuple(payloads),
            True,
        )

    def _abandon(self, sa: IKESA, reason: Reason) -> None:
        if sa.state in (SAState.ESTABLISHED, SAState.REKEYED, SAState.DELETING):
            self._remove(sa, SAState.DELETED)
            self._events.append(Deleted(sa.spis, reason.value))
        else:
            self._remove(sa, SAState.FAILED)
            self._events.append(Failed(sa.spis, reason.value))

    # ------------------------------------------------------------ IKE_SA_INIT, responder

    def _init_request(self, header: Header, data: bytes, remote: Address, now: float) -> None:
        try:
            payloads = decode_payloads(header.next_payload, data[HEADER.size :], allow_sk=False)
        except IKEParseError as exc:
            if exc.reason == ParseReason.UNSUPPORTED_CRITICAL_PAYLOAD:
                kind = bytes([exc.payload_type or 0])
                self._plain_reply(
                    header, remote, [NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, kind)], bytes(8)
                )
            raise _Drop(_PARSE_REASONS[exc.reason], exc.detail) from None
        message = Message(header.spi_i, header.spi_r, header.exchange, 0, False, True, tuple(payloads))
        sa_payload, ke, nonce = (
            message.first(SAPayload),
            message.first(KEPayload),
            message.first(NoncePayload),
        )
        if sa_payload is None or ke is None or nonce is None:
            raise _Drop(Reason.INVALID_SYNTAX, "IKE_SA_INIT without SA, KE or Nonce")
        if not header.from_initiator:
            raise _Drop(Reason.INVALID_SYNTAX, "IKE_SA_INIT request without the I flag")
        existing = self.registry.by_init(remote, header.spi_i, nonce.data)
        if existing is not None:  # a retransmitted first message: same answer, no new state (s2.1)
            if existing.state == SAState.HALF_OPEN and existing.last_response is not None:
                self._count(Reason.RETRANSMITTED_REQUEST, spis_text(existing.spis))
                self._emit(existing.last_response[1], remote)
            return
        half_open = self.registry.half_open_count
        if half_open >= self.limits.max_half_open:
            raise _Drop(Reason.HALF_OPEN_LIMIT, f"{half_open} half-open SAs")
        if len(self.registry) >= self.limits.max_sas:
            raise _Drop(Reason.SA_LIMIT, f"{len(self.registry)} SAs")
        if self.limits.cookie_always or half_open >= self.limits.cookie_threshold:
            cookies = message.notifies(NotifyType.COOKIE)
            address = _packed_ip(remote)
            if not cookies or not self._cookies.verify(
                cookies[0].data, nonce.data, address, header.spi_i, now
            ):
                reason = Reason.COOKIE_INVALID if cookies else Reason.COOKIE_REQUIRED
                self._count(reason, f"from {remote[0]}:{remote[1]}")
                cookie = self._cookies.make(nonce.data, address, header.spi_i, now)
                self._plain_reply(header, remote, [NotifyPayload(NotifyType.COOKIE, cookie)], bytes(8))
                return
        specs = self._responder_proposals()
        try:
            reply, suite = select_proposal(specs, sa_payload.proposals, ke_group=ke.group)
        except ProposalError:
            self._plain_reply(header, remote, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], bytes(8))
            raise _Drop(Reason.NO_PROPOSAL_CHOSEN, f"from {remote[0]}:{remote[1]}") from None
        if suite.dh.transform_id != ke.group:
            wanted = suite.dh.transform_id.to_bytes(2, "big")
            self._plain_reply(
                header, remote, [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, wanted)], bytes(8)
            )
            self._count(
                Reason.INVALID_KE_PAYLOAD,
                f"group {ke.group} from {remote[0]}:{remote[1]}, want {suite.dh.name}",
            )
            return
        our_ke = suite.dh.generate(self._rng)
        try:
            shared = our_ke.shared_secret(ke.data)
        except KeyExchangeError as exc:
            raise _Drop(Reason.BAD_KEY_EXCHANGE, exc.detail) from None
        spi_r, nonce_r = self._spi(), self._rng(NONCE_SIZE)
        keymat = IKEKeymat.derive(
            suite,
            shared_secret=shared,
            nonce_i=nonce.data,
            nonce_r=nonce_r,
            spi_i=header.spi_i,
            spi_r=spi_r,
            initiator=False,
            rng=self._rng,
        )
        hashes_notify = message.notifies(NotifyType.SIGNATURE_HASH_ALGORITHMS)
        peer_hashes: tuple[int, ...] = ()
        if hashes_notify:
            try:
                peer_hashes = decode_hash_algorithms(hashes_notify[0].data)
            except IKEParseError:
                peer_hashes = ()
        response_payloads: list[Payload] = [
            SAPayload((reply,)),
            KEPayload(suite.dh.transform_id, our_ke.public_value),
            NoncePayload(nonce_r),
        ]
        response_payloads += self._init_notifies(header.spi_i, spi_r, remote)
        certreq = next((p.trust.certreq_payload() for p in self.peers if p.trust is not None), None)
        if certreq is not None:
            response_payloads.insert(3, certreq)
        response = encode_message(
            plain(
                header.spi_i,
                spi_r,
                ExchangeType.IKE_SA_INIT,
                0,
                is_response=True,
                from_initiator=False,
                payloads=response_payloads,
            )
        )
        sa = IKESA(
            spi_i=header.spi_i,
            spi_r=spi_r,
            initiator=False,
            local=self.local,
            remote=remote,
            policy=self.peers[0].retransmit if self.peers else RetransmitPolicy(),
            created=now,
        )
        sa.install_keymat(keymat)
        init = _InitData(
            nonce_i=nonce.data, nonce_r=nonce_r, init_i=data, init_r=response, peer_hashes=peer_hashes
        )
        sa.exchange_state = _Context(None, init=init)
        datagram = self._framed(response, remote)
        sa.answered(0, datagram)
        sa.next_request_id = 0
        self.registry.add(sa)
        self.registry.remember_init(remote, header.spi_i, nonce.data, sa)
        self._arm(sa)
        self._emit(datagram, remote)

    def _responder_proposals(self) -> tuple[ProposalSpec, ...]:
        specs: list[ProposalSpec] = []
        for peer in self.peers:
            specs += [p for p in peer.proposals if p not in specs]
        if not specs:
            raise _Drop(Reason.NO_PROPOSAL_CHOSEN, "no peers configured")
        return tuple(specs)

    # ------------------------------------------------------------ IKE_SA_INIT, initiator

    def _init_response(self, header: Header, data: bytes, remote: Address, now: float) -> None:
        sa = self.registry.by_own_spi(header.spi_i)
        if sa is None or not sa.initiator or sa.state != SAState.INIT_SENT:
            raise _Drop(Reason.UNEXPECTED_RESPONSE, f"IKE_SA_INIT response for {header.spi_i.hex()}")
        if header.message_id != 0 or header.from_initiator:
            raise _Drop(Reason.INVALID_SYNTAX, "IKE_SA_INIT response with a bad message ID or I flag")
        try:
            payloads = decode_payloads(header.next_payload, data[HEADER.size :], allow_sk=False)
        except IKEParseError as exc:
            raise _Drop(_PARSE_REASONS[exc.reason], exc.detail) from None
        message = Message(header.spi_i, header.spi_r, header.exchange, 0, True, False, tuple(payloads))
        ctx = _ctx(sa)
        init, config = ctx.init, ctx.config
        assert init is not None and init.ke is not None and config is not None
        cookie = message.notifies(NotifyType.COOKIE)
        if cookie:
            if not 1 <= len(cookie[0].data) <= 64 or init.retries >= MAX_INIT_RETRIES:
                raise _Drop(Reason.COOKIE_INVALID, "unusable COOKIE or too many retries")
            init.cookie, init.retries = cookie[0].data, init.retries + 1
            sa.outstanding = None
            self._send_init_request(sa, now)
            return
        invalid_ke = message.notifies(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke:
            group_id = int.from_bytes(invalid_ke[0].data[:2], "big") if len(invalid_ke[0].data) >= 2 else 0
            offered_groups = {g.transform_id for spec in config.proposals for g in spec.dh_groups}
            if (
                group_id not in offered_groups
                or group_id not in DH_GROUPS
                or init.retries >= MAX_INIT_RETRIES
            ):
                self._fail(sa, Reason.INVALID_KE_PAYLOAD, f"peer wants group {group_id}")
                return
            init.ke, init.retries = DH_GROUPS[group_id].generate(self._rng), init.retries + 1
            sa.outstanding = None
            self._send_init_request(sa, now)
            return
        errors = [n for n in message.all(NotifyPayload) if n.is_error]
        if errors:
            # unprotected, so possibly forged (s2.21.1): stop retransmitting, but a genuine response that
            # arrives within the grace period still wins; otherwise the SA fails with this reason
            reason = (
                Reason.NO_PROPOSAL_CHOSEN
                if errors[0].notify_type == NotifyType.NO_PROPOSAL_CHOSEN
                else Reason.PEER_REFUSED
            )
            init.error = (reason, f"peer sent notify {errors[0].notify_type}")
            sa.give_up_soon(now)
            self._arm(sa)
            return
        sa_payload, ke, nonce = (
            message.first(SAPayload),
            message.first(KEPayload),
            message.first(NoncePayload),
        )
        if (
            sa_payload is None
            or ke is None
            or nonce is None
            or len(sa_payload.proposals) != 1
            or header.spi_r == bytes(8)
        ):
            raise _Drop(Reason.INVALID_SYNTAX, "IKE_SA_INIT response without SA, KE, Nonce or SPIr")
        try:
            suite = check_reply(init.offered, sa_payload.proposals[0])
        except ProposalError as exc:
            self._fail(sa, Reason.NO_PROPOSAL_CHOSEN, exc.detail)
            return
        if ke.group != suite.dh.transform_id or ke.group != init.ke.group.transform_id:
            self._fail(sa, Reason.INVALID_KE_PAYLOAD, f"KE group {ke.group} does not match the reply")
            return
        try:
            shared = init.ke.shared_secret(ke.data)
        except KeyExchangeError as exc:
            self._fail(sa, Reason.BAD_KEY_EXCHANGE, exc.detail)
            return
        sa.outstanding = None
        sa.spi_r = header.spi_r
        sa.install_keymat(
            IKEKeymat.derive(
                suite,
                shared_secret=shared,
                nonce_i=init.nonce_i,
                nonce_r=nonce.data,
                spi_i=sa.spi_i,
                spi_r=sa.spi_r,
                initiator=True,
                rng=self._rng,
            )
        )
        init.nonce_r, init.init_r, init.ke = nonce.data, data, None
        init.childless_ok = bool(message.notifies(NotifyType.CHILDLESS_IKEV2_SUPPORTED))
        hashes_notify = message.notifies(NotifyType.SIGNATURE_HASH_ALGORITHMS)
        if hashes_notify:
            try:
                init.peer_hashes = decode_hash_algorithms(hashes_notify[0].data)
            except IKEParseError:
                init.peer_hashes = ()
        if not init.childless_ok:  # RFC 6023: a childless IKE_AUTH needs the responder's consent
            self._fail(sa, Reason.PEER_REFUSED, "peer does not support childless IKE SAs")
            return
        self._send_auth_request(sa, config, init, now)

    # ------------------------------------------------------------ IKE_AUTH

    def _send_auth_request(self, sa: IKESA, config: PeerConfig, init: _InitData, now: float) -> None:
        keymat = sa.keymat
        assert keymat is not None
        idi = config.local_id.to_idi()
        credential: PreSharedKey | Signer = config.psk if config.psk is not None else _signer(config)
        try:
            auth = create_auth(
                keymat,
                credential,
                message=init.init_i,
                nonce=init.nonce_r,
                id_payload=idi,
                peer_hashes=init.peer_hashes or None,
            )
        except AuthenticationError as exc:
            self._fail(sa, Reason.AUTHENTICATION_FAILED, exc.detail)
            return
        payloads: list[Payload] = [idi]
        if config.psk is None:
            payloads += cert_payloads(config.certificates)
            if config.trust is not None:
                payloads.append(config.trust.certreq_payload())
        if not config.remote_id.is_any:
            payloads.append(config.remote_id.to_idr())
        payloads.append(auth)
        if not self._others_with(sa):  # s2.4: nothing else with this peer, e.g. after our restart
            payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
        sa.state = SAState.AUTH_SENT
        self._request(sa, ExchangeType.IKE_AUTH, payloads, now)

    def _auth_request(self, sa: IKESA, header: Header, message: Message, now: float) -> None:
        ctx = _ctx(sa)
        init = ctx.init
        assert init is not None
        idi, auth = message.first(IDiPayload), message.first(AuthPayload)
        if idi is None or auth is None:
            self._count(Reason.INVALID_SYNTAX, f"{spis_text(sa.spis)} IKE_AUTH without IDi or AUTH")
            self._respond(sa, header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
            self._abandon(sa, Reason.INVALID_SYNTAX)
            return
        peer_id = Identity.from_payload(idi)
        config = next((p for p in self.peers if p.remote_id.matches(peer_id)), None)
        try:
            if config is None:
                raise AuthenticationError(AuthReason.ID_MISMATCH, f"no peer configured for {peer_id}")
            self._verify_peer(sa, config, message, peer_id, idi, auth, init.init_i, init.nonce_r)
            idr = config.local_id.to_idr()
            credential: PreSharedKey | Signer = config.psk if config.psk is not None else _signer(config)
            our_auth = create_auth(
                sa.keymat_or_fail(),
                credential,
                message=init.init_r,
                nonce=init.nonce_i,
                id_payload=idr,
                peer_hashes=init.peer_hashes or None,
            )
        except AuthenticationError as exc:
            self._count(
                Reason.AUTHENTICATION_FAILED, f"{spis_text(sa.spis)} {exc.reason.value}: {exc.detail}"
            )
            self._respond(sa, header, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)])
            self._remove(sa, SAState.FAILED)
            self._events.append(Failed(sa.spis, Reason.AUTHENTICATION_FAILED.value, exc.reason.value))
            return
        payloads: list[Payload] = [idr]
        if config.psk is None:
            payloads += cert_payloads(config.certificates)
        payloads.append(our_auth)
        wants_child = any(
            isinstance(p, SAPayload)
            or (isinstance(p, OpaquePayload) and p.kind in (PayloadType.TSI, PayloadType.TSR))
            for p in message.payloads
        )
        if wants_child:  # authenticate, refuse only the Child SA (s2.21.2)
            payloads.append(NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN))
            self._count(Reason.CHILD_SA_REFUSED, spis_text(sa.spis))
        self._respond(sa, header, payloads)
        ctx.config, ctx.init = config, None
        self._established(sa, peer_id, now)
        if message.notifies(NotifyType.INITIAL_CONTACT):
            self._initial_contact(sa)

    def _others_with(self, sa: IKESA) -> list[IKESA]:
        """Our other IKE SAs (in any live state) with the host `sa` talks to."""
        host = ipaddress.ip_address(sa.remote[0])
        return [
            other
            for other in self.registry
            if other is not sa
            and other.state not in (SAState.FAILED, SAState.DELETED)
            and ipaddress.ip_address(other.remote[0]) == host
        ]

    def _initial_contact(self, sa: IKESA) -> None:
        """s2.4: the peer says this is its only IKE SA with us (it restarted), so its identity's older SAs
        from that address and port are dead: forget them without a Delete, which the peer could not decrypt
        anyway. (Same port too: two endpoints of one host that share an identity stay independent.)"""
        for other in self._others_with(sa):
            live = other.state in (SAState.ESTABLISHED, SAState.REKEYED, SAState.DELETING)
            if live and other.remote[1] == sa.remote[1] and other.peer_id == sa.peer_id:
                log.info("ike: %s replaces %s (INITIAL_CONTACT)", spis_text(sa.spis), spis_text(other.spis))
                self._remove(other, SAState.DELETED)
                self._events.append(Deleted(other.spis, "initial-contact"))

    def _auth_response(self, sa: IKESA, message: Message, now: float) -> None:
        ctx = _ctx(sa)
        init, config = ctx.init, ctx.config
        assert init is not None and config is not None
        fatal = [n for n in message.all(NotifyPayload) if n.notify_type in _FATAL_IN_AUTH_RESPONSE]
        if fatal:
            detail = NotifyType(fatal[0].notify_type).name
            reason = (
                Reason.AUTHENTICATION_FAILED
                if fatal[0].notify_type == NotifyType.AUTHENTICATION_FAILED
                else Reason.PEER_REFUSED
            )
            self._fail(sa, reason, f"peer answered {detail}")
            return
        idr, auth = message.first(IDrPayload), message.first(AuthPayload)
        if idr is None or auth is None:
            self._fail(sa, Reason.INVALID_SYNTAX, "IKE_AUTH response without IDr or AUTH")
            return
        peer_id = Identity.from_payload(idr)
        try:
            if not config.remote_id.matches(peer_id):
                raise AuthenticationError(
                    AuthReason.ID_MISMATCH, f"peer is {peer_id}, not {config.remote_id}"
                )
            self._verify_peer(sa, config, message, peer_id, idr, auth, init.init_r, init.nonce_i)
        except AuthenticationError as exc:
            # the responder already considers the SA up: tell it (s2.21.2), then forget the SA
            self._request(
                sa, ExchangeType.INFORMATIONAL, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], now
            )
            self._fail(sa, Reason.AUTHENTICATION_FAILED, f"{exc.reason.value}: {exc.detail}")
            return
        if message.first(SAPayload) is not None:
            self._fail(sa, Reason.PEER_REFUSED, "peer created a Child SA in a childless IKE_AUTH")
            return
        ctx.init = None
        self._established(sa, peer_id, now)

    def _verify_peer(
        self,
        sa: IKESA,
        config: PeerConfig,
        message: Message,
        peer_id: Identity,
        id_payload: IDiPayload | IDrPayload,
        auth: AuthPayload,
        peer_init: bytes,
        our_nonce: bytes,
    ) -> None:
        keymat = sa.keymat_or_fail()
        if config.psk is not None:
            verify_auth(keymat, config.psk, auth, message=peer_init, nonce=our_nonce, id_payload=id_payload)
            return
        assert config.trust is not None
        try:
            certs = certificates_from_payloads(message.all(CertPayload))
            public_key = check_peer_certificate(config.trust, certs, peer_id, now=self._wall_clock())
            verify_auth(keymat, public_key, auth, message=peer_init, nonce=our_nonce, id_payload=id_payload)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # odd keys/certificates the peer sent
            raise AuthenticationError(AuthReason.BAD_CERTIFICATE, type(exc).__name__) from None

    def _established(self, sa: IKESA, peer_id: Identity, now: float) -> None:
        sa.state = SAState.ESTABLISHED
        self.registry.promoted(sa)
        sa.peer_id = str(peer_id)
        sa.established_at = now
        self._events.append(Established(sa.spis, sa.algorithms, sa.peer_id, sa.initiator))
        old = _ctx(sa).replaces
        if old is not None and old in self.registry and old.state == SAState.ESTABLISHED:
            _ctx(old).reauthenticated = True
            if old.busy:  # its request finishes first; the peer may delete it, else it expires
                self._superseded(old, now)
            else:
                self.delete(old, now)

    def _reauthenticate(self, sa: IKESA, now: float) -> bool:
        """s4: a peer that cannot rekey IKE SAs (NO_ADDITIONAL_SAS) gets a brand-new IKE SA instead (as
        strongSwan does); the old one is deleted once the new one is up. False if we cannot start one."""
        config = _ctx(sa).config
        if config is None or len(self.registry) >= self.limits.max_sas:
            return False
        new = self.initiate(sa.remote, config, now)
        _ctx(new).replaces = sa
        return True

    # ------------------------------------------------------------ dispatch after IKE_SA_INIT

    def _on_request(self, sa: IKESA, header: Header, message: Message, now: float) -> None:
        if (
            header.exchange == ExchangeType.IKE_AUTH
            and sa.state == SAState.HALF_OPEN
            and header.message_id == 1
        ):
            self._auth_request(sa, header, message, now)
        elif sa.state not in (SAState.ESTABLISHED, SAState.REKEYED, SAState.DELETING):
            self._count(
                Reason.WRONG_EXCHANGE, f"{spis_text(sa.spis)} exchange {header.exchange} in {sa.state.value}"
            )
            self._respond(sa, header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
            self._abandon(sa, Reason.INVALID_SYNTAX)
        elif header.exchange == ExchangeType.INFORMATIONAL:
            self._informational_request(sa, header, message)
        elif header.exchange == ExchangeType.CREATE_CHILD_SA:
            self._create_child_request(sa, header, message, now)
        else:
            self._count(Reason.WRONG_EXCHANGE, f"{spis_text(sa.spis)} exchange {header.exchange}")
            self._respond(sa, header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
            self._abandon(sa, Reason.INVALID_SYNTAX)

    def _on_response(self, sa: IKESA, header: Header, message: Message | None, now: float) -> None:
        if message is None:
            return
        if header.exchange == ExchangeType.IKE_AUTH and sa.state == SAState.AUTH_SENT:
            self._auth_response(sa, message, now)
        elif header.exchange == ExchangeType.CREATE_CHILD_SA and _ctx(sa).rekey is not None:
            self._rekey_response(sa, message, now)
        elif header.exchange == ExchangeType.INFORMATIONAL:
            if sa.state == SAState.DELETING:
                ctx = _ctx(sa)
                reason = (
                    "redundant"
                    if ctx.redundant
                    else "reauthenticated"
                    if ctx.reauthenticated
                    else "rekeyed"
                    if ctx.successor is not None
                    else "deleted"
                )
                self._remove(sa, SAState.DELETED)
                self._events.append(Deleted(sa.spis, reason))
        else:
            self._count(Reason.WRONG_EXCHANGE, f"{spis_text(sa.spis)} response to exchange {header.exchange}")

    # ------------------------------------------------------------ INFORMATIONAL

    def _informational_request(self, sa: IKESA, header: Header, message: Message) -> None:
        deletes_ike = any(d.protocol == PROTOCOL_IKE for d in message.all(DeletePayload))
        self._respond(sa, header, [])  # always answer; an empty response is fine (s1.4)
        if deletes_ike:
            ctx = _ctx(sa)
            collision = ctx.collision
            if ctx.rekey is not None and collision is not None and collision.sa in self.registry:
                # the peer missed the collision: it refuses (or never saw) our rekey and keeps its own
                ctx.rekey = ctx.collision = None
                collision.sa.state = SAState.ESTABLISHED
                self._events.append(Rekeyed(sa.spis, collision.sa.spis))
                reason = "rekeyed"
            elif sa.state == SAState.REKEYED:
                reason = _superseded_reason(sa)
            else:
                reason = Reason.DELETED_BY_PEER.value
            self._remove(sa, SAState.DELETED)
            self._events.append(Deleted(sa.spis, reason))
            return
        for notify in message.all(NotifyPayload):
            if notify.notify_type in (NotifyType.AUTHENTICATION_FAILED, NotifyType.INVALID_SYNTAX):
                self._count(Reason.PEER_REFUSED, f"{spis_text(sa.spis)} notify {notify.notify_type}")
                self._remove(sa, SAState.DELETED)
                self._events.append(Deleted(sa.spis, Reason.PEER_REFUSED.value))
                return

    # ------------------------------------------------------------ CREATE_CHILD_SA (IKE SA rekey)

    def _create_child_request(self, sa: IKESA, header: Header, message: Message, now: float) -> None:
        sa_payload, ke, nonce = (
            message.first(SAPayload),
            message.first(KEPayload),
            message.first(NoncePayload),
        )
        is_ike_rekey = (
            sa_payload is not None
            and sa_payload.proposals
            and all(p.protocol == PROTOCOL_IKE and len(p.spi) == 8 for p in sa_payload.proposals)
        )
        if not is_ike_rekey or sa_payload is None:
            self._count(Reason.CHILD_SA_REFUSED, spis_text(sa.spis))
            self._respond(sa, header, [NotifyPayload(NotifyType.NO_ADDITIONAL_SAS)])
            return
        ctx = _ctx(sa)
        if sa.state != SAState.ESTABLISHED or ctx.collision is not None:  # e.g. deleting it (s2.25.2)
            self._count(Reason.REKEY_REFUSED, f"{spis_text(sa.spis)} rekey request in {sa.state.value}")
            self._respond(sa, header, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)])
            return
        if ke is None or nonce is None:
            self._count(Reason.INVALID_SYNTAX, f"{spis_text(sa.spis)} rekey without KE or Nonce")
            self._respond(sa, header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
            self._abandon(sa, Reason.INVALID_SYNTAX)
            return
        keymat = sa.keymat_or_fail()
        current = keymat.suite
        # keep the PRF: strongSwan and RFC 7296 disagree on the prf+ PRF if it changed (ikev2.md s9)
        config = ctx.config
        own_specs = config.proposals if config is not None else self._responder_proposals()
        specs = tuple(
            ProposalSpec(s.encrs, s.integs, (current.prf,), s.dh_groups)
            for s in own_specs
            if current.prf in s.prfs
        )
        new_spi = self._spi()
        try:
            reply, suite = select_proposal(specs, sa_payload.proposals, ke_group=ke.group, spi=new_spi)
        except ProposalError:
            self._count(Reason.NO_PROPOSAL_CHOSEN, f"{spis_text(sa.spis)} rekey")
            self._respond(sa, header, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)])
            return
        if suite.dh.transform_id != ke.group:
            self._count(Reason.INVALID_KE_PAYLOAD, f"{spis_text(sa.spis)} rekey group {ke.group}")
            self._respond(
                sa,
                header,
                [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, suite.dh.transform_id.to_bytes(2, "big"))],
            )
            return
        our_ke = suite.dh.generate(self._rng)
        try:
            shared = our_ke.shared_secret(ke.data)
        except KeyExchangeError as exc:
            self._count(Reason.BAD_KEY_EXCHANGE, f"{spis_text(sa.spis)} {exc.detail}")
            self._respond(sa, header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
            return
        peer_spi = next(p.spi for p in sa_payload.proposals if p.number == reply.number)
        nonce_r = self._rng(NONCE_SIZE)
        new_keymat = keymat.derive_rekeyed(
            suite,
            shared_secret=shared,
            nonce_i=nonce.data,
            nonce_r=nonce_r,
            spi_i=peer_spi,
            spi_r=new_spi,
            initiator=False,
        )
        self._respond(
            sa,
            header,
            [
                SAPayload((reply,)),
                NoncePayload(nonce_r),
                KEPayload(suite.dh.transform_id, our_ke.public_value),
            ],
        )
        if ctx.rekey is not None:  # both sides rekey at once: settled when our own response arrives
            pending = self._successor(
                sa,
                spi_i=peer_spi,
                spi_r=new_spi,
                initiator=False,
                keymat=new_keymat,
                now=now,
                state=SAState.REKEYED,
            )
            _ctx(pending).expires = now + self.limits.superseded_timeout
            self._arm(pending)
            ctx.collision = _Collision(pending, min(nonce.data, nonce_r))
            return
        new = self._successor(sa, spi_i=peer_spi, spi_r=new_spi, initiator=False, keymat=new_keymat, now=now)
        self._superseded(sa, now)  # the peer deletes the old SA next (s1.3.2)
        self._events.append(Rekeyed(sa.spis, new.spis))

    def _superseded(self, sa: IKESA, now: float) -> None:
        """`sa` was replaced; its Delete is the peer's to send, and if that never comes we drop it."""
        sa.state = SAState.REKEYED
        _ctx(sa).expires = now + self.limits.superseded_timeout
        self._arm(sa)

    def _successor(
        self,
        old: IKESA,
        *,
        spi_i: bytes,
        spi_r: bytes,
        initiator: bool,
        keymat: IKEKeymat,
        now: float,
        state: SAState = SAState.ESTABLISHED,
    ) -> IKESA:
        new = IKESA(
            spi_i=spi_i,
            spi_r=spi_r,
            initiator=initiator,
            local=old.local,
            remote=old.remote,
            policy=old.policy,
            created=now,
        )
        new.install_keymat(keymat)
        new.state = state
        new.peer_id = old.peer_id
        new.established_at = now
        new.exchange_state = _Context(_ctx(old).config)
        self.registry.add(new)
        return new

    def _rekey_response(self, sa: IKESA, message: Message, now: float) -> None:
        ctx = _ctx(sa)
        rekey = ctx.rekey
        assert rekey is not None
        keymat = sa.keymat_or_fail()
        collision = ctx.collision
        if collision is not None and collision.sa not in self.registry:
            collision = ctx.collision = None  # the peer already deleted the SA it created: it lost
        invalid_ke = message.notifies(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke and len(invalid_ke[0].data) >= 2 and rekey.retries < MAX_INIT_RETRIES:
            group_id = int.from_bytes(invalid_ke[0].data[:2], "big")
            if group_id in DH_GROUPS:
                rekey.ke, rekey.retries = DH_GROUPS[group_id].generate(self._rng), rekey.retries + 1
                self._send_rekey_request(sa, now)
                return
        errors = [n for n in message.all(NotifyPayload) if n.is_error]
        sa_payload, ke, nonce = (
            message.first(SAPayload),
            message.first(KEPayload),
            message.first(NoncePayload),
        )
        if errors or sa_payload is None or ke is None or nonce is None or len(sa_payload.proposals) != 1:
            ctx.rekey = None
            if collision is not None:  # the peer missed the collision and refused ours: keep its SA
                self._adopt(sa, collision.sa, now)
                return
            detail = f"notify {errors[0].notify_type}" if errors else "malformed response"
            self._count(Reason.PEER_REFUSED, f"{spis_text(sa.spis)} rekey: {detail}")
            if any(n.notify_type == NotifyType.NO_ADDITIONAL_SAS for n in errors):
                detail += "; reauthenticating" if self._reauthenticate(sa, now) else ""
            self._events.append(Failed(sa.spis, "rekey-refused", detail))
            return
        suite_now = keymat.suite
        offered = (
            CipherSuite(suite_now.encr, suite_now.prf, suite_now.integ, rekey.ke.group).to_proposal(
                1, rekey.new_spi
            ),
        )
        reply = sa_payload.proposals[0]
        try:
            suite = check_reply(
                offered, Proposal(reply.number, reply.protocol, rekey.new_spi, reply.transforms)
            )
            if len(reply.spi) != 8 or not any(reply.spi) or ke.group != rekey.ke.group.transform_id:
                raise ProposalError(ProposalReason.BAD_REPLY, "rekey reply SPI or KE group")
            shared = rekey.ke.shared_secret(ke.data)
        except (ProposalError, KeyExchangeError) as exc:
            ctx.rekey = None
            if collision is not None:
                self._adopt(sa, collision.sa, now)
                return
            self._count(Reason.PEER_REFUSED, f"{spis_text(sa.spis)} rekey: {exc.detail}")
            self._events.append(Failed(sa.spis, "rekey-refused", exc.detail))
            return
        new_keymat = keymat.derive_rekeyed(
            suite,
            shared_secret=shared,
            nonce_i=rekey.nonce,
            nonce_r=nonce.data,
            spi_i=rekey.new_spi,
            spi_r=reply.spi,
            initiator=True,
        )
        new = self._successor(
            sa, spi_i=rekey.new_spi, spi_r=reply.spi, initiator=True, keymat=new_keymat, now=now
        )
        ctx.rekey = None
        if collision is not None:
            ctx.collision = None
            if min(rekey.nonce, nonce.data) < collision.lower_nonce:
                # s2.8.2: our exchange holds the lowest nonce, so the SA we created goes and theirs stays
                new_ctx = _ctx(new)
                new_ctx.redundant = True
                new.state = SAState.DELETING
                self._request(new, ExchangeType.INFORMATIONAL, [DeletePayload(PROTOCOL_IKE)], now)
                self._adopt(sa, collision.sa, now)
                return
            loser = _ctx(collision.sa)  # the peer deletes the SA it created; we delete the old one
            loser.redundant = True
            self._arm(collision.sa)
        ctx.successor = new
        self._events.append(Rekeyed(sa.spis, new.spis))
        sa.state = SAState.DELETING  # the Delete is the last request on the old SA (s2.8)
        self._request(sa, ExchangeType.INFORMATIONAL, [DeletePayload(PROTOCOL_IKE)], now)

    def _adopt(self, old: IKESA, new: IKESA, now: float) -> None:
        """The SA the peer's rekey created replaces `old`; the peer deletes `old` (s2.8.2)."""
        new.state = SAState.ESTABLISHED
        _ctx(new).expires = None
        self._superseded(old, now)
        self._events.append(Rekeyed(old.spis, new.spis))


def _superseded_reason(sa: IKESA) -> str:
    ctx = _ctx(sa)
    return "redundant" if ctx.redundant else "reauthenticated" if ctx.reauthenticated else "rekeyed"


def _signer(config: PeerConfig) -> Signer:
    if config.signer is None:
        raise ValueError("certificate authentication without a private key")
    return config.signer


__all__ = [
    "Address",
    "Deleted",
    "Established",
    "Event",
    "Failed",
    "IKEEngine",
    "Limits",
    "PeerConfig",
    "Rekeyed",
    "SPIs",
]
