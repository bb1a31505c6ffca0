"""nf.runtime.config: YANG configuration (RFC 7951 JSON) -> runtime plan.

The examples in yang/examples/config are turned into RFC 7951 JSON by yanglint (what the NETCONF server
sends) and mapped, so the YANG contract and the runtime mapping cannot drift apart. Errors must name the
offending node and never quote a secret.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from nf.ike.identities import IDType
from nf.ike.transforms import DH_GROUPS, DhId
from nf.net.limits import Limits
from nf.net.sender import Schedule
from nf.runtime.config import ConfigError, Plan, build_plan, modes_to_text, ntp_to_unix, unix_to_ntp
from nf.twamp.modes import Modes
from tests.conftest import ROOT

YANG = ROOT / "yang"
SECRET = b"a-very-secret-value-0123456789"


def example(name: str) -> dict[str, Any]:
    ietf = sorted(Path(sys.prefix).glob("share/yang/modules/ietf"))
    assert ietf, "pyang's YANG modules are missing from the venv"
    modules = [str(YANG / f"{m}.yang") for m in ("twamp-nf-twamp", "twamp-nf-ike", "twamp-nf-ike-binding")]
    result = subprocess.run(
        [
            "yanglint",
            "-p",
            str(YANG),
            "-p",
            str(ietf[0]),
            "-f",
            "json",
            "-t",
            "config",
            *modules,
            str(YANG / "examples" / "config" / name),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def error_of(config: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_plan(config)
    return info.value


def test_client_keychain_example() -> None:
    plan = build_plan(example("client-keychain.xml"))
    connection = plan.connections["to-core-1"]
    assert connection.chain == (Modes.ENCRYPTED, Modes.AUTHENTICATED)
    assert connection.key_id == "probe-site-a" and connection.key_chain is not None
    assert connection.key_chain.secret_for(b"probe-site-a") is not None
    assert (connection.server_address, connection.server_port, connection.dscp) == ("192.0.2.10", 862, 46)
    assert connection.max_count_exponent == 16
    assert "ZXhhbXBsZS1zZWNyZXQ" not in repr(plan) and b"example-secret" not in repr(plan).encode()


def test_server_examples() -> None:
    keychain = build_plan(example("server-keychain.xml")).server
    assert keychain is not None
    assert keychain.count == 65536 and keychain.dscp == 46
    assert keychain.modes == Modes.UNAUTHENTICATED | Modes.AUTHENTICATED | Modes.ENCRYPTED
    assert keychain.limits.max_connections == 128 and keychain.limits.servwait == 600
    ikev2 = build_plan(example("server-ikev2.xml"))
    assert ikev2.server is not None and ikev2.ike is not None
    assert ikev2.server.modes == Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.IKEV2_DERIVED
    assert ikev2.server.allowed_peers == ("host-a",)
    assert ikev2.server.limits.refwait == 300 == ikev2.reflector.refwait  # session-reflector refwait
    peer = ikev2.ike.peers["host-a"]
    assert (
        peer.config.remote_id.id_type == IDType.FQDN and peer.config.remote_id.data == b"host-a.example.net"
    )
    assert [p.name for p in peer.config.proposals] == ["aes256gcm16-prfsha384-ecp384"]
    assert ikev2.ike.listen == ("0.0.0.0", 500)


def test_certificate_example_names_the_missing_file() -> None:
    error = error_of(example("client-ikev2.xml"))
    assert error.tag == "invalid-value"
    assert error.path == "/twamp-nf-ike:ike/local-identity[name='host-a']/certificate-file"
    assert "/etc/twamp-nf/ike/host-a.crt.pem" in error.message


def test_session_examples_twamp_light_and_feature_bits() -> None:
    reflector = build_plan(example("session-reflector.xml")).reflector
    assert reflector.light_ports == (("198.51.100.7", 862),)
    assert (reflector.refwait, reflector.max_sessions) == (120, 1024)
    assert (reflector.busy_poll, reflector.realtime_priority) == (50e-6, 10)
    assert (reflector.receive_batch, reflector.send_batch) == (32, 1)  # send-batch: its YANG default
    plan = build_plan(example("session-sender.xml"))
    light = plan.light_sessions["light-to-pe"]
    assert (light.reflector_address, light.reflector_port, light.dscp) == ("198.51.100.7", 862, 34)
    assert (light.count, light.interval, light.request_name) == (100, 0.1, "")
    connection = plan.connections["to-edge"]
    assert connection.chain == (Modes.UNAUTHENTICATED,)  # the feature bits are requested separately
    assert connection.features == Modes.REFLECT_OCTETS | Modes.SYMMETRICAL_SIZE
    (session,) = connection.sessions
    assert session.schedule is Schedule.POISSON and (session.repeat, session.repeat_interval) == (10, 60)
    assert (session.sender_port, session.padding_length, session.symmetric) == (50001, 1400, True)


def test_defaults_are_the_yang_defaults() -> None:
    plan = build_plan({"twamp-nf-twamp:twamp": {"server": {"modes": "unauthenticated"}}})
    assert plan.server is not None
    assert (plan.server.port, plan.server.count, plan.server.address) == (862, 32768, None)
    assert plan.server.limits == Limits()
    assert plan == build_plan({"twamp-nf-twamp:twamp": {"server": {"modes": "unauthenticated"}}})
    assert build_plan({}) == Plan()


def _client(secret: bytes = SECRET, request: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "twamp-nf-twamp:twamp": {
            "client": {
                "mode-preference-chain": [
                    {"priority": 5, "mode": "unauthenticated"},
                    {"priority": 1, "mode": "authenticated"},
                ],
                "key-chain": [{"key-id": "k1", "secret-key": base64.b64encode(secret).decode()}],
                "ctrl-connection": [
                    {
                        "name": "c",
                        "server-ip": "2001:db8::1",
                        "key-id": "k1",
                        "test-session-request": [
                            {"name": "r", "reflector-ip": "2001:db8::1", **(request or {})}
                        ],
                    }
                ],
            },
            "session-sender": {
                "test-session": [
                    {
                        "name": "s",
                        "ctrl-connection": "c",
                        "test-session-request": "r",
                        "number-of-packets": 100,
                        "lambda": "0.500000",
                        "max-interval": "2.000000",
                    }
                ]
            },
        }
    }


def test_client_session_mapping() -> None:
    start = "16305987245425590272"  # an NTP timestamp, as RFC 7951 writes uint64
    plan = build_plan(
        _client(
            request={
                "start-time": start,
                "padding-length": 100,
                "reflect-octets": {"octets-to-be-reflected": 10, "length-of-padding-to-reflect": 50},
            }
        )
    )
    connection = plan.connections["c"]
    assert connection.chain == (Modes.AUTHENTICATED, Modes.UNAUTHENTICATED)  # by priority
    (session,) = connection.sessions
    assert (session.name, session.request_name, session.count) == ("s", "r", 100)
    assert session.schedule is Schedule.POISSON and session.interval == 0.5 and session.max_interval == 2.0
    assert (session.octets_to_reflect, session.padding_to_reflect, session.padding_length) == (10, 50, 100)
    assert session.sender_port == 0 and session.timeout == 2.0  # autoallocate, YANG default
    assert session.start_time_ntp == int(start) and unix_to_ntp(ntp_to_unix(int(start))) == int(start)


def test_a_max_interval_below_lambda_is_refused_at_its_node() -> None:
    """The YANG `must` stops it over NETCONF; the control socket's apply refuses it by itself."""
    config = _client()
    config["twamp-nf-twamp:twamp"]["session-sender"]["test-session"][0]["max-interval"] = "0.250000"
    error = error_of(config)
    assert error.tag == "invalid-value" and error.path.endswith("/max-interval")
    assert "below lambda" in error.message


@pytest.mark.parametrize("value", [float("inf"), 1e400, float("nan"), 1.5, 100.0, "1e3", "0x10", True, " 5"])
def test_an_integer_leaf_takes_only_an_integer(value: Any) -> None:
    """RFC 7951 writes integers as numbers or (64-bit) digit strings; a float is refused, never truncated."""
    config = _client()
    config["twamp-nf-twamp:twamp"]["session-sender"]["test-session"][0]["number-of-packets"] = value
    error = error_of(config)
    assert error.tag == "invalid-value" and error.path.endswith("/number-of-packets")
    assert error.message == "not an integer"


@pytest.mark.parametrize("value", ["inf", "nan", "-Infinity", float("inf"), True])
def test_a_decimal_leaf_takes_only_a_finite_number(value: Any) -> None:
    config = _client()
    config["twamp-nf-twamp:twamp"]["session-sender"]["test-session"][0]["lambda"] = value
    error = error_of(config)
    assert error.tag == "invalid-value" and error.path.endswith("/lambda")


def test_fingerprints_follow_the_subtree_and_the_secret() -> None:
    first = build_plan(_client()).connections["c"].fingerprint
    assert build_plan(_client()).connections["c"].fingerprint == first
    assert build_plan(_client(secret=b"another-secret")).connections["c"].fingerprint != first
    assert build_plan(_client(request={"timeout": 5})).connections["c"].fingerprint != first


def test_references_are_checked() -> None:
    config = _client()
    config["twamp-nf-twamp:twamp"]["client"]["ctrl-connection"][0]["key-id"] = "nope"
    error = error_of(config)
    assert error.path == "/twamp-nf-twamp:twamp/client/ctrl-connection[name='c']/key-id"
    config = _client()
    config["twamp-nf-twamp:twamp"]["session-sender"]["test-session"][0]["test-session-request"] = "other"
    assert error_of(config).path == "/twamp-nf-twamp:twamp/session-sender/test-session[name='s']"
    config = _client()
    del config["twamp-nf-twamp:twamp"]["client"]["ctrl-connection"][0]["key-id"]
    config["twamp-nf-twamp:twamp"]["client"]["mode-preference-chain"].pop(0)
    error = error_of(config)  # only "authenticated" left, and no key for it
    assert error.path == "/twamp-nf-twamp:twamp/client/ctrl-connection[name='c']"
    server: dict[str, Any] = {"twamp-nf-twamp:twamp": {"server": {"modes": "authenticated"}}}
    assert error_of(server).path == "/twamp-nf-twamp:twamp/server/key-chain"
    server = {"twamp-nf-twamp:twamp": {"server": {"modes": "unauthenticated", "count": 3000}}}
    assert error_of(server).path == "/twamp-nf-twamp:twamp/server/count"


def test_secrets_are_never_quoted() -> None:
    short = base64.b64encode(b"short-psk").decode()
    config = {
        "twamp-nf-ike:ike": {
            "local-identity": [{"name": "me", "id-type": "fqdn", "id-value": "me.example", "psk": short}]
        }
    }
    error = error_of(config)
    assert error.path == "/twamp-nf-ike:ike/local-identity[name='me']/psk"
    assert short not in str(error) and "short-psk" not in str(error)
    broken = _client()
    broken["twamp-nf-twamp:twamp"]["client"]["key-chain"][0]["secret-key"] = "not base64 !" + SECRET.decode()
    error = error_of(broken)
    assert error.path == "/twamp-nf-twamp:twamp/client/key-chain[key-id='k1']/secret-key"
    assert SECRET.decode() not in str(error)
    assert SECRET.decode() not in repr(build_plan(_client()))
    assert "fingerprint" not in repr(build_plan(_client()))  # digests of secrets stay out of repr too


@pytest.mark.parametrize("key_id", ["a\x00b", "\ud800", "k" * 81])
@pytest.mark.parametrize("role", ["client", "server"])
def test_a_key_id_the_key_id_field_cannot_carry_is_refused(role: str, key_id: str) -> None:
    config = template()
    config["twamp-nf-twamp:twamp"][role]["key-chain"][0]["key-id"] = key_id
    error = error_of(config)
    assert error.tag == "invalid-value" and error.path.endswith("/key-id")
    assert error.message == "key-id must be 1..80 octets of UTF-8 without NUL"


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("me.example")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "me.pem", directory / "me.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _ike_with_files(cert: Path, key: Path, anchor: Path) -> dict[str, Any]:
    return {
        "twamp-nf-ike:ike": {
            "listen-address": ["127.0.0.1"],
            "listen-port": 4500,
            "local-identity": [
                {
                    "name": "me",
                    "id-type": "fqdn",
                    "id-value": "me.example",
                    "certificate-file": str(cert),
                    "private-key-file": str(key),
                }
            ],
            "peer": [
                {
                    "name": "gw",
                    "local-identity": "me",
                    "address": "192.0.2.1",
                    "remote-identity": {"id-type": "der-asn1-dn", "id-value": "C=CH, O=Example, CN=gw"},
                    "trust-anchor": [str(anchor)],
                    "proposal": [
                        {
                            "name": "cbc",
                            "encryption": "aes-cbc-128",
                            "integrity": "hmac-sha2-256-128",
                            "prf": "hmac-sha2-256",
                            "dh-group": "ecp-256",
                        }
                    ],
                    "lifetime": {"rekey-time": 600, "hard-lifetime": 700},
                    "auto-initiate": True,
                }
            ],
        }
    }


def test_certificate_credentials_are_loaded(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    plan = build_plan(_ike_with_files(cert, key, cert))
    assert plan.ike is not None and plan.ike.listen == ("127.0.0.1", 4500)
    peer = plan.ike.peers["gw"]
    assert peer.config.signer is not None and peer.config.psk is None and len(peer.config.certificates) == 1
    assert peer.config.remote_id.id_type == IDType.DER_ASN1_DN
    assert (peer.rekey_time, peer.hard_lifetime, peer.auto_initiate) == (600, 700, True)
    assert "PRIVATE" not in repr(plan)

    key.write_text("garbage")
    error = error_of(_ike_with_files(cert, key, cert))
    assert error.path == "/twamp-nf-ike:ike/local-identity[name='me']/private-key-file"
    error = error_of(_ike_with_files(cert, tmp_path / "me.key", tmp_path / "missing-ca.pem"))
    assert error.path in (
        "/twamp-nf-ike:ike/local-identity[name='me']/private-key-file",
        "/twamp-nf-ike:ike/peer[name='gw']/trust-anchor",
    )


def test_modes_text_round_trip() -> None:
    """Every bit name maps to its Modes flag and back (words a keyless server can offer)."""
    needs_keys = Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED | Modes.IKEV2_DERIVED
    words = [Modes(w) for w in range(256) if w & Modes.UNAUTHENTICATED and not w & needs_keys]
    assert len(words) == 8
    for modes in words:
        plan = build_plan({"twamp-nf-twamp:twamp": {"server": {"modes": modes_to_text(modes)}}})
        assert plan.server is not None and plan.server.modes == modes
    assert modes_to_text(Modes(130)) == "authenticated ikev2-derived"


# ------------------------------------------------------------------------ any tree: ConfigError or a plan

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def template() -> dict[str, Any]:
    """Every part of the mapping at once: server, client, sender, reflector, IKE with a binding."""
    config = _client()
    twamp = config["twamp-nf-twamp:twamp"]
    twamp["server"] = {
        "server-ip": "127.0.0.1",
        "modes": "unauthenticated authenticated ikev2-derived",
        "key-chain": [{"key-id": "k", "secret-key": base64.b64encode(SECRET).decode()}],
        "limits": {"max-ctrl-connections": 4, "max-ctrl-connections-per-client": 2},
        "twamp-nf-ike-binding:ikev2-derived": {"allowed-peer": ["gw"]},
    }
    twamp["session-reflector"] = {"refwait": 30, "limits": {"max-packet-rate": 100}}
    twamp["client"]["mode-preference-chain"].append({"priority": 0, "mode": "encrypted ikev2-derived"})
    twamp["client"]["ctrl-connection"][0]["twamp-nf-ike-binding:ikev2-derived"] = {"ike-peer": "gw"}
    config["twamp-nf-ike:ike"] = {
        "local-identity": [
            {
                "name": "me",
                "id-type": "ipv4-addr",
                "id-value": "192.0.2.9",
                "psk": base64.b64encode(SECRET).decode(),
            }
        ],
        "peer": [
            {
                "name": "gw",
                "local-identity": "me",
                "address": "192.0.2.1",
                "remote-identity": {"id-type": "key-id", "id-value": "0a0b"},
                "proposal": [
                    {
                        "name": "p",
                        "encryption": "aes-gcm-16-128",
                        "prf": "hmac-sha2-256",
                        "dh-group": "ecp-256",
                    }
                ],
            }
        ],
    }
    return config


def leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in leaves(value, (*path, key))] + [path]
    if isinstance(node, list):
        return [p for i, value in enumerate(node) for p in leaves(value, (*path, i))] + [path]
    return [path]


def mutate(config: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    parent: Any = config
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


def test_the_template_maps() -> None:
    plan = build_plan(template())
    assert plan.server is not None and plan.server.allowed_peers == ("gw",)
    assert plan.connections["c"].ikev2 is not None
    assert plan.connections["c"].chain[0] == Modes.ENCRYPTED | Modes.IKEV2_DERIVED


@given(data=st.data(), value=JSON_VALUES, delete=st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_mutated_tree_gives_a_plan_or_a_config_error(
    data: st.DataObject, value: Any, delete: bool
) -> None:
    config = template()
    paths = [p for p in leaves(config) if p]
    path = data.draw(st.sampled_from(paths))
    mutate(config, path, value, delete)
    try:
        build_plan(config)
    except ConfigError as exc:
        assert exc.path.startswith("/") and exc.tag in (
            "invalid-value",
            "operation-failed",
            "unknown-element",
            "malformed-message",
        )
        assert SECRET.decode() not in str(exc)


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("ecp-521", DhId.ECP_521),
        ("curve448", DhId.CURVE448),
        ("modp-3072", DhId.MODP_3072),
        ("modp-4096", DhId.MODP_4096),
    ],
)
def test_gateway_dh_groups_map_to_their_transforms(name: str, group: DhId) -> None:
    """The groups operators' gateways use, by their YANG enum names, become the IKE proposal's group."""
    config = template()
    config["twamp-nf-ike:ike"]["peer"][0]["proposal"][0]["dh-group"] = name
    plan = build_plan(config)
    assert plan.ike is not None
    (proposal,) = plan.ike.peers["gw"].config.proposals
    assert proposal.dh_groups == (DH_GROUPS[group],)
    assert proposal.name == f"aes128gcm16-prfsha256-{DH_GROUPS[group].name}"
