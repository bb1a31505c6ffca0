"""The one place that knows both the YANG configuration (RFC 7951 JSON) and the runtime classes.

`build_plan` turns a whole configuration tree of twamp-nf-twamp, twamp-nf-ike and twamp-nf-ike-binding
into a Plan: plain runtime objects (ServerConfig parts, KeyChain, PeerConfig with loaded credentials,
SessionRequest, ...), checked for what YANG cannot say (files that must exist and parse, references the
runtime needs, features the build lacks). Nothing here binds a socket; the daemon does that while applying.

YANG defaults are applied here, because the NETCONF server may send a tree without default leaves. Every
refusal is a ConfigError with the instance-identifier of the offending node; messages name nodes and files,
never the value of a secret leaf. Each plan object carries a `fingerprint` (a digest of the subtree it was
built from) so the daemon can keep running objects whose configuration did not change.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from nf.ike.auth import PreSharedKey, Signer
from nf.ike.certificates import TrustAnchors, load_certificates
from nf.ike.errors import IKEError
from nf.ike.exchanges import PeerConfig
from nf.ike.identities import Identity, IDType, parse_dn
from nf.ike.proposals import ProposalSpec
from nf.ike.transforms import DH_GROUPS, ENCRS, INTEGS, PRFS, DhId, EncrId, IntegAlgorithm, IntegId, PrfId
from nf.net.limits import Limits
from nf.net.sender import Schedule
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import SECURITY_MODES, Modes, SecurityMode

TWAMP = "twamp-nf-twamp"
IKE = "twamp-nf-ike"
BINDING = "twamp-nf-ike-binding"
MODULES = (TWAMP, IKE, BINDING)
TOP_TWAMP = f"{TWAMP}:twamp"
TOP_IKE = f"{IKE}:ike"
BINDING_NODE = f"{BINDING}:ikev2-derived"

# twamp-modes bit names -> Modes flags (positions are the Modes values; tests/test_yang.py checks them).
MODE_BITS: dict[str, Modes] = {
    "unauthenticated": Modes.UNAUTHENTICATED,
    "authenticated": Modes.AUTHENTICATED,
    "encrypted": Modes.ENCRYPTED,
    "unauth-test-encrypt-control": Modes.MIXED,
    "individual-session-control": Modes.INDIVIDUAL_SESSION_CONTROL,
    "reflect-octets": Modes.REFLECT_OCTETS,
    "symmetrical-size": Modes.SYMMETRICAL_SIZE,
    "ikev2-derived": Modes.IKEV2_DERIVED,
}
NO_SA_POLICIES = ("initiate", "fallback", "fail")
REQUESTABLE_FEATURES = Modes.INDIVIDUAL_SESSION_CONTROL | Modes.REFLECT_OCTETS | Modes.SYMMETRICAL_SIZE
NTP_UNIX_OFFSET = 2208988800
# Change detection compares digests of secrets; keyed with a per-process random value, so a digest that ended
# up somewhere would not help anyone guess the secret.
_DIGEST_SALT = os.urandom(16)
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


class ConfigError(Exception):
    """A configuration the runtime cannot put in force; `tag` is the NETCONF error-tag."""

    def __init__(self, tag: str, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.tag = tag
        self.path = path
        self.message = message


def modes_to_text(modes: Modes) -> str:
    return " ".join(name for name, bit in MODE_BITS.items() if modes & bit)


def _fingerprint(*parts: object) -> str:
    """A digest of configuration subtrees: equal digests mean nothing to restart (holds no secret text)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class _Node:
    """A JSON object with its instance-identifier, so every error names the node it is about."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError("invalid-value", path, "expected an object")
        self.data: dict[str, Any] = data
        self.path = path

    def at(self, name: str) -> str:
        return f"{self.path}/{name}"

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def need(self, name: str) -> Any:
        if name not in self.data:
            raise ConfigError("invalid-value", self.at(name), "missing mandatory node")
        return self.data[name]

    def child(self, name: str) -> _Node | None:
        value = self.data.get(name)
        return None if value is None else _Node(value, self.at(name))

    def child_or_empty(self, name: str) -> _Node:
        return self.child(name) or _Node({}, self.at(name))

    def entries(self, name: str, key: str) -> Iterator[_Node]:
        items = self.data.get(name, [])
        if not isinstance(items, list):
            raise ConfigError("invalid-value", self.at(name), "expected a list")
        for item in items:
            if not isinstance(item, dict) or key not in item:
                raise ConfigError("invalid-value", self.at(name), f"list entry without key {key}")
            yield _Node(item, f"{self.path}/{name}[{key}='{item[key]}']")

    def strings(self, name: str) -> list[str]:
        """A leaf-list of strings (absent: empty)."""
        values = self.data.get(name, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError("invalid-value", self.at(name), "expected a list of strings")
        return list(values)

    def integer(self, name: str, default: int | None = None, low: int = 0, high: int = 2**64 - 1) -> int:
        value = self.data.get(name, default)
        if value is None:
            raise ConfigError("invalid-value", self.at(name), "missing mandatory node")
        # RFC 7951 writes 64-bit integers as strings; a JSON float (1.5, 1e400) is not an integer value.
        if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise ConfigError("invalid-value", self.at(name), "not an integer")
        if not low <= number <= high:
            raise ConfigError("invalid-value", self.at(name), f"must be {low}..{high}")
        return number

    def decimal(self, name: str) -> float:
        value = self.need(name)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError("invalid-value", self.at(name), "not a decimal number") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise ConfigError("invalid-value", self.at(name), "not a decimal number")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError("invalid-value", self.at(name), "not a boolean")
        return value

    def text(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str):
            raise ConfigError("invalid-value", self.at(name), "missing or not a string")
        return value

    def address(self, name: str, default: str | None = None) -> str:
        text = self.text(name, default)
        try:
            return str(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            raise ConfigError("invalid-value", self.at(name), "not an IP address") from None

    def modes(self, name: str) -> Modes:
        value = self.need(name)
        words = value.split() if isinstance(value, str) else None
        if words is None or any(w not in MODE_BITS for w in words):
            raise ConfigError("invalid-value", self.at(name), "not a twamp-modes bits value")
        result = Modes(0)
        for word in words:
            result |= MODE_BITS[word]
        return result

    def secret(self, name: str) -> bytes:
        """A YANG binary (base64) secret; the error never quotes the value."""
        value = self.need(name)
        try:
            decoded = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        except (binascii.Error, ValueError):
            decoded = b""
        if not decoded:
            raise ConfigError("invalid-value", self.at(name), "not a non-empty base64 value")
        return decoded


# ------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class SessionPlan:
    """One Session-Sender test-session on a negotiated request."""

    name: str  # session-sender test-session name
    request_name: str
    path: str
    sender_address: str | None
    sender_port: int  # 0: autoallocate
    reflector_address: str
    reflector_port: int  # 0: the Server chooses
    timeout: float
    start_time_ntp: int
    padding_length: int
    random_fill: bool
    dscp: int
    octets_to_reflect: int
    padding_to_reflect: int
    symmetric: bool
    repeat: int
    repeat_interval: float
    count: int
    interval: float
    schedule: Schedule
    max_interval: float | None


@dataclass(frozen=True)
class IKEv2Binding:
    """RFC 7717 for one Control-Client connection: which peer's SA keys it, and what to do without one."""

    peer: str
    no_sa_policy: str
    initiate_timeout: float


@dataclass(frozen=True)
class ConnectionPlan:
    name: str
    path: str
    server_address: str
    server_port: int
    client_address: str | None
    dscp: int
    chain: tuple[Modes, ...]  # mode-preference-chain, best first, already limited to usable entries
    features: Modes  # feature bits the chain entries ask for (RFC 5938, RFC 6038)
    key_id: str | None
    key_chain: KeyChain | None = field(repr=False)
    max_count_exponent: int
    ikev2: IKEv2Binding | None
    sessions: tuple[SessionPlan, ...]
    fingerprint: str = field(repr=False)


@dataclass(frozen=True)
class ServerPlan:
    path: str
    address: str | None  # None: all addresses
    port: int
    modes: Modes
    count: int
    key_chain: KeyChain | None = field(repr=False)
    allowed_peers: tuple[str, ...]
    limits: Limits
    dscp: int | None
    fingerprint: str = field(repr=False)  # listening socket (address and port)


@dataclass(frozen=True)
class ReflectorPlan:
    refwait: float
    max_sessions: int  # 0 when admin-state is false: new sessions are refused
    max_pps: float | None
    light_ports: tuple[tuple[str, int], ...] = ()  # TWAMP Light (RFC 5357 Appendix I) addresses
    busy_poll: float = 0.0  # seconds a port polls after a packet before sleeping
    realtime_priority: int | None = None  # SCHED_FIFO priority of the port threads
    receive_batch: int = 16  # datagrams per receive call
    send_batch: int = 1  # replies per send call


@dataclass(frozen=True)
class PeerPlan:
    name: str
    path: str
    address: str
    port: int
    local_address: str | None
    config: PeerConfig = field(repr=False)
    rekey_time: float
    hard_lifetime: float
    liveness_interval: float
    liveness_action: str
    auto_initiate: bool
    fingerprint: str = field(repr=False)


@dataclass(frozen=True)
class IKEPlan:
    path: str
    listen: tuple[str, int]
    peers: dict[str, PeerPlan]
    fingerprint: str = field(repr=False)  # the listening socket


@dataclass(frozen=True)
class Plan:
    """Everything the runtime runs for one configuration; empty parts are None / empty."""

    ike: IKEPlan | None = None
    server: ServerPlan | None = None
    reflector: ReflectorPlan = ReflectorPlan(900.0, 256, None)
    client_enabled: bool = False
    connections: dict[str, ConnectionPlan] = field(default_factory=dict)
    light_sessions: dict[str, SessionPlan] = field(default_factory=dict)  # TWAMP Light Session-Sender
    reflector_configured: bool = False  # the session-reflector presence container exists


def build_plan(config: Any) -> Plan:
    """The whole configuration -> Plan, or ConfigError naming the first offending node."""
    if not isinstance(config, dict):
        raise ConfigError("malformed-message", "/", "config must be an object")
    for name in config:
        if name not in (TOP_TWAMP, TOP_IKE):
            raise ConfigError("unknown-element", f"/{name}", "not a top-level node of the runtime's modules")
    ike = _ike(_Node(config[TOP_IKE], f"/{TOP_IKE}")) if TOP_IKE in config else None
    if ike is not None and not ike.peers:
        ike = None  # identities alone: nobody to talk to, so no socket (an empty container binds nothing)
    peers = ike.peers if ike is not None else {}
    twamp = _Node(config.get(TOP_TWAMP, {}), f"/{TOP_TWAMP}")
    reflector_node = twamp.child("session-reflector")
    reflector = _reflector(reflector_node) if reflector_node is not None else ReflectorPlan(900.0, 256, None)
    server_node = twamp.child("server")
    server = None
    if server_node is not None and server_node.boolean("admin-state", True):
        server = _server(server_node, peers)
        # the listener enforces the reflector's per-session rate and REFWAIT (nf.net.limits.Limits)
        limits = replace(server.limits, max_pps=reflector.max_pps, refwait=reflector.refwait)
        server = replace(server, limits=limits)
    client = twamp.child("client")
    sender = twamp.child("session-sender")
    sessions: dict[tuple[str, str], _SenderEntry] = {}
    light: dict[str, SessionPlan] = {}
    if sender is not None and sender.boolean("admin-state", True):
        sessions, light = _sessions(sender)
    connections: dict[str, ConnectionPlan] = {}
    enabled = client is not None and client.boolean("admin-state", True)
    if client is not None and enabled:
        connections = _connections(client, peers, sessions)
    return Plan(
        ike=ike,
        server=server,
        reflector=reflector,
        client_enabled=enabled,
        connections=connections,
        light_sessions=light,
        reflector_configured=reflector_node is not None,
    )


# ------------------------------------------------------------------------------------------- TWAMP


def _key_chain(node: _Node) -> KeyChain | None:
    entries = list(node.entries("key-chain", "key-id"))
    if not entries:
        return None
    chain = KeyChain()
    for entry in entries:
        key_id = entry.text("key-id")
        secret = entry.secret("secret-key")
        try:
            chain.add(key_id, secret)
        except ValueError:  # its text quotes the key-id; ours names the node (UnicodeEncodeError: surrogates)
            raise ConfigError(
                "invalid-value", entry.at("key-id"), "key-id must be 1..80 octets of UTF-8 without NUL"
            ) from None
    return chain


def _server(node: _Node, peers: dict[str, PeerPlan]) -> ServerPlan:
    modes = node.modes("modes")
    if not modes & SECURITY_MODES:
        raise ConfigError("invalid-value", node.at("modes"), "modes must offer a security mode")
    count = node.integer("count", 32768, 1024, 2**31)
    if count & (count - 1):
        raise ConfigError("invalid-value", node.at("count"), "count must be a power of two")
    if count > 2 ** node.integer("max-count-exponent", 15, 10, 31):
        raise ConfigError("invalid-value", node.at("count"), "count must not exceed 2^max-count-exponent")
    key_chain = _key_chain(node)
    binding = node.child_or_empty(BINDING_NODE)
    allowed = tuple(binding.strings("allowed-peer"))
    for name in allowed:
        if name not in peers:
            raise ConfigError("invalid-value", binding.at("allowed-peer"), f"no IKE peer named {name!r}")
    if modes & Modes.IKEV2_DERIVED and not allowed:
        raise ConfigError("invalid-value", binding.at("allowed-peer"), "ikev2-derived offered without peers")
    protected = modes & (Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED)
    if protected and key_chain is None and not modes & Modes.IKEV2_DERIVED:
        raise ConfigError("invalid-value", node.at("key-chain"), "modes that use a secret need a key-chain")
    limits_node = node.child_or_empty("limits")
    max_connections = limits_node.integer("max-ctrl-connections", 64, 1, 65535)
    per_client = limits_node.integer("max-ctrl-connections-per-client", 8, 1, 65535)
    if per_client > max_connections:
        raise ConfigError(
            "invalid-value", limits_node.at("max-ctrl-connections-per-client"), "above max-ctrl-connections"
        )
    address = node.address("server-ip") if node.has("server-ip") else None
    port = node.integer("server-tcp-port", 862, 0, 65535)
    dscp = node.integer("control-packet-dscp", 0, 0, 63) if node.has("control-packet-dscp") else None
    return ServerPlan(
        path=node.path,
        address=address,
        port=port,
        modes=modes,
        count=count,
        key_chain=key_chain,
        allowed_peers=allowed,
        limits=Limits(
            max_connections=max_connections,
            max_connections_per_client=per_client,
            max_sessions_per_connection=limits_node.integer("max-test-sessions-per-connection", 16, 1, 65535),
            servwait=float(node.integer("servwait", 900, 1, 604800)),
        ),
        dscp=dscp,
        fingerprint=_fingerprint(address, port),
    )


def _reflector(node: _Node) -> ReflectorPlan:
    limits = node.child_or_empty("limits")
    rate = limits.integer("max-packet-rate", 0, 1, 2**32 - 1) if limits.has("max-packet-rate") else None
    enabled = node.boolean("admin-state", True)
    ports = []
    for entry in node.entries("light-port", "reflector-ip"):
        port = entry.integer("reflector-udp-port", None, 1, 65535)
        ports.append((entry.address("reflector-ip"), port))
    performance = node.child_or_empty("performance")
    has_priority = performance.has("realtime-priority")
    priority = performance.integer("realtime-priority", 0, 1, 99) if has_priority else None
    return ReflectorPlan(
        refwait=float(node.integer("refwait", 900, 1, 604800)),
        max_sessions=limits.integer("max-test-sessions", 256, 1, 65535) if enabled else 0,
        max_pps=float(rate) if rate is not None else None,
        light_ports=tuple(sorted(set(ports))) if enabled else (),
        busy_poll=performance.integer("busy-poll", 0, 0, 1_000_000) / 1e6,
        realtime_priority=priority,
        receive_batch=performance.integer("receive-batch", 16, 1, 1024),
        send_batch=performance.integer("send-batch", 1, 1, 1024),
    )


@dataclass(frozen=True)
class _SenderEntry:
    name: str
    path: str
    count: int
    interval: float
    schedule: Schedule
    max_interval: float | None


def _sessions(sender: _Node) -> tuple[dict[tuple[str, str], _SenderEntry], dict[str, SessionPlan]]:
    """Session-Sender test-sessions: negotiated ones by (ctrl-connection, test-session-request), and the
    TWAMP Light ones by name."""
    found: dict[tuple[str, str], _SenderEntry] = {}
    light: dict[str, SessionPlan] = {}
    for entry in sender.entries("test-session", "name"):
        schedule_entry = _schedule(entry)
        light_node = entry.child("light")
        if light_node is not None:
            light[schedule_entry.name] = _light_session(schedule_entry, light_node)
            continue
        connection = entry.text("ctrl-connection")
        request = entry.text("test-session-request")
        if (connection, request) in found:
            raise ConfigError("invalid-value", entry.path, "another test-session already runs this request")
        found[(connection, request)] = schedule_entry
    return found, light


def _schedule(entry: _Node) -> _SenderEntry:
    """What every Session-Sender test-session has: its name, packet count and sending schedule."""
    if entry.has("lambda"):
        interval, schedule = entry.decimal("lambda"), Schedule.POISSON
        max_interval = entry.decimal("max-interval") if entry.has("max-interval") else None
    else:
        interval, schedule, max_interval = entry.decimal("periodic-interval"), Schedule.PERIODIC, None
    if interval <= 0:
        raise ConfigError("invalid-value", entry.path, "the packet interval must be positive")
    if max_interval is not None and not max_interval >= interval:  # the YANG must, for the control socket
        raise ConfigError("invalid-value", entry.at("max-interval"), "max-interval must not be below lambda")
    return _SenderEntry(
        name=entry.text("name"),
        path=entry.path,
        count=entry.integer("number-of-packets", None, 1, 2**32 - 1),
        interval=interval,
        schedule=schedule,
        max_interval=max_interval,
    )


def _light_session(entry: _SenderEntry, light: _Node) -> SessionPlan:
    """A TWAMP Light session: the light container carries what TWAMP-Control would have negotiated."""
    padding = light.integer("padding-length", 0, 0, 65000)
    reflect = light.child("reflect-octets")
    octets = reflect.integer("octets-to-be-reflected", 0, 0, 65535) if reflect is not None else 0
    if octets > padding:
        raise ConfigError(
            "invalid-value", light.at("reflect-octets/octets-to-be-reflected"), "exceeds padding-length"
        )
    return SessionPlan(
        name=entry.name,
        request_name="",
        path=entry.path,
        sender_address=light.address("sender-ip") if light.has("sender-ip") else None,
        sender_port=light.integer("sender-udp-port", 0, 0, 65535),
        reflector_address=light.address("reflector-ip"),
        reflector_port=light.integer("reflector-udp-port", 862, 1, 65535),
        timeout=2.0,  # no Stop-Sessions: how long late replies are waited for after the last packet
        start_time_ntp=0,
        padding_length=padding,
        random_fill=light.text("fill-mode", "zero") == "random",
        dscp=light.integer("test-packet-dscp", 0, 0, 63),
        octets_to_reflect=octets,
        padding_to_reflect=reflect.integer("length-of-padding-to-reflect", 0, 0, 65535) if reflect else 0,
        symmetric=light.boolean("symmetrical-size", False),
        repeat=0,
        repeat_interval=0.0,
        count=entry.count,
        interval=entry.interval,
        schedule=entry.schedule,
        max_interval=entry.max_interval,
    )


def _connections(
    client: _Node, peers: dict[str, PeerPlan], sessions: dict[tuple[str, str], _SenderEntry]
) -> dict[str, ConnectionPlan]:
    chain_entries = sorted(
        (
            (entry.integer("priority", None, 0, 65535), entry)
            for entry in client.entries("mode-preference-chain", "priority")
        ),
        key=lambda pair: pair[0],
    )
    chain: list[Modes] = []
    features = Modes(0)
    for _, entry in chain_entries:
        mode = entry.modes("mode")
        security = SecurityMode.from_modes(mode & SECURITY_MODES)
        if security is None:
            raise ConfigError("invalid-value", entry.at("mode"), "mode must select exactly one security mode")
        if security is SecurityMode.UNAUTHENTICATED and mode & Modes.IKEV2_DERIVED:
            raise ConfigError(
                "invalid-value", entry.at("mode"), "ikev2-derived needs a mode that uses a secret"
            )
        # the machine takes the security (+ ikev2-derived) word per entry and one set of feature bits,
        # requested whenever the Server offers them
        features |= mode & REQUESTABLE_FEATURES
        word = mode & (SECURITY_MODES | Modes.IKEV2_DERIVED)
        if word not in chain:
            chain.append(word)
    key_chain = _key_chain(client)
    key_ids = set(key_chain.key_ids()) if key_chain is not None else set()
    result: dict[str, ConnectionPlan] = {}
    for node in client.entries("ctrl-connection", "name"):
        name = node.text("name")
        key_id = node.text("key-id") if node.has("key-id") else None
        if key_id is not None and key_id not in key_ids:
            raise ConfigError("invalid-value", node.at("key-id"), f"no key-chain entry {key_id!r}")
        binding_node = node.child(BINDING_NODE)
        binding = None
        if binding_node is not None:
            peer = binding_node.text("ike-peer")
            if peer not in peers:
                raise ConfigError("invalid-value", binding_node.at("ike-peer"), f"no IKE peer named {peer!r}")
            policy = binding_node.text("no-sa-policy", "initiate")
            if policy not in NO_SA_POLICIES:
                raise ConfigError("invalid-value", binding_node.at("no-sa-policy"), "unknown no-sa-policy")
            timeout = binding_node.integer("initiate-timeout", 10, 1, 300)
            binding = IKEv2Binding(peer, policy, float(timeout))
        usable = tuple(m for m in chain if _usable(m, key_id is not None, binding is not None))
        if not usable:
            raise ConfigError(
                "invalid-value",
                node.path,
                "no mode-preference-chain entry is usable with this connection's keys",
            )
        requests = {r.text("name"): r for r in node.entries("test-session-request", "name")}
        plans = []
        for (connection, request_name), sender_entry in sorted(sessions.items()):
            if connection != name:
                continue
            request = requests.get(request_name)
            if request is None:
                raise ConfigError(
                    "invalid-value", sender_entry.path, f"no test-session-request {request_name!r}"
                )
            plans.append(_session(sender_entry, request))
        result[name] = ConnectionPlan(
            name=name,
            path=node.path,
            server_address=node.address("server-ip"),
            server_port=node.integer("server-tcp-port", 862, 1, 65535),
            client_address=node.address("client-ip") if node.has("client-ip") else None,
            dscp=node.integer("control-packet-dscp", 0, 0, 63),
            chain=usable,
            features=features,
            key_id=key_id,
            key_chain=key_chain if key_id is not None else None,
            max_count_exponent=node.integer("max-count-exponent", 15, 10, 31),
            ikev2=binding,
            sessions=tuple(plans),
            fingerprint=_fingerprint(
                node.data,
                [int(m) for m in usable],
                int(features),
                key_id,
                _secret_digest(key_chain, key_id),
                [p.name for p in plans],
                [repr(p) for p in plans],
                peers[binding.peer].fingerprint if binding is not None else None,
            ),
        )
    for connection, request_name in sessions:
        if connection not in result:
            orphan = sessions[(connection, request_name)]
            raise ConfigError("invalid-value", orphan.path, f"no ctrl-connection {connection!r}")
    return result


def _secret_digest(chain: KeyChain | None, key_id: str | None) -> str | None:
    """Whether the secret behind key_id changed, without keeping its text (one PBKDF2 round, fixed salt)."""
    if chain is None or key_id is None:
        return None
    secret = chain.secret_for(key_id.encode("utf-8"))
    return None if secret is None else secret.derive_kek(_DIGEST_SALT, 1).hex()


def _usable(mode: Modes, has_key_id: bool, has_binding: bool) -> bool:
    """docs/yang.md: a connection uses only the chain entries its keys can serve."""
    if mode & Modes.IKEV2_DERIVED:
        return has_binding
    if mode & Modes.UNAUTHENTICATED:
        return True
    return has_key_id


def _session(entry: _SenderEntry, request: _Node) -> SessionPlan:
    sender_port_value = request.get("sender-udp-port", "autoallocate")
    sender_port = (
        0 if sender_port_value == "autoallocate" else request.integer("sender-udp-port", None, 1, 65535)
    )
    reflect = request.child("reflect-octets")
    padding = request.integer("padding-length", 0, 0, 65000)
    octets = reflect.integer("octets-to-be-reflected", 0, 0, 65535) if reflect is not None else 0
    if octets > padding:
        raise ConfigError(
            "invalid-value", request.at("reflect-octets/octets-to-be-reflected"), "exceeds padding-length"
        )
    repeat = request.integer("repeat", 0, 0, 2**32 - 1)
    return SessionPlan(
        name=entry.name,
        request_name=request.text("name"),
        path=entry.path,
        sender_address=request.address("sender-ip") if request.has("sender-ip") else None,
        sender_port=sender_port,
        reflector_address=request.address("reflector-ip"),
        reflector_port=request.integer("reflector-udp-port", 0, 0, 65535),
        timeout=float(request.integer("timeout", 2, 0, 3600)),
        start_time_ntp=request.integer("start-time", 0),
        padding_length=padding,
        random_fill=request.text("fill-mode", "zero") == "random",
        dscp=request.integer("test-packet-dscp", 0, 0, 63),
        octets_to_reflect=octets,
        padding_to_reflect=reflect.integer("length-of-padding-to-reflect", 0, 0, 65535) if reflect else 0,
        symmetric=request.boolean("symmetrical-size", False),
        repeat=repeat,
        repeat_interval=float(request.integer("repeat-interval", 0, 0, 2**32 - 1)) if repeat else 0.0,
        count=entry.count,
        interval=entry.interval,
        schedule=entry.schedule,
        max_interval=entry.max_interval,
    )


# ------------------------------------------------------------------------------------------- IKE


def _ike(node: _Node) -> IKEPlan:
    addresses = node.strings("listen-address")
    if len(addresses) > 1:
        raise ConfigError(
            "operation-failed", node.at("listen-address"), "this runtime listens on one address"
        )
    listen_address = "0.0.0.0"
    if addresses:
        try:
            listen_address = str(ipaddress.ip_address(addresses[0]))
        except ValueError:
            raise ConfigError("invalid-value", node.at("listen-address"), "not an IP address") from None
    listen = (listen_address, node.integer("listen-port", 500, 0, 65535))
    identities = {entry.text("name"): entry for entry in node.entries("local-identity", "name")}
    credentials: dict[str, tuple[Identity, PreSharedKey | None, Signer | None, tuple[Any, ...], str]] = {}
    for name, entry in identities.items():
        credentials[name] = _credential(entry)
    peers: dict[str, PeerPlan] = {}
    for entry in node.entries("peer", "name"):
        name = entry.text("name")
        local_name = entry.text("local-identity")
        if local_name not in credentials:
            raise ConfigError(
                "invalid-value", entry.at("local-identity"), f"no local-identity {local_name!r}"
            )
        local_id, psk, signer, certificates, credential_digest = credentials[local_name]
        remote = entry.child("remote-identity")
        if remote is None:
            raise ConfigError("invalid-value", entry.at("remote-identity"), "missing mandatory node")
        remote_id = _identity(remote)
        trust = None
        anchors = entry.strings("trust-anchor")
        if psk is None:
            if not anchors:
                raise ConfigError(
                    "invalid-value",
                    entry.at("trust-anchor"),
                    "certificate authentication needs a trust-anchor",
                )
            try:
                trust = TrustAnchors.from_files(*anchors)
            except (OSError, ValueError, IKEError) as exc:
                raise ConfigError("invalid-value", entry.at("trust-anchor"), _file_error(exc)) from None
        proposals = tuple(_proposal(p) for p in entry.entries("proposal", "name"))
        if not proposals:
            raise ConfigError("invalid-value", entry.at("proposal"), "at least one proposal is needed")
        lifetime = entry.child_or_empty("lifetime")
        rekey = lifetime.integer("rekey-time", 14400, 60, 2**32 - 1)
        hard = lifetime.integer("hard-lifetime", 15840, 120, 2**32 - 1)
        if rekey >= hard:
            raise ConfigError(
                "invalid-value", lifetime.at("rekey-time"), "must be shorter than hard-lifetime"
            )
        liveness = entry.child_or_empty("liveness")
        try:
            config = PeerConfig(
                local_id, remote_id, proposals, psk=psk, signer=signer, certificates=certificates, trust=trust
            )
        except ValueError as exc:
            raise ConfigError("invalid-value", entry.path, str(exc)) from None
        peers[name] = PeerPlan(
            name=name,
            path=entry.path,
            address=entry.address("address"),
            port=entry.integer("port", 500, 1, 65535),
            local_address=entry.address("local-address") if entry.has("local-address") else None,
            config=config,
            rekey_time=float(rekey),
            hard_lifetime=float(hard),
            liveness_interval=float(liveness.integer("interval", 30, 0, 86400)),
            liveness_action=liveness.text("action", "restart"),
            auto_initiate=entry.boolean("auto-initiate", False),
            fingerprint=_fingerprint(
                entry.data, identities[local_name].data.get("id-value"), credential_digest
            ),
        )
    return IKEPlan(path=node.path, listen=listen, peers=peers, fingerprint=_fingerprint(listen))


def _file_error(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot read {exc.filename}: {(exc.strerror or 'error').lower()}"
    return f"cannot use the file: {type(exc).__name__}"


def _credential(
    entry: _Node,
) -> tuple[Identity, PreSharedKey | None, Signer | None, tuple[Any, ...], str]:
    identity = _identity(entry)
    if entry.has("psk"):
        secret = entry.secret("psk")
        if len(secret) < 16:
            raise ConfigError("invalid-value", entry.at("psk"), "psk must be 16 to 1024 octets")
        digest = hmac.new(_DIGEST_SALT, secret, hashlib.sha256).hexdigest()
        return identity, PreSharedKey(secret), None, (), digest
    cert_path = entry.text("certificate-file") if entry.has("certificate-file") else None
    key_path = entry.text("private-key-file") if entry.has("private-key-file") else None
    if cert_path is None or key_path is None:
        raise ConfigError(
            "invalid-value", entry.path, "a psk or certificate-file and private-key-file are needed"
        )
    try:
        certificates = tuple(load_certificates(cert_path))
        if not certificates:
            raise ValueError("no certificate")
    except (OSError, ValueError, IKEError) as exc:
        raise ConfigError("invalid-value", entry.at("certificate-file"), _file_error(exc)) from None
    try:
        signer = Signer.from_file(key_path)
    except (OSError, ValueError, TypeError, IKEError) as exc:
        raise ConfigError("invalid-value", entry.at("private-key-file"), _file_error(exc)) from None
    digest = hashlib.sha256(b"".join(c.public_bytes(Encoding.DER) for c in certificates)).hexdigest()
    return identity, None, signer, certificates, digest + key_path


def _identity(node: _Node) -> Identity:
    kind = node.text("id-type")
    value = node.text("id-value")
    try:
        id_type = IDType[kind.upper().replace("-", "_")]
    except KeyError:
        raise ConfigError("invalid-value", node.at("id-type"), "unknown identity type") from None
    try:
        if id_type in (IDType.IPV4_ADDR, IDType.IPV6_ADDR):
            address = ipaddress.ip_address(value)
            if (address.version == 4) != (id_type == IDType.IPV4_ADDR):
                raise ValueError("address family does not match id-type")
            return Identity(id_type, address.packed, value)
        if id_type == IDType.DER_ASN1_DN:
            return Identity(IDType.DER_ASN1_DN, parse_dn(value).public_bytes(), value)
        if id_type == IDType.KEY_ID:
            try:
                return Identity(IDType.KEY_ID, bytes.fromhex(value), value)
            except ValueError:
                return Identity(IDType.KEY_ID, value.encode("utf-8"), value)
        return Identity(id_type, value.encode("utf-8"), value)
    except (ValueError, IKEError) as exc:
        raise ConfigError("invalid-value", node.at("id-value"), f"not a valid {kind}: {exc}") from None


def _enum_member(enum_type: Any, name: str, node: _Node, leaf: str) -> int:
    try:
        return int(enum_type[name.upper().replace("-", "_")])
    except KeyError:
        raise ConfigError("invalid-value", node.at(leaf), f"unknown {leaf} {name!r}") from None


def _proposal(node: _Node) -> ProposalSpec:
    encryption = node.text("encryption")
    algorithm, _, bits = encryption.rpartition("-")
    encr = ENCRS.get(
        (_enum_member(EncrId, algorithm, node, "encryption"), int(bits) if bits.isdigit() else 0)
    )
    if encr is None:
        raise ConfigError("invalid-value", node.at("encryption"), f"unknown encryption {encryption!r}")
    integs: tuple[IntegAlgorithm, ...] = ()
    if node.has("integrity"):
        integ = INTEGS.get(_enum_member(IntegId, node.text("integrity"), node, "integrity"))
        if integ is None:
            raise ConfigError("invalid-value", node.at("integrity"), "unsupported integrity algorithm")
        integs = (integ,)
    if encr.aead == bool(integs):
        raise ConfigError("invalid-value", node.path, "an AEAD cipher takes no integrity; others need one")
    prf = PRFS.get(_enum_member(PrfId, node.text("prf"), node, "prf"))
    dh = DH_GROUPS.get(_enum_member(DhId, node.text("dh-group"), node, "dh-group"))
    if prf is None or dh is None:
        raise ConfigError("invalid-value", node.path, "unsupported prf or dh-group")
    return ProposalSpec((encr,), integs, (prf,), (dh,))


def ntp_to_unix(ntp: int) -> float:
    return ntp / 2**32 - NTP_UNIX_OFFSET


def unix_to_ntp(unix: float) -> int:
    return round((unix + NTP_UNIX_OFFSET) * 2**32)
