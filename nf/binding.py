"""RFC 7717: TWAMP-Control keyed by IKEv2 SAs (Modes bit 7, Key ID = SPIi | SPIr, secret = prf(SK_d, "IPPM")).

The one place that asks an IKE SA for its IPPM secret. The TWAMP machines only see KeySources, so this module
turns IKE SAs into KeySources on both ends (docs/rfc7717.md maps every RFC requirement to code and tests):

- Server: ServerBinding is the ServerConfig.ikev2_key_source. It reads SPIi/SPIr from Key ID octets 0-15
  (the rest is ignored, R16), finds the SA by SPIs alone (no Child SA or SAD entry, Q10), and serves its
  secret only when the SA is established and its authenticated peer identity is on the allow-list. Anything
  else is "unknown SA": the machine answers Server-Start Accept=6 and the binding counts the rejection,
  logs it rate-limited and tells its observers (UnknownSA, the future NETCONF notification) (R17/R18).
- Client: ClientBinding follows the SAs of one configured IKE peer through Established/Rekeyed/Deleted
  events, so a new control connection always names the current SA (after a rekey: the new SPIs). Without an
  SA, its NoSAPolicy decides: initiate and wait up to a timeout (R9a, Q9), fall back to key-chain modes (R9b,
  Q7) or fail. `keying()` returns an SAKeying: a snapshot of SPIs and secret taken before the connection is
  set up, which the connection keeps even if the SA is later rekeyed or deleted (R10, Q11).

The secret is used as the PBKDF2 passphrase exactly like a pre-shared secret (Q1/Q2): SharedSecret carries
all octets of the prf output and never reveals them; nothing here logs or prints it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from nf.ike.errors import IKEError
from nf.ike.exchanges import PeerConfig
from nf.ike.identities import Identity
from nf.ike.sa import IKESA, Address, Deleted, Established, Event, Failed, Rekeyed, SAState, spis_text
from nf.net.control_listener import CONTROL_CONNECTION
from nf.net.rate_limited_log import RateLimitedLog
from nf.twamp.control_client import NO_FEATURES, ClientConfig
from nf.twamp.keysource import KeySource, SharedSecret
from nf.twamp.modes import Modes

log = logging.getLogger("nf.binding")

SPI_SIZE = 8
KEY_ID_SPIS = 2 * SPI_SIZE  # RFC 7717 s5.3: Key ID octets 0-7 SPIi, 8-15 SPIr, 16-79 zero
SPIs = tuple[bytes, bytes]


def key_id_of(spis: SPIs) -> bytes:
    """The 16 significant Key ID octets: SPIi | SPIr as in the IKE header (Q4: IKE roles, not TWAMP's)."""
    spi_i, spi_r = spis
    if len(spi_i) != SPI_SIZE or len(spi_r) != SPI_SIZE:
        raise ValueError("IKE SPIs are 8 octets")
    return spi_i + spi_r


def spis_of(key_id: bytes) -> SPIs:
    """SPIi, SPIr from Key ID octets 0-15; octets 16-79 are ignored (R16)."""
    if len(key_id) < KEY_ID_SPIS:
        raise ValueError(f"Key ID of {len(key_id)} octets cannot hold SPIi | SPIr")
    return key_id[:SPI_SIZE], key_id[SPI_SIZE:KEY_ID_SPIS]


class SAStore(Protocol):
    """What the server side needs: SAs by SPIs (IKEEndpoint, or the sans-IO IKEEngine itself)."""

    def lookup(self, spi_i: bytes, spi_r: bytes) -> IKESA | None: ...


class SAInitiator(SAStore, Protocol):
    """What the client side needs: SA events and initiation (nf.net.ike_endpoint.IKEEndpoint)."""

    def add_listener(self, callback: Callable[[Event], None]) -> None: ...

    async def initiate(
        self, remote: Address, config: PeerConfig, timeout: float = 60.0
    ) -> Established | Failed: ...


def _ippm_secret(sa: IKESA) -> SharedSecret | None:
    """prf(SK_d, "IPPM") of an established SA (R5-R7: the IKE SA's own PRF and SK_d), else None."""
    if sa.state is not SAState.ESTABLISHED:
        return None
    try:
        return sa.ippm_secret()
    except LookupError:
        return None


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return a == b


def _identity_allowed(patterns: Sequence[Identity], peer_id: str) -> bool:
    """Whether an SA's authenticated peer identity (IKESA.peer_id, its text form) matches a pattern.

    Fails closed: an identity text that does not parse back matches nothing.
    """
    if not peer_id:
        return False
    try:
        received = Identity.parse(peer_id)
    except (ValueError, IKEError):
        return False
    return any(pattern.matches(received) for pattern in patterns)


# ------------------------------------------------------------------------------------------------ server


class UnknownSAReason(enum.Enum):
    """Why a Key ID named no usable SA; each is counted, and each is answered with Accept=6."""

    NO_SA = "no-sa"  # no IKE SA with these SPIs
    NOT_ESTABLISHED = "not-established"  # half-open, rekeyed (superseded), deleting or deleted
    PEER_NOT_ALLOWED = "peer-not-allowed"  # the SA's authenticated peer is not on the allow-list
    BAD_KEY_ID = "bad-key-id"  # fewer than 16 octets


@dataclass(frozen=True, slots=True)
class UnknownSA:
    """A Set-Up-Response named SPIs we will not key from (RFC 7717 s5.3: MUST be logged for operations)."""

    spi_i: bytes
    spi_r: bytes
    reason: UnknownSAReason
    peer_id: str = ""  # the SA's peer identity when the SA exists but is not allowed
    # the control connection (nf.net.control_listener.CONTROL_CONNECTION), when the listener names it
    client_address: str | None = None
    client_port: int | None = None
    server_address: str | None = None
    server_port: int | None = None

    def __str__(self) -> str:
        peer = f" (IKE peer {self.peer_id})" if self.peer_id else ""
        client = f" from {self.client_address} port {self.client_port}" if self.client_address else ""
        return f"unknown IKE SA {spis_text((self.spi_i, self.spi_r))}{client}: {self.reason.value}{peer}"


class ServerBinding:
    """ServerConfig.ikev2_key_source: Key ID -> the named IKE SA's IPPM secret, for allowed peers only.

    `allowed_peers` are the configured remote identities (YANG allowed-peer names resolved to their
    nf-ike peer's remote identity); an empty list allows nobody. A lookup never re-keys anything: the machine
    derives the connection's keys once at Set-Up, so a later rekey or delete cannot touch it (R10).
    """

    def __init__(
        self, endpoint: SAStore, allowed_peers: Iterable[Identity], *, log_interval: float = 10.0
    ) -> None:
        self._endpoint = endpoint
        self._allowed = tuple(allowed_peers)
        self._observers: list[Callable[[UnknownSA], None]] = []
        self._log = RateLimitedLog(log, log_interval)
        self.served = 0
        self.rejected: Counter[UnknownSAReason] = Counter()

    def __repr__(self) -> str:
        peers = ", ".join(str(p) for p in self._allowed)
        rejected = sum(self.rejected.values())
        return f"ServerBinding(allowed=[{peers}], served={self.served}, rejected={rejected})"

    @property
    def allowed_peers(self) -> tuple[Identity, ...]:
        return self._allowed

    def set_allowed_peers(self, peers: Iterable[Identity]) -> None:
        """Configuration change; takes effect for the next Set-Up-Response (running connections keep keys)."""
        self._allowed = tuple(peers)

    def add_observer(self, callback: Callable[[UnknownSA], None]) -> None:
        """Called for every unknown-SA rejection (e.g. to raise the unknown-sa notification)."""
        self._observers.append(callback)

    def counters(self) -> dict[str, int]:
        """served plus one counter per UnknownSAReason value (the stats/YANG shape)."""
        return {"served": self.served, **{reason.value: n for reason, n in self.rejected.items()}}

    def secret_for(self, key_id: bytes) -> SharedSecret | None:
        secret, rejection = self._lookup(key_id)
        if rejection is not None:
            self._reject(rejection)
        else:
            self.served += 1
        return secret

    def _lookup(self, key_id: bytes) -> tuple[SharedSecret | None, UnknownSA | None]:
        try:
            spi_i, spi_r = spis_of(key_id)
        except ValueError:
            spi_i, spi_r = spis_of(key_id.ljust(KEY_ID_SPIS, b"\0"))
            return None, UnknownSA(spi_i, spi_r, UnknownSAReason.BAD_KEY_ID)
        sa = self._endpoint.lookup(spi_i, spi_r)
        if sa is None:
            return None, UnknownSA(spi_i, spi_r, UnknownSAReason.NO_SA)
        secret = _ippm_secret(sa)  # first: only an established SA has an authenticated peer identity
        if secret is None:
            return None, UnknownSA(spi_i, spi_r, UnknownSAReason.NOT_ESTABLISHED, sa.peer_id)
        if not _identity_allowed(self._allowed, sa.peer_id):
            return None, UnknownSA(spi_i, spi_r, UnknownSAReason.PEER_NOT_ALLOWED, sa.peer_id)
        return secret, None

    def _reject(self, event: UnknownSA) -> None:
        connection = CONTROL_CONNECTION.get()
        if connection is not None:
            client, client_port, local, local_port = connection
            event = dataclasses.replace(
                event,
                client_address=client,
                client_port=client_port,
                server_address=local,
                server_port=local_port,
            )
        self.rejected[event.reason] += 1
        self._log.warning(f"unknown-sa:{event.reason.value}", "TWAMP control: %s: answering Accept=6", event)
        for callback in list(self._observers):
            try:
                callback(event)
            except Exception:  # an observer's bug must not turn into a key-source failure
                log.exception("unknown-sa observer failed")


# ------------------------------------------------------------------------------------------------ client


class NoSAPolicy(enum.Enum):
    """YANG no-sa-policy: what a Control-Client does when its IKE peer has no SA (RFC 7717 s5.1)."""

    INITIATE = "initiate"  # start an IKE SA and wait for it (bounded), then fail
    FALLBACK = "fallback"  # log, and use the mode-preference-chain entries without ikev2-derived
    FAIL = "fail"


class NoIKESA(Exception):
    """No IKE SA keys this connection and the policy gives no alternative; str() says why (no keys)."""


@dataclass(frozen=True, slots=True)
class ClientPeer:
    """The IKE peer a control connection is bound to (YANG ikev2-derived container).

    `config` is the nf-ike peer (its remote_id names the SAs we accept as this peer's), `remote` the address
    to initiate to; an SA counts as this peer's when the identity matches and it runs to `remote`'s host.
    """

    name: str
    config: PeerConfig
    remote: Address
    policy: NoSAPolicy = NoSAPolicy.INITIATE
    initiate_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.initiate_timeout <= 300:
            raise ValueError("initiate_timeout must be in (0, 300] seconds")


class SAKeying:
    """A snapshot of one IKE SA's Key ID and secret: the KeySource of one control connection (R10/Q11).

    It answers only for its own Key ID, and keeps its secret whatever happens to the SA afterwards.
    """

    __slots__ = ("_secret", "spis")

    def __init__(self, spis: SPIs, secret: SharedSecret) -> None:
        key_id_of(spis)  # validates the SPI sizes
        self.spis = spis
        self._secret = secret

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.spis)

    def secret_for(self, key_id: bytes) -> SharedSecret | None:
        return self._secret if key_id[:KEY_ID_SPIS] == self.key_id else None

    def __repr__(self) -> str:
        return f"SAKeying({spis_text(self.spis)})"


@dataclass(frozen=True, slots=True)
class KeyingFallback:
    """A connection bound to `peer` found no SA and, by policy fallback, goes on with key-chain modes."""

    peer: str
    detail: str


class ClientBinding:
    """The current IKE SA with one configured peer, as SAKeying snapshots for new control connections.

    Create it before SAs with the peer come up: it learns about SAs from the endpoint's events only.
    """

    def __init__(self, endpoint: SAInitiator, peer: ClientPeer) -> None:
        self._endpoint = endpoint
        self.peer = peer
        self._sas: list[SPIs] = []  # this peer's SAs, oldest first; the newest usable one is current
        self._refused: set[SPIs] = set()  # SAs a server answered Accept=6 for
        self._closed = False
        self._waiters: list[asyncio.Future[SPIs]] = []
        self._initiation: asyncio.Task[Established | Failed] | None = None
        self._observers: list[Callable[[KeyingFallback], None]] = []
        self.counters: Counter[str] = Counter()  # keyed, initiated, fallback, failed, unknown-sa
        self._log = RateLimitedLog(log)
        endpoint.add_listener(self._on_event)

    def __repr__(self) -> str:
        keying = self.current()
        current = spis_text(keying.spis) if keying is not None else "-"
        return f"ClientBinding({self.peer.name}, {self.peer.policy.value}, current={current})"

    def add_observer(self, callback: Callable[[KeyingFallback], None]) -> None:
        """Called when a connection falls back (the key-source-fallback notification)."""
        self._observers.append(callback)

    # --- SA tracking

    def _ours(self, event: Established) -> bool:
        if not _identity_allowed((self.peer.config.remote_id,), event.peer_id):
            return False
        sa = self._endpoint.lookup(*event.spis)
        return sa is not None and _same_host(sa.remote[0], self.peer.remote[0])

    def _on_event(self, event: Event) -> None:
        if self._closed:
            return
        if isinstance(event, Established):
            if self._ours(event):
                self._sas.append(event.spis)
                self._wake(event.spis)
        elif isinstance(event, Rekeyed):
            if event.old_spis in self._sas:  # the successor replaces it and is the newest SA now
                self._sas.remove(event.old_spis)
                self._sas.append(event.new_spis)
                self._wake(event.new_spis)
        elif isinstance(event, Deleted | Failed) and event.spis in self._sas:
            self._sas.remove(event.spis)
            self._refused.discard(event.spis)

    def _wake(self, spis: SPIs) -> None:
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(spis)

    def current(self) -> SAKeying | None:
        """A snapshot of the newest established SA with the peer that no server refused, or None."""
        for spis in reversed(self._sas):
            if spis in self._refused:
                continue
            sa = self._endpoint.lookup(*spis)
            if sa is None:  # gone without an event (e.g. the endpoint dropped it): forget it
                self._sas.remove(spis)
                return self.current()
            secret = _ippm_secret(sa)
            if secret is not None:
                return SAKeying(spis, secret)
        return None

    def server_rejected(self, keying: SAKeying) -> None:
        """The server answered Accept=6 for this SA (Q5): new connections no longer use it; the no-SA
        policy applies (initiate a fresh SA, fall back or fail)."""
        self.counters["unknown-sa"] += 1
        self._refused.add(keying.spis)
        self._log.warning(
            "server-unknown-sa",
            "TWAMP server does not know IKE SA %s with %s (Accept=6)",
            spis_text(keying.spis),
            self.peer.name,
        )

    async def wait_established(self, timeout: float) -> SAKeying | None:
        """Q9: wait up to `timeout` s for an SA with the peer to be established (either side initiating)."""
        if (keying := self.current()) is not None:
            return keying
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            future: asyncio.Future[SPIs] = loop.create_future()
            self._waiters.append(future)
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                break
            if (keying := self.current()) is not None:
                return keying
        return self.current()

    # --- keying a new connection

    async def keying(self) -> SAKeying | None:
        """The keying of a new control connection; None means "fall back to key-chain modes" (policy
        fallback). Raises NoIKESA when policy fail applies, or initiate did not produce an SA in time."""
        if (keying := self.current()) is not None:
            self.counters["keyed"] += 1
            return keying
        peer = self.peer
        if peer.policy is NoSAPolicy.FAIL:
            self.counters["failed"] += 1
            raise NoIKESA(f"no IKE SA with {peer.name} (no-sa-policy fail)")
        if peer.policy is NoSAPolicy.FALLBACK:
            self.counters["fallback"] += 1
            event = KeyingFallback(peer.name, "no IKE SA; using key-chain modes")
            self._log.warning("fallback", "no IKE SA with %s: falling back to key-chain modes", peer.name)
            for callback in list(self._observers):
                try:
                    callback(event)
                except Exception:
                    log.exception("key-source-fallback observer failed")
            return None
        return await self._initiate()

    async def _initiate(self) -> SAKeying:
        peer = self.peer
        if self._initiation is None or self._initiation.done():
            log.info("no IKE SA with %s: initiating one (RFC 7717 s5.1)", peer.name)
            self.counters["initiated"] += 1
            self._initiation = asyncio.ensure_future(
                self._endpoint.initiate(peer.remote, peer.config, peer.initiate_timeout)
            )
            self._initiation.add_done_callback(_retrieve)
        initiation = self._initiation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + peer.initiate_timeout
        waiter = asyncio.ensure_future(self.wait_established(peer.initiate_timeout))
        try:
            done, _ = await asyncio.wait(
                {waiter, initiation}, timeout=peer.initiate_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if initiation in done and waiter not in done:
                if initiation.cancelled() or initiation.exception() is not None:
                    self.counters["failed"] += 1
                    raise NoIKESA(f"IKE SA with {peer.name} could not be initiated: {_why(initiation)}")
                result = initiation.result()
                if isinstance(result, Failed):
                    self.counters["failed"] += 1
                    raise NoIKESA(f"IKE SA with {peer.name} failed: {result.reason}")
                # Established: our listener has already made it current (or it was not the peer's)
                await asyncio.wait({waiter}, timeout=max(0.0, deadline - loop.time()))
        finally:
            if not waiter.done():
                waiter.cancel()
        keying = self.current()
        if keying is None:
            self.counters["failed"] += 1
            raise NoIKESA(f"no IKE SA with {peer.name} within {peer.initiate_timeout:g} s")
        self.counters["keyed"] += 1
        return keying

    def close(self) -> None:
        """Stops following the endpoint's events and abandons a running initiation."""
        self._closed = True
        if self._initiation is not None and not self._initiation.done():
            self._initiation.cancel()
        for future in self._waiters:
            if not future.done():
                future.cancel()
        self._waiters.clear()


def _retrieve(task: asyncio.Task[Established | Failed]) -> None:
    """Marks an initiation's exception as seen: whoever waits reports it; nobody waiting is fine too."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("IKE initiation failed: %s", type(exc).__name__)


def _why(task: asyncio.Task[Established | Failed]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return f"{type(exc).__name__}: {exc}" if exc is not None else "no error"


def client_config(
    keying: SAKeying | None,
    mode_preference: Sequence[Modes],
    *,
    key_id: bytes | None = None,
    key_source: KeySource | None = None,
    max_count_exponent: int = 20,
    features: Modes = NO_FEATURES,
) -> ClientConfig:
    """The ClientConfig of one control connection: IKEv2-derived entries keyed by `keying`, or, when keying
    is None (fallback), only the chain entries without ikev2-derived, keyed by the key-chain."""
    chain = tuple(mode_preference)
    if keying is None:
        chain = tuple(entry for entry in chain if not entry & Modes.IKEV2_DERIVED)
        if not chain:
            raise NoIKESA("no IKE SA, and no mode-preference-chain entry without ikev2-derived")
    return ClientConfig(
        mode_preference=chain,
        key_id=key_id,
        key_source=key_source,
        ikev2_key_id=keying.key_id if keying is not None else None,
        ikev2_key_source=keying,
        max_count_exponent=max_count_exponent,
        features=features,
    )


__all__ = [
    "ClientBinding",
    "ClientPeer",
    "KeyingFallback",
    "NoIKESA",
    "NoSAPolicy",
    "SAKeying",
    "ServerBinding",
    "UnknownSA",
    "UnknownSAReason",
    "client_config",
    "key_id_of",
    "spis_of",
]
