"""The IKE SA object: state, SPIs, message-ID windows (window 1), retransmission schedule, stored response.

Modelled on strongSwan's ike_sa + task_manager: the SA knows nothing about payloads, only about which
message IDs it may send and accept, which request is outstanding (kept as exact octets so a retransmission
is bit-identical, RFC 7296 s2.1) and the last response (re-sent when the peer retransmits its request).
Time is always passed in; the adapter owns the clock and calls `next_timer()` / the engine's timer hook.

repr/str show SPIs, role, state and algorithm names only. The keymat is held privately; the only thing
derived from it that leaves the SA is `ippm_secret()` (RFC 7717), which the binding layer asks for.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from nf.ike.keymat import IKEKeymat
from nf.twamp.keysource import SharedSecret

Address = tuple[str, int]
SPIs = tuple[bytes, bytes]


class SAState(enum.Enum):
    INIT_SENT = "init-sent"  # initiator: IKE_SA_INIT request out
    AUTH_SENT = "auth-sent"  # initiator: IKE_AUTH request out
    HALF_OPEN = "half-open"  # responder: IKE_SA_INIT answered, waiting for IKE_AUTH
    ESTABLISHED = "established"
    REKEYED = "rekeyed"  # superseded by a new SA, only the Delete is left to run on it
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"


def spis_text(spis: SPIs) -> str:
    return f"{spis[0].hex()}_i/{spis[1].hex()}_r"


# --- events out of the SA layer (immutable, secret-free) ------------------------------------------


@dataclass(frozen=True)
class Established:
    spis: SPIs
    algorithms: str
    peer_id: str
    initiator: bool


@dataclass(frozen=True)
class Rekeyed:
    old_spis: SPIs
    new_spis: SPIs


@dataclass(frozen=True)
class Deleted:
    spis: SPIs
    reason: str


@dataclass(frozen=True)
class Failed:
    spis: SPIs
    reason: str
    detail: str = ""


Event = Established | Rekeyed | Deleted | Failed


# --- retransmission -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetransmitPolicy:
    """strongSwan's defaults (charon.opt): 4 s, factor 1.8, 5 retransmissions, give up ~165 s after start.

    An error notify in an IKE_SA_INIT response is unauthenticated and could be forged (RFC 7296 s2.21.1), so
    the initiator stops retransmitting but keeps listening `error_grace` seconds for a real answer."""

    timeout: float = 4.0
    base: float = 1.8
    tries: int = 5
    error_grace: float = 1.0  # after an unprotected error notify, wait this long for a genuine answer

    def delay(self, attempt: int) -> float:
        """Wait after send number `attempt` (0 = first transmission) before the next one / giving up."""
        return float(self.timeout * self.base**attempt)


@dataclass
class Outstanding:
    """Our request in flight: exact datagram octets, its message ID and when to act next."""

    message_id: int
    exchange: int
    datagram: bytes = field(repr=False)
    next_at: float
    attempt: int = 0


class IKESA:
    """One IKE SA (either role). Mutable protocol state; no I/O, no clock, no randomness."""

    def __init__(
        self,
        *,
        spi_i: bytes,
        spi_r: bytes,
        initiator: bool,
        local: Address,
        remote: Address,
        policy: RetransmitPolicy,
        created: float,
    ) -> None:
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.initiator = initiator  # we are the original initiator (I flag, key direction)
        self.local = local
        self.remote = remote
        self.policy = policy
        self.created = created
        self.state = SAState.INIT_SENT if initiator else SAState.HALF_OPEN
        self.algorithms = ""
        self.peer_id = ""
        self._keymat: IKEKeymat | None = None
        # message-ID windows (s2.2/s2.3): our next request ID, the peer's next expected request ID
        self.next_request_id = 0
        self.expected_peer_id = 0
        self.outstanding: Outstanding | None = None
        self.last_response: tuple[int, bytes] | None = None  # (message ID, datagram) for re-sending
        self.established_at: float | None = None
        self.last_heard = created
        self.exchange_state: object | None = None  # the running exchange's private data (exchanges.py)

    # --- identity and keys

    @property
    def spis(self) -> SPIs:
        return (self.spi_i, self.spi_r)

    @property
    def own_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def keymat(self) -> IKEKeymat | None:
        """The SA's keymat (holds SK_* and offers operations only; it has no key accessor)."""
        return self._keymat

    def keymat_or_fail(self) -> IKEKeymat:
        if self._keymat is None:
            raise RuntimeError(f"IKE SA {spis_text(self.spis)} has no keys yet")
        return self._keymat

    def install_keymat(self, keymat: IKEKeymat) -> None:
        self._keymat = keymat
        self.algorithms = keymat.suite.name

    def ippm_secret(self) -> SharedSecret:
        """prf(SK_d, "IPPM") for RFC 7717; only an established SA has it."""
        if self._keymat is None or self.state not in (SAState.ESTABLISHED, SAState.REKEYED, SAState.DELETING):
            raise LookupError(f"IKE SA {spis_text(self.spis)} has no keys")
        return self._keymat.ippm_secret()

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return (
            f"IKESA({spis_text(self.spis)}, {role}, {self.state.value}, "
            f"algorithms={self.algorithms or '-'}, peer={self.peer_id or '-'})"
        )

    __str__ = __repr__

    # --- message-ID windows

    def take_request_id(self) -> int:
        mid = self.next_request_id
        if mid >= 0xFFFFFFFF:
            raise OverflowError("message IDs exhausted: rekey the IKE SA")
        self.next_request_id += 1
        return mid

    @property
    def busy(self) -> bool:
        """Window 1: one outstanding request at a time."""
        return self.outstanding is not None

    def sent_request(self, message_id: int, exchange: int, datagram: bytes, now: float) -> None:
        self.outstanding = Outstanding(message_id, exchange, datagram, now + self.policy.delay(0))

    def response_arrived(self, message_id: int) -> bool:
        """True (and the request is cleared) when this response answers our outstanding request."""
        if self.outstanding is None or self.outstanding.message_id != message_id:
            return False
        self.outstanding = None
        return True

    def classify_request(self, message_id: int) -> str:
        """'new', 'retransmit' (answer with the stored response) or 'drop' (s2.1/s2.3)."""
        if message_id == self.expected_peer_id:
            return "new"
        if self.last_response is not None and message_id == self.last_response[0]:
            return "retransmit"
        return "drop"

    def answered(self, message_id: int, datagram: bytes) -> None:
        self.last_response = (message_id, datagram)
        self.expected_peer_id = message_id + 1

    # --- timers

    def next_timer(self) -> float | None:
        return self.outstanding.next_at if self.outstanding is not None else None

    def give_up_soon(self, now: float) -> None:
        """No more retransmissions: the request times out `policy.error_grace` from now at the latest."""
        out = self.outstanding
        if out is not None:
            out.attempt = self.policy.tries
            out.next_at = min(out.next_at, now + self.policy.error_grace)

    def retransmit_due(self, now: float) -> bytes | bool | None:
        """The datagram to re-send now, None if nothing is due, or False when the schedule is exhausted."""
        out = self.outstanding
        if out is None or now < out.next_at:
            return None
        if out.attempt >= self.policy.tries:
            return False
        out.attempt += 1
        out.next_at = now + self.policy.delay(out.attempt)
        return out.datagram


class SARegistry:
    """All IKE SAs of one endpoint, found by our own SPI (what a received header names for us) and by the
    (SPIi, SPIr) pair, which is the RFC 7717 Key ID the TWAMP binding looks up."""

    def __init__(self) -> None:
        self._by_own_spi: dict[bytes, IKESA] = {}
        self._half_open_by_peer: dict[tuple[Address, bytes, bytes], IKESA] = {}
        self._init_key: dict[bytes, tuple[Address, bytes, bytes]] = {}  # own SPI -> _half_open_by_peer key
        self._half_open: set[bytes] = set()  # own SPIs; counted on every IKE_SA_INIT, so kept O(1)

    def __repr__(self) -> str:
        return f"SARegistry(sas={len(self._by_own_spi)}, half_open={self.half_open_count})"

    def __len__(self) -> int:
        return len(self._by_own_spi)

    def __iter__(self) -> Iterator[IKESA]:
        """A snapshot, so callers may remove SAs while iterating."""
        return iter(list(self._by_own_spi.values()))

    def add(self, sa: IKESA) -> None:
        self._by_own_spi[sa.own_spi] = sa
        if sa.state == SAState.HALF_OPEN:
            self._half_open.add(sa.own_spi)

    def promoted(self, sa: IKESA) -> None:
        """A half-open responder SA finished IKE_AUTH; its INIT index stays, so late copies are ignored."""
        self._half_open.discard(sa.own_spi)

    def _forget_init(self, sa: IKESA) -> None:
        key = self._init_key.pop(sa.own_spi, None)
        if key is not None and self._half_open_by_peer.get(key) is sa:
            del self._half_open_by_peer[key]

    def __contains__(self, sa: object) -> bool:
        return isinstance(sa, IKESA) and self._by_own_spi.get(sa.own_spi) is sa

    def remember_init(self, remote: Address, spi_i: bytes, nonce_i: bytes, sa: IKESA) -> None:
        """Responder: find the half-open SA again when its IKE_SA_INIT request is retransmitted."""
        key = (remote, spi_i, nonce_i)
        self._half_open_by_peer[key] = sa
        self._init_key[sa.own_spi] = key

    def by_init(self, remote: Address, spi_i: bytes, nonce_i: bytes) -> IKESA | None:
        return self._half_open_by_peer.get((remote, spi_i, nonce_i))

    def by_own_spi(self, spi: bytes) -> IKESA | None:
        return self._by_own_spi.get(spi)

    def lookup(self, spi_i: bytes, spi_r: bytes) -> IKESA | None:
        """The SA with exactly these SPIs (RFC 7717 Key ID = SPIi | SPIr), if we have it."""
        for own in (spi_i, spi_r):
            sa = self._by_own_spi.get(own)
            if sa is not None and sa.spis == (spi_i, spi_r):
                return sa
        return None

    def remove(self, sa: IKESA) -> None:
        if self._by_own_spi.get(sa.own_spi) is sa:
            del self._by_own_spi[sa.own_spi]
            self._half_open.discard(sa.own_spi)
            self._forget_init(sa)

    @property
    def half_open_count(self) -> int:
        return len(self._half_open)
