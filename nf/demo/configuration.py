"""The NETCONF edit-config payloads of the demo pair (the shape of yang/examples/config/*-ikev2.xml).

A is the TWAMP Server, Session-Reflector and IKE responder: it offers authenticated, encrypted and mixed
mode, each also IKEv2-derived for keys from an SA with B. B is the IKE initiator (auto-initiate) and the
Control-Client: its mode-preference-chain puts the chosen protected mode with ikev2-derived first, and its
control connection to A is keyed by the IKE SA with A (no SA yet: initiate one). Both authenticate the SA
with the demo CA's certificates. No secret is ever part of these documents: the only credentials are file
paths the runtime opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
TWAMP_NS = "urn:twamp-nf:yang:twamp-nf-twamp"
IKE_NS = "urn:twamp-nf:yang:twamp-nf-ike"
BINDING_NS = "urn:twamp-nf:yang:twamp-nf-ike-binding"

# --mode -> the twamp-modes security bit (RFC 8913 names; mixed is unauth-test-encrypt-control)
SECURITY_BITS = {
    "authenticated": "authenticated",
    "encrypted": "encrypted",
    "mixed": "unauth-test-encrypt-control",
}
PROPOSAL = """<proposal><name>demo</name><encryption>aes-gcm-16-256</encryption><prf>hmac-sha2-256</prf>
        <dh-group>ecp-256</dh-group></proposal>"""
INITIATE_TIMEOUT = 30  # seconds B's control connection waits for its IKE SA
SESSION = "demo"  # the Session-Sender test session's name on B
CONNECTION = "to-gw-a"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What one instance's configuration needs to know about itself or its peer."""

    name: str  # instance and IKE peer name
    fqdn: str  # IKE identity
    host: str  # loopback address
    ike_port: int
    certificate: Path
    private_key: Path


def _text(value: object) -> str:
    return escape(str(value))


def _ike(me: Endpoint, peer: Endpoint, ca: Path, *, initiate: bool) -> str:
    return f"""
  <ike xmlns="{IKE_NS}">
    <listen-address>{_text(me.host)}</listen-address>
    <listen-port>{me.ike_port}</listen-port>
    <local-identity>
      <name>{_text(me.name)}</name><id-type>fqdn</id-type><id-value>{_text(me.fqdn)}</id-value>
      <certificate-file>{_text(me.certificate)}</certificate-file>
      <private-key-file>{_text(me.private_key)}</private-key-file>
    </local-identity>
    <peer>
      <name>{_text(peer.name)}</name><local-identity>{_text(me.name)}</local-identity>
      <address>{_text(peer.host)}</address><port>{peer.ike_port}</port>
      <local-address>{_text(me.host)}</local-address>
      <remote-identity><id-type>fqdn</id-type><id-value>{_text(peer.fqdn)}</id-value></remote-identity>
      <trust-anchor>{_text(ca)}</trust-anchor>
      {PROPOSAL}
      <auto-initiate>{"true" if initiate else "false"}</auto-initiate>
    </peer>
  </ike>"""


def server_config(a: Endpoint, b: Endpoint, ca: Path, twamp_port: int) -> str:
    """A: IKE responder for B; TWAMP Server offering every protected mode, IKEv2-derived for B's SAs."""
    return f"""<config xmlns="{NC_NS}">{_ike(a, b, ca, initiate=False)}
  <twamp xmlns="{TWAMP_NS}">
    <server>
      <server-ip>{_text(a.host)}</server-ip>
      <server-tcp-port>{twamp_port}</server-tcp-port>
      <modes>authenticated encrypted unauth-test-encrypt-control ikev2-derived</modes>
      <ikev2-derived xmlns="{BINDING_NS}"><allowed-peer>{_text(b.name)}</allowed-peer></ikev2-derived>
    </server>
    <session-reflector><refwait>60</refwait></session-reflector>
  </twamp>
</config>"""


def client_config(
    b: Endpoint, a: Endpoint, ca: Path, twamp_port: int, *, mode: str, count: int, interval: float
) -> str:
    """B: IKE initiator towards A; Control-Client whose one connection is keyed by the SA with A, and one
    Session-Sender test session of `count` packets every `interval` seconds."""
    security = SECURITY_BITS[mode]
    return f"""<config xmlns="{NC_NS}">{_ike(b, a, ca, initiate=True)}
  <twamp xmlns="{TWAMP_NS}">
    <client>
      <mode-preference-chain>
        <priority>0</priority><mode>{security} ikev2-derived</mode>
      </mode-preference-chain>
      <ctrl-connection>
        <name>{CONNECTION}</name>
        <client-ip>{_text(b.host)}</client-ip>
        <server-ip>{_text(a.host)}</server-ip>
        <server-tcp-port>{twamp_port}</server-tcp-port>
        <test-session-request>
          <name>r1</name>
          <sender-ip>{_text(b.host)}</sender-ip>
          <reflector-ip>{_text(a.host)}</reflector-ip>
          <timeout>1</timeout>
        </test-session-request>
        <ikev2-derived xmlns="{BINDING_NS}">
          <ike-peer>{_text(a.name)}</ike-peer>
          <no-sa-policy>initiate</no-sa-policy>
          <initiate-timeout>{INITIATE_TIMEOUT}</initiate-timeout>
        </ikev2-derived>
      </ctrl-connection>
    </client>
    <session-sender>
      <test-session>
        <name>{SESSION}</name>
        <ctrl-connection>{CONNECTION}</ctrl-connection>
        <test-session-request>r1</test-session-request>
        <number-of-packets>{count}</number-of-packets>
        <periodic-interval>{interval:.6f}</periodic-interval>
      </test-session>
    </session-sender>
  </twamp>
</config>"""
