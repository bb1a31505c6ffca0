"""Whole IKEv2 messages (RFC 7296 s3.1): the header codec, SK encryption through the keymat, and the
non-ESP marker that frames IKE on ports other than 500 (RFC 3948, strongSwan sender.c/receiver.c).

Receiving is two-step on purpose: `decode_header` lets the endpoint find the IKE SA (and its keymat)
from the SPIs before `decode_message` decrypts. A message with an SK payload carries all its payloads
inside SK; unprotected payloads in front of SK are rejected.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from nf.ike.errors import IKEParseError, ParseReason
from nf.ike.keymat import IKEKeymat
from nf.ike.payloads import (
    GENERIC_HEADER,
    EncryptedPayload,
    Fields,
    NotifyPayload,
    Payload,
    PayloadType,
    decode_payloads,
    encode_payloads,
)

HEADER = Fields(
    ("spi_i", "8s"), ("spi_r", "8s"), ("next_payload", "B"), ("version", "B"),
    ("exchange", "B"), ("flags", "B"), ("message_id", "I"), ("length", "I"),
)  # s3.1
IKE_VERSION = 0x20
IKE_PORT = 500
NON_ESP_MARKER = bytes(4)
MAX_MESSAGE = 0xFFFF  # one UDP datagram


class ExchangeType(enum.IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37


class HeaderFlags(enum.IntFlag):
    INITIATOR = 0x08
    VERSION = 0x10
    RESPONSE = 0x20


@dataclass(frozen=True)
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    major_version: int
    minor_version: int
    exchange: int
    flags: int
    message_id: int
    length: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & HeaderFlags.RESPONSE)

    @property
    def from_initiator(self) -> bool:
        """True when the sender is the original initiator of the IKE SA (I flag)."""
        return bool(self.flags & HeaderFlags.INITIATOR)


def decode_header(data: bytes) -> Header:
    """The fixed header, checking that Length matches the datagram and the major version is 2.

    On UNSUPPORTED_MAJOR_VERSION the Length was already checked, so a caller answering
    INVALID_MAJOR_VERSION may take the SPIs and Message ID from their fixed offsets.
    """
    if len(data) < HEADER.size:
        raise IKEParseError(ParseReason.TRUNCATED, f"{len(data)} octets, header needs {HEADER.size}")
    fields = HEADER.unpack(data)
    if fields["length"] != len(data):
        raise IKEParseError(ParseReason.BAD_LENGTH, f"header Length {fields['length']}, datagram {len(data)}")
    major = fields["version"] >> 4
    if major != 2:
        raise IKEParseError(ParseReason.UNSUPPORTED_MAJOR_VERSION, f"major version {major}")
    return Header(
        fields["spi_i"], fields["spi_r"], fields["next_payload"], major, fields["version"] & 0x0F,
        fields["exchange"], fields["flags"], fields["message_id"], fields["length"],
    )


P = TypeVar("P", bound=Payload)


@dataclass(frozen=True)
class Message:
    """A decoded or to-be-encoded message; with `encrypted`, `payloads` are the ones inside SK."""

    spi_i: bytes
    spi_r: bytes
    exchange: int
    message_id: int
    is_response: bool
    from_initiator: bool
    payloads: tuple[Payload, ...]
    encrypted: bool = False

    @property
    def flags(self) -> int:
        flags = HeaderFlags(0)
        if self.is_response:
            flags |= HeaderFlags.RESPONSE
        if self.from_initiator:
            flags |= HeaderFlags.INITIATOR
        return int(flags)

    def first(self, kind: type[P]) -> P | None:
        """The first payload of a class (e.g. `msg.first(NoncePayload)`), or None."""
        for payload in self.payloads:
            if isinstance(payload, kind):
                return payload
        return None

    def all(self, kind: type[P]) -> tuple[P, ...]:
        return tuple(p for p in self.payloads if isinstance(p, kind))

    def notifies(self, notify_type: int) -> tuple[NotifyPayload, ...]:
        return tuple(p for p in self.all(NotifyPayload) if p.notify_type == notify_type)


def _header(message: Message, next_payload: int, length: int) -> bytes:
    if len(message.spi_i) != 8 or len(message.spi_r) != 8:
        raise ValueError("IKE SPIs are 8 octets")
    return HEADER.pack(
        spi_i=message.spi_i, spi_r=message.spi_r, next_payload=next_payload, version=IKE_VERSION,
        exchange=message.exchange, flags=message.flags, message_id=message.message_id, length=length,
    )


def encode_message(message: Message, keymat: IKEKeymat | None = None) -> bytes:
    """The message as sent on UDP 500 (no marker); an encrypted message needs the SA's keymat."""
    if not message.encrypted:
        first, chain = encode_payloads(message.payloads)
        return _header(message, first, HEADER.size + len(chain)) + chain
    if keymat is None:
        raise ValueError("an encrypted message needs a keymat")
    inner_first, inner = encode_payloads(message.payloads)
    sk_length = GENERIC_HEADER.size + keymat.sk_body_length(len(inner))
    total = HEADER.size + sk_length
    if total > MAX_MESSAGE:
        raise ValueError(f"message of {total} octets does not fit a datagram")
    aad = _header(message, PayloadType.SK, total)
    aad += GENERIC_HEADER.pack(next_payload=inner_first, flags=0, length=sk_length)
    return aad + keymat.protect(aad, inner)


def decode_message(data: bytes, keymat: IKEKeymat | None = None) -> Message:
    """Decode (and, given the keymat, verify and decrypt) a whole message; IKEParseError on bad input."""
    header = decode_header(data)
    payloads = decode_payloads(header.next_payload, data[HEADER.size :])
    sk = payloads[-1] if payloads else None
    encrypted = isinstance(sk, EncryptedPayload)
    if isinstance(sk, EncryptedPayload):
        if len(payloads) > 1:
            raise IKEParseError(ParseReason.BAD_PAYLOAD, "unprotected payloads before SK")
        if keymat is None:
            raise IKEParseError(ParseReason.SK_WITHOUT_KEYS, "SK payload but no IKE SA keys")
        aad = data[: len(data) - len(sk.body)]
        inner = keymat.unprotect(aad, sk.body)
        payloads = decode_payloads(sk.inner_first, inner, allow_sk=False)
    return Message(
        header.spi_i, header.spi_r, header.exchange, header.message_id,
        header.is_response, header.from_initiator, tuple(payloads), encrypted,
    )


def plain(
    spi_i: bytes, spi_r: bytes, exchange: int, message_id: int, *,
    is_response: bool, from_initiator: bool, payloads: Sequence[Payload],
) -> Message:
    """An unprotected message (IKE_SA_INIT and its error replies)."""
    return Message(spi_i, spi_r, exchange, message_id, is_response, from_initiator, tuple(payloads), False)


def protected(
    spi_i: bytes, spi_r: bytes, exchange: int, message_id: int, *,
    is_response: bool, from_initiator: bool, payloads: Sequence[Payload],
) -> Message:
    """A message whose payloads all go inside SK (everything after IKE_SA_INIT)."""
    return Message(spi_i, spi_r, exchange, message_id, is_response, from_initiator, tuple(payloads), True)


# --- Non-ESP marker (RFC 3948 s2.2; strongSwan: marker iff neither port is 500) -----------------------


def uses_non_esp_marker(local_port: int, remote_port: int) -> bool:
    return local_port != IKE_PORT and remote_port != IKE_PORT


def frame(message: bytes, local_port: int, remote_port: int) -> bytes:
    """The datagram to send: the message, prefixed with 4 zero octets when neither port is 500."""
    return NON_ESP_MARKER + message if uses_non_esp_marker(local_port, remote_port) else message


def unframe(datagram: bytes, local_port: int, remote_port: int) -> bytes:
    """The IKE message inside a received datagram; IKEParseError(NON_ESP_MARKER) for an ESP packet."""
    if not uses_non_esp_marker(local_port, remote_port):
        return datagram
    if len(datagram) < len(NON_ESP_MARKER) or datagram[:4] != NON_ESP_MARKER:
        raise IKEParseError(ParseReason.NON_ESP_MARKER, "no non-ESP marker on a port other than 500")
    return datagram[4:]
