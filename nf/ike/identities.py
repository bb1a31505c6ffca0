"""IKE identities (RFC 7296 s3.5) and strongSwan-style identity strings (ikev2-interop.md s4.1).

"192.0.2.1" and "2001:db8::1" are address IDs, "@host" or "host" an FQDN, "user@host" or "@@user@host"
an RFC 822 address, "@#0123ab" a KEY_ID, anything containing "=" a DER DN in X.500 order
("C=CH, O=strongSwan, CN=moon"), and "%any" (or "") the wildcard that matches any peer identity.
strongSwan's "type:value" prefixes (fqdn:, dns:, email:, rfc822:, userfqdn:, keyid:, ipv4:, ipv6:,
asn1dn:, asn1gn:) work too, with "type:#hex" for raw octets.

DN identities are compared like strongSwan's compare_dn (same attributes in the same order, the ASN.1
string type ignored). A DN written as text is encoded with cryptography's defaults (UTF8String, C as
PrintableString), so against a peer's PrintableString value the case of the letters matters, where
strongSwan, encoding both sides as PrintableString, would ignore it.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from nf.ike.errors import AuthenticationError, AuthReason
from nf.ike.payloads import IDiPayload, IDrPayload


class IDType(enum.IntEnum):
    ANY = 0  # never on the wire: the configuration wildcard
    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


_DN_KEYS: dict[str, x509.ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "SN": NameOID.SURNAME,
    "GN": NameOID.GIVEN_NAME,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "UID": NameOID.USER_ID,
}
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_KEY_OF_OID = {oid.dotted_string: key for key, oid in reversed(list(_DN_KEYS.items()))}

# DER tags met in a Name (X.501): SEQUENCE, SET, OBJECT IDENTIFIER, and the strings compared without case.
_SEQUENCE, _SET, _OID = 0x30, 0x31, 0x06
_PRINTABLE_STRING, _IA5_STRING = 0x13, 0x16
_EMAIL_OID = NameOID.EMAIL_ADDRESS.dotted_string

DnAttribute = tuple[str, int, bytes]  # (dotted OID, string tag, value octets)


def _tlv(data: bytes, offset: int) -> tuple[int, bytes, int] | None:
    """One DER element at `offset`: (tag, contents, end offset), or None if malformed or truncated."""
    if offset + 2 > len(data) or data[offset] & 0x1F == 0x1F:
        return None
    tag, first, start = data[offset], data[offset + 1], offset + 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 3 or start + count > len(data):
            return None
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    else:
        length = first
    end = start + length
    return None if end > len(data) else (tag, data[start:end], end)


def _oid_text(body: bytes) -> str | None:
    if not body or body[-1] & 0x80:
        return None
    arcs: list[int] = []
    value = 0
    for octet in body:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def dn_attributes(der: bytes) -> tuple[DnAttribute, ...] | None:
    """Every AttributeTypeAndValue of a DER Name, in order (multi-valued RDNs flattened, as strongSwan
    does); None when `der` is not exactly one well-formed Name."""
    top = _tlv(der, 0)
    if top is None or top[0] != _SEQUENCE or top[2] != len(der):
        return None
    found: list[DnAttribute] = []
    rdns, offset = top[1], 0
    while offset < len(rdns):
        rdn = _tlv(rdns, offset)
        if rdn is None or rdn[0] != _SET:
            return None
        offset, inner = rdn[2], 0
        while inner < len(rdn[1]):
            atv = _tlv(rdn[1], inner)
            if atv is None or atv[0] != _SEQUENCE:
                return None
            inner = atv[2]
            oid = _tlv(atv[1], 0)
            value = _tlv(atv[1], oid[2]) if oid is not None and oid[0] == _OID else None
            dotted = _oid_text(oid[1]) if oid is not None else None
            if value is None or dotted is None or value[2] != len(atv[1]):
                return None
            found.append((dotted, value[0], value[1]))
    return tuple(found)


def dn_equal(a: bytes, b: bytes) -> bool:
    """Whether two DER DNs name the same subject, compared like strongSwan's compare_dn: same attribute
    types in the same order with equal values, ignoring case for PrintableString (and IA5 e-mail)
    pairs, and ignoring the string type otherwise (UTF8String "moon" equals PrintableString "moon")."""
    if a == b:
        return True
    left, right = dn_attributes(a), dn_attributes(b)
    if left is None or right is None or len(left) != len(right):
        return False
    for (oid_a, tag_a, value_a), (oid_b, tag_b, value_b) in zip(left, right, strict=True):
        if oid_a != oid_b or len(value_a) != len(value_b):
            return False
        email = tag_a == _IA5_STRING and oid_a == _EMAIL_OID
        caseless = tag_a == tag_b and (tag_a == _PRINTABLE_STRING or email)
        if (value_a.lower() != value_b.lower()) if caseless else (value_a != value_b):
            return False
    return True


def dn_text(der: bytes) -> str | None:
    """"C=CH, O=Org, CN=moon" for a DER DN (X.500 order, like strongSwan prints it), None if malformed."""
    attributes = dn_attributes(der)
    if attributes is None:
        return None
    parts = []
    for dotted, _, value in attributes:
        text = value.decode("utf-8", "backslashreplace").replace(",", "\\,")
        parts.append(f"{_KEY_OF_OID.get(dotted, dotted)}={text}")
    return ", ".join(parts)


def parse_dn(text: str) -> x509.Name:
    """A DN string in X.500 order ("C=CH, O=Org, CN=moon") as an x509.Name; ',' inside values as '\\,'."""
    attributes: list[x509.NameAttribute[str]] = []
    for part in _UNESCAPED_COMMA.split(text):
        key, sep, value = part.partition("=")
        oid = _DN_KEYS.get(key.strip().upper())
        if not sep or oid is None or not value.strip():
            raise AuthenticationError(AuthReason.BAD_IDENTITY, f"bad DN component {part.strip()!r}")
        try:
            attributes.append(x509.NameAttribute(oid, value.strip().replace("\\,", ",")))
        except ValueError as exc:
            raise AuthenticationError(AuthReason.BAD_IDENTITY, f"bad DN value: {exc}") from None
    return x509.Name([x509.RelativeDistinguishedName([a]) for a in attributes])


@dataclass(frozen=True)
class Identity:
    """An ID payload's type and data; `text` keeps the configured spelling for logs and DN matching."""

    id_type: int
    data: bytes
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> Identity:
        raw = text.strip()
        prefix, sep, rest = raw.partition(":")
        if sep and prefix.lower() in _PREFIX_TYPES and not _looks_like_ipv6(raw):
            return _prefixed(prefix.lower(), rest.strip(), raw)
        if raw in ("", "%any", "%any6"):
            return ANY
        try:
            address = ipaddress.ip_address(raw)
        except ValueError:
            pass
        else:
            kind = IDType.IPV4_ADDR if address.version == 4 else IDType.IPV6_ADDR
            return cls(kind, address.packed, raw)
        if raw.startswith("@#"):
            return _prefixed("keyid", raw[1:], raw)
        if raw.startswith("@@"):
            return cls(IDType.RFC822_ADDR, raw[2:].encode(), raw)
        if raw.startswith("@"):
            return cls(IDType.FQDN, raw[1:].encode(), raw)
        if "=" in raw:
            return _dn(raw, raw)
        if "@" in raw:
            return cls(IDType.RFC822_ADDR, raw.encode(), raw)
        return cls(IDType.FQDN, raw.encode(), raw)

    @classmethod
    def from_payload(cls, payload: IDiPayload | IDrPayload) -> Identity:
        return cls(payload.id_type, payload.data)

    @classmethod
    def from_name(cls, name: x509.Name) -> Identity:
        """The ID_DER_ASN1_DN of a certificate subject (what strongSwan sends by default)."""
        return cls(IDType.DER_ASN1_DN, name.public_bytes(), name.rfc4514_string())

    def to_idi(self) -> IDiPayload:
        self._check_sendable()
        return IDiPayload(self.id_type, self.data)

    def to_idr(self) -> IDrPayload:
        self._check_sendable()
        return IDrPayload(self.id_type, self.data)

    def _check_sendable(self) -> None:
        if self.id_type == IDType.ANY:
            raise ValueError("%any is a wildcard and cannot be sent")

    @property
    def is_any(self) -> bool:
        return self.id_type == IDType.ANY

    def matches(self, received: Identity) -> bool:
        """Whether a received identity satisfies this configured one (%any matches everything)."""
        if self.is_any:
            return True
        if self.id_type != received.id_type:
            return False
        if self.id_type in (IDType.FQDN, IDType.RFC822_ADDR):
            return self.data.lower() == received.data.lower()
        if self.id_type == IDType.DER_ASN1_DN:
            return dn_equal(self.data, received.data)
        return self.data == received.data

    def __str__(self) -> str:
        if self.text:
            return self.text
        if self.id_type in (IDType.IPV4_ADDR, IDType.IPV6_ADDR):
            try:
                return str(ipaddress.ip_address(self.data))
            except ValueError:
                pass
        if self.id_type in (IDType.FQDN, IDType.RFC822_ADDR):
            return self.data.decode("ascii", "backslashreplace")
        if self.id_type == IDType.ANY:
            return "%any"
        if self.id_type == IDType.DER_ASN1_DN and (text := dn_text(self.data)) is not None:
            return text
        return f"{_TYPE_WORD.get(self.id_type, str(self.id_type))}:#{self.data.hex()}"


ANY = Identity(IDType.ANY, b"", "%any")


def _looks_like_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _dn(text: str, raw: str) -> Identity:
    return Identity(IDType.DER_ASN1_DN, parse_dn(text).public_bytes(), raw)


def _address(text: str, raw: str, version: int) -> Identity:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise AuthenticationError(AuthReason.BAD_IDENTITY, f"{raw!r} is not an address") from None
    if address.version != version:
        raise AuthenticationError(AuthReason.BAD_IDENTITY, f"{raw!r} is not IPv{version}")
    return Identity(IDType.IPV4_ADDR if version == 4 else IDType.IPV6_ADDR, address.packed, raw)


_PREFIX_TYPES = {
    "fqdn": IDType.FQDN,
    "dns": IDType.FQDN,
    "email": IDType.RFC822_ADDR,
    "rfc822": IDType.RFC822_ADDR,
    "userfqdn": IDType.RFC822_ADDR,
    "keyid": IDType.KEY_ID,
    "ipv4": IDType.IPV4_ADDR,
    "ipv6": IDType.IPV6_ADDR,
    "asn1dn": IDType.DER_ASN1_DN,
    "asn1gn": IDType.DER_ASN1_GN,
}


def _prefixed(prefix: str, value: str, raw: str) -> Identity:
    """strongSwan's "type:value": "#hex" gives the raw octets for any type; otherwise addresses and
    DNs are parsed (strongSwan would take the string octets verbatim there) and the rest is literal."""
    id_type = _PREFIX_TYPES[prefix]
    if value.startswith("#"):
        try:
            return Identity(id_type, bytes.fromhex(value[1:]), raw)
        except ValueError:
            raise AuthenticationError(AuthReason.BAD_IDENTITY, f"{raw!r}: '#' needs hex") from None
    if id_type in (IDType.IPV4_ADDR, IDType.IPV6_ADDR):
        return _address(value, raw, 4 if id_type == IDType.IPV4_ADDR else 6)
    if id_type == IDType.DER_ASN1_DN:
        return _dn(value, raw)
    return Identity(id_type, value.encode(), raw)


_TYPE_WORD: dict[int, str] = {
    IDType.DER_ASN1_DN: "asn1dn", IDType.DER_ASN1_GN: "asn1gn", IDType.KEY_ID: "keyid",
}
