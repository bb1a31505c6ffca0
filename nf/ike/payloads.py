"""IKEv2 payload codecs (RFC 7296 s3.2-s3.14): one field table per structure, one class per payload.

`decode_payloads` walks a payload chain strictly: every length must be at least the fixed part and land
exactly on the end of the chain. Known payload types are decoded whatever their critical bit (s2.5);
an unknown type is skipped unless critical, in which case IKEParseError(UNSUPPORTED_CRITICAL_PAYLOAD)
carries the type for the UNSUPPORTED_CRITICAL_PAYLOAD notify. The Encrypted payload (SK) is returned
as an `EncryptedPayload` holding its raw body: nf.ike.message decrypts it with the keymat.
"""

from __future__ import annotations

import abc
import enum
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nf.ike.errors import IKEParseError, ParseReason
from nf.ike.proposals import Attribute, Proposal, Transform


class Fields:
    """A fixed wire layout as a table of (name, struct format) pairs, big-endian."""

    def __init__(self, *fields: tuple[str, str]) -> None:
        self.names = tuple(name for name, _ in fields)
        self._struct = struct.Struct("!" + "".join(fmt for _, fmt in fields))
        self.size = self._struct.size

    def pack(self, **values: Any) -> bytes:
        return self._struct.pack(*(values[name] for name in self.names))

    def unpack(self, data: bytes, offset: int = 0) -> dict[str, Any]:
        return dict(zip(self.names, self._struct.unpack_from(data, offset), strict=True))


GENERIC_HEADER = Fields(("next_payload", "B"), ("flags", "B"), ("length", "H"))  # s3.2
PROPOSAL = Fields(
    ("last", "B"), ("reserved", "B"), ("length", "H"),
    ("number", "B"), ("protocol", "B"), ("spi_size", "B"), ("num_transforms", "B"),
)  # s3.3.1
TRANSFORM = Fields(
    ("last", "B"), ("reserved", "B"), ("length", "H"),
    ("transform_type", "B"), ("reserved2", "B"), ("transform_id", "H"),
)  # s3.3.2
ATTRIBUTE = Fields(("format_type", "H"), ("length_or_value", "H"))  # s3.3.5
KE_FIXED = Fields(("group", "H"), ("reserved", "H"))  # s3.4
ID_FIXED = Fields(("id_type", "B"), ("reserved", "3s"))  # s3.5
CERT_FIXED = Fields(("encoding", "B"),)  # s3.6, s3.7
AUTH_FIXED = Fields(("method", "B"), ("reserved", "3s"))  # s3.8
NOTIFY_FIXED = Fields(("protocol", "B"), ("spi_size", "B"), ("notify_type", "H"))  # s3.10
DELETE_FIXED = Fields(("protocol", "B"), ("spi_size", "B"), ("num_spis", "H"))  # s3.11

CRITICAL = 0x80
MORE_PROPOSALS = 2
MORE_TRANSFORMS = 3
ATTRIBUTE_TV = 0x8000
MAX_PAYLOAD = 0xFFFF


class PayloadType(enum.IntEnum):
    NONE = 0
    SA = 33
    KE = 34
    IDI = 35
    IDR = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSI = 44
    TSR = 45
    SK = 46
    CP = 47
    EAP = 48
    SKF = 53


class NotifyType(enum.IntEnum):
    """Notify Message Types (RFC 7296 s3.10.1 and later RFCs); errors are below 16384."""

    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396
    ADDITIONAL_IP4_ADDRESS = 16397
    ADDITIONAL_IP6_ADDRESS = 16398
    NO_ADDITIONAL_ADDRESSES = 16399
    UPDATE_SA_ADDRESSES = 16400
    COOKIE2 = 16401
    NO_NATS_ALLOWED = 16402
    MULTIPLE_AUTH_SUPPORTED = 16404
    ANOTHER_AUTH_FOLLOWS = 16405
    REDIRECT_SUPPORTED = 16406
    EAP_ONLY_AUTHENTICATION = 16417
    CHILDLESS_IKEV2_SUPPORTED = 16418
    IKEV2_FRAGMENTATION_SUPPORTED = 16430
    SIGNATURE_HASH_ALGORITHMS = 16431
    IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420

    @property
    def is_error(self) -> bool:
        return self < 16384


class CertEncoding(enum.IntEnum):
    X509_SIGNATURE = 4


def _bad(payload: str, detail: str) -> IKEParseError:
    return IKEParseError(ParseReason.BAD_PAYLOAD, f"{payload}: {detail}")


class Payload(abc.ABC):
    """Base of every payload class: TYPE is the payload type, bodies exclude the generic header.

    Decodable payloads also have a `decode_body(body)` classmethod; nf.ike.message handles SK.
    """

    TYPE: ClassVar[int]

    @abc.abstractmethod
    def encode_body(self) -> bytes:
        """The payload after its 4-octet generic header."""

    @property
    def payload_type(self) -> int:
        return self.TYPE


# --- SA (s3.3) -------------------------------------------------------------------------------------


def _encode_attributes(attributes: Iterable[Attribute]) -> bytes:
    out = bytearray()
    for attr in attributes:
        if attr.tv:
            if len(attr.value) != 2:
                raise ValueError("a TV attribute value is 2 octets")
            value = int.from_bytes(attr.value, "big")
            out += ATTRIBUTE.pack(format_type=ATTRIBUTE_TV | attr.attr_type, length_or_value=value)
        else:
            out += ATTRIBUTE.pack(format_type=attr.attr_type, length_or_value=len(attr.value)) + attr.value
    return bytes(out)


def _decode_attributes(data: bytes) -> tuple[Attribute, ...]:
    attrs: list[Attribute] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < ATTRIBUTE.size:
            raise _bad("SA", "truncated transform attribute")
        fields = ATTRIBUTE.unpack(data, offset)
        offset += ATTRIBUTE.size
        if fields["format_type"] & ATTRIBUTE_TV:
            value = struct.pack("!H", fields["length_or_value"])
            attrs.append(Attribute(fields["format_type"] & 0x7FFF, value, True))
        else:
            end = offset + fields["length_or_value"]
            if end > len(data):
                raise _bad("SA", "TLV attribute overruns its transform")
            attrs.append(Attribute(fields["format_type"], data[offset:end], False))
            offset = end
    return tuple(attrs)


def _encode_transform(transform: Transform, last: bool) -> bytes:
    attrs = _encode_attributes(transform.attributes)
    return (
        TRANSFORM.pack(
            last=0 if last else MORE_TRANSFORMS,
            reserved=0,
            length=TRANSFORM.size + len(attrs),
            transform_type=transform.transform_type,
            reserved2=0,
            transform_id=transform.transform_id,
        )
        + attrs
    )


def _encode_proposal(proposal: Proposal, last: bool) -> bytes:
    if len(proposal.transforms) > 255 or len(proposal.spi) > 255:
        raise ValueError("too many transforms or too long an SPI")
    count = len(proposal.transforms)
    transforms = b"".join(_encode_transform(t, i == count - 1) for i, t in enumerate(proposal.transforms))
    return (
        PROPOSAL.pack(
            last=0 if last else MORE_PROPOSALS,
            reserved=0,
            length=PROPOSAL.size + len(proposal.spi) + len(transforms),
            number=proposal.number,
            protocol=proposal.protocol,
            spi_size=len(proposal.spi),
            num_transforms=count,
        )
        + proposal.spi
        + transforms
    )


def _decode_transforms(data: bytes, count: int) -> tuple[Transform, ...]:
    transforms: list[Transform] = []
    offset = 0
    for index in range(count):
        if len(data) - offset < TRANSFORM.size:
            raise _bad("SA", "truncated transform")
        fields = TRANSFORM.unpack(data, offset)
        end = offset + fields["length"]
        if fields["length"] < TRANSFORM.size or end > len(data):
            raise _bad("SA", f"transform length {fields['length']}")
        expected_last = 0 if index == count - 1 else MORE_TRANSFORMS
        if fields["last"] != expected_last:
            raise _bad("SA", "transform Last Substruc disagrees with Num Transforms")
        attrs = _decode_attributes(data[offset + TRANSFORM.size : end])
        transforms.append(Transform(fields["transform_type"], fields["transform_id"], attrs))
        offset = end
    if offset != len(data):
        raise _bad("SA", "octets after the last transform")
    return tuple(transforms)


@dataclass(frozen=True)
class SAPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.SA
    proposals: tuple[Proposal, ...]

    def encode_body(self) -> bytes:
        count = len(self.proposals)
        return b"".join(_encode_proposal(p, i == count - 1) for i, p in enumerate(self.proposals))

    @classmethod
    def decode_body(cls, body: bytes) -> SAPayload:
        proposals: list[Proposal] = []
        offset = 0
        while offset < len(body):
            if len(body) - offset < PROPOSAL.size:
                raise _bad("SA", "truncated proposal")
            fields = PROPOSAL.unpack(body, offset)
            end = offset + fields["length"]
            if fields["length"] < PROPOSAL.size + fields["spi_size"] or end > len(body):
                raise _bad("SA", f"proposal length {fields['length']}")
            is_last = end == len(body)
            if fields["last"] != (0 if is_last else MORE_PROPOSALS):
                raise _bad("SA", "proposal Last Substruc disagrees with the payload length")
            spi_end = offset + PROPOSAL.size + fields["spi_size"]
            spi = body[offset + PROPOSAL.size : spi_end]
            transforms = _decode_transforms(body[spi_end:end], fields["num_transforms"])
            proposals.append(Proposal(fields["number"], fields["protocol"], spi, transforms))
            offset = end
        if not proposals:
            raise _bad("SA", "no proposals")
        return cls(tuple(proposals))


# --- Simple payloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KEPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.KE
    group: int
    data: bytes

    def encode_body(self) -> bytes:
        return KE_FIXED.pack(group=self.group, reserved=0) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> KEPayload:
        if len(body) < KE_FIXED.size:
            raise _bad("KE", "shorter than its fixed part")
        return cls(KE_FIXED.unpack(body)["group"], body[KE_FIXED.size :])


NONCE_MIN = 16
NONCE_MAX = 256


@dataclass(frozen=True)
class NoncePayload(Payload):
    """Nonce Data must be 16..256 octets (RFC 7296 s3.9); anything else is INVALID_SYNTAX."""

    TYPE: ClassVar[int] = PayloadType.NONCE
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> NoncePayload:
        if not NONCE_MIN <= len(body) <= NONCE_MAX:
            raise _bad("Nonce", f"{len(body)} octets, not 16..256")
        return cls(body)


@dataclass(frozen=True)
class _IdentificationPayload(Payload):
    """IDi/IDr; RESERVED is kept as received because AUTH covers it (RestOfIDPayload, s2.15)."""

    id_type: int
    data: bytes
    reserved: bytes = b"\0\0\0"

    def encode_body(self) -> bytes:
        return ID_FIXED.pack(id_type=self.id_type, reserved=self.reserved) + self.data

    @property
    def rest_of_id(self) -> bytes:
        """The octets that prf(SK_p, IDx') covers: the payload minus its generic header."""
        return self.encode_body()

    @classmethod
    def decode_body(cls, body: bytes) -> _IdentificationPayload:
        if len(body) < ID_FIXED.size:
            raise _bad("ID", "shorter than its fixed part")
        fields = ID_FIXED.unpack(body)
        return cls(fields["id_type"], body[ID_FIXED.size :], fields["reserved"])


@dataclass(frozen=True)
class IDiPayload(_IdentificationPayload):
    TYPE: ClassVar[int] = PayloadType.IDI


@dataclass(frozen=True)
class IDrPayload(_IdentificationPayload):
    TYPE: ClassVar[int] = PayloadType.IDR


@dataclass(frozen=True)
class _CertificatePayload(Payload):
    encoding: int
    data: bytes

    def encode_body(self) -> bytes:
        return CERT_FIXED.pack(encoding=self.encoding) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> _CertificatePayload:
        if len(body) < CERT_FIXED.size:
            raise _bad("CERT", "no encoding octet")
        return cls(CERT_FIXED.unpack(body)["encoding"], body[CERT_FIXED.size :])


@dataclass(frozen=True)
class CertPayload(_CertificatePayload):
    """CERT: for encoding 4 the data is one DER X.509 certificate."""

    TYPE: ClassVar[int] = PayloadType.CERT


@dataclass(frozen=True)
class CertReqPayload(_CertificatePayload):
    """CERTREQ: for encoding 4 the data is concatenated SHA-1 hashes of trusted CAs' public keys."""

    TYPE: ClassVar[int] = PayloadType.CERTREQ

    @property
    def authorities(self) -> tuple[bytes, ...]:
        return tuple(self.data[i : i + 20] for i in range(0, len(self.data) - 19, 20))


@dataclass(frozen=True)
class AuthPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.AUTH
    method: int
    data: bytes

    def encode_body(self) -> bytes:
        return AUTH_FIXED.pack(method=self.method, reserved=b"\0\0\0") + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> AuthPayload:
        if len(body) <= AUTH_FIXED.size:
            raise _bad("AUTH", "no authentication data")
        return cls(AUTH_FIXED.unpack(body)["method"], body[AUTH_FIXED.size :])


@dataclass(frozen=True)
class NotifyPayload(Payload):
    """Notify; `notify_type` stays an int so unknown types survive decoding (ignored or failed by policy)."""

    TYPE: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""

    def encode_body(self) -> bytes:
        spi_size = len(self.spi)
        fixed = NOTIFY_FIXED.pack(protocol=self.protocol, spi_size=spi_size, notify_type=self.notify_type)
        return fixed + self.spi + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> NotifyPayload:
        if len(body) < NOTIFY_FIXED.size:
            raise _bad("Notify", "shorter than its fixed part")
        fields = NOTIFY_FIXED.unpack(body)
        spi_end = NOTIFY_FIXED.size + fields["spi_size"]
        if spi_end > len(body):
            raise _bad("Notify", "SPI overruns the payload")
        spi = body[NOTIFY_FIXED.size : spi_end]
        return cls(fields["notify_type"], body[spi_end:], fields["protocol"], spi)

    @property
    def is_error(self) -> bool:
        return self.notify_type < 16384


@dataclass(frozen=True)
class DeletePayload(Payload):
    """Delete; an IKE SA delete is protocol 1 with no SPIs (RFC 7296 s3.11)."""

    TYPE: ClassVar[int] = PayloadType.DELETE
    protocol: int
    spis: tuple[bytes, ...] = ()
    spi_size: int = 0

    def encode_body(self) -> bytes:
        if any(len(spi) != self.spi_size for spi in self.spis):
            raise ValueError("every SPI must be spi_size octets")
        fixed = DELETE_FIXED.pack(protocol=self.protocol, spi_size=self.spi_size, num_spis=len(self.spis))
        return fixed + b"".join(self.spis)

    @classmethod
    def decode_body(cls, body: bytes) -> DeletePayload:
        if len(body) < DELETE_FIXED.size:
            raise _bad("Delete", "shorter than its fixed part")
        fields = DELETE_FIXED.unpack(body)
        size, count = fields["spi_size"], fields["num_spis"]
        rest = body[DELETE_FIXED.size :]
        if len(rest) != size * count or (count and not size):
            raise _bad("Delete", "SPI count and size disagree with the payload length")
        spis = tuple(rest[i * size : (i + 1) * size] for i in range(count))
        return cls(fields["protocol"], spis, size)


@dataclass(frozen=True)
class VendorIdPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.VENDOR_ID
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> VendorIdPayload:
        return cls(body)


@dataclass(frozen=True)
class OpaquePayload(Payload):
    """A known payload we never act on (TSi/TSr, CP, EAP, SKF): kept so exchanges can see it arrived."""

    kind: int
    body: bytes
    TYPE: ClassVar[int] = 0

    def encode_body(self) -> bytes:
        return self.body

    @property
    def payload_type(self) -> int:
        return self.kind


@dataclass(frozen=True)
class EncryptedPayload(Payload):
    """SK as it sits on the wire: the first inner payload type and IV | ciphertext | ICV."""

    TYPE: ClassVar[int] = PayloadType.SK
    inner_first: int
    body: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return self.body


_DECODERS: dict[int, Callable[[bytes], Payload]] = {
    cls.TYPE: cls.decode_body
    for cls in (
        SAPayload, KEPayload, IDiPayload, IDrPayload, CertPayload, CertReqPayload, AuthPayload,
        NoncePayload, NotifyPayload, DeletePayload, VendorIdPayload,
    )
}
_OPAQUE = frozenset((PayloadType.TSI, PayloadType.TSR, PayloadType.CP, PayloadType.EAP, PayloadType.SKF))


def encode_payloads(payloads: Sequence[Payload], *, last_next: int = PayloadType.NONE) -> tuple[int, bytes]:
    """(type of the first payload, the chain); `last_next` goes in the last header (SK for a prefix)."""
    out = bytearray()
    for index, payload in enumerate(payloads):
        body = payload.encode_body()
        length = GENERIC_HEADER.size + len(body)
        if length > MAX_PAYLOAD:
            raise ValueError(f"payload type {payload.payload_type} exceeds 65535 octets")
        following = payloads[index + 1].payload_type if index + 1 < len(payloads) else last_next
        out += GENERIC_HEADER.pack(next_payload=following, flags=0, length=length) + body
    first = payloads[0].payload_type if payloads else last_next
    return first, bytes(out)


def decode_payloads(first: int, data: bytes, *, allow_sk: bool = True) -> list[Payload]:
    """Decode a chain that must end exactly at the end of `data`; SK (if allowed) must come last."""
    payloads: list[Payload] = []
    kind = first
    offset = 0
    while kind != PayloadType.NONE:
        if len(data) - offset < GENERIC_HEADER.size:
            raise IKEParseError(ParseReason.TRUNCATED, f"payload type {kind} header past the end")
        header = GENERIC_HEADER.unpack(data, offset)
        end = offset + header["length"]
        if header["length"] < GENERIC_HEADER.size or end > len(data):
            raise IKEParseError(ParseReason.BAD_LENGTH, f"payload type {kind} length {header['length']}")
        body = data[offset + GENERIC_HEADER.size : end]
        if kind == PayloadType.SK:
            if not allow_sk:
                raise IKEParseError(ParseReason.SK_NOT_LAST, "SK nested inside SK")
            if end != len(data):
                raise IKEParseError(ParseReason.SK_NOT_LAST, "octets after the SK payload")
            payloads.append(EncryptedPayload(header["next_payload"], body))
            return payloads
        decoder = _DECODERS.get(kind)
        if decoder is not None:
            payloads.append(decoder(body))
        elif kind in _OPAQUE:
            payloads.append(OpaquePayload(kind, body))
        elif header["flags"] & CRITICAL:
            raise IKEParseError(
                ParseReason.UNSUPPORTED_CRITICAL_PAYLOAD, f"unknown critical type {kind}", payload_type=kind
            )
        kind = header["next_payload"]
        offset = end
    if offset != len(data):
        raise IKEParseError(ParseReason.BAD_LENGTH, f"{len(data) - offset} octets after the last payload")
    return payloads
