"""TWAMP-Test packet codecs (RFC 4656 s4.1.2, RFC 5357 s4.1.2/s4.2.1, RFC 5618, RFC 6038).

Every wire layout is a table of (field, struct format) rows; MBZ rows use pad formats ("12x") so they are
written as zeros and skipped on receipt. Test packets do not have their MBZ checked on receipt: RFC 7750
and RFC 8186 give meaning to some of those octets, and a reflector that rejected them would break those
peers. Timestamps are carried as raw 64-bit NTP integers so that a copied field survives byte for byte.

Crypto (RFC 4656 s4.1.2): authenticated mode encrypts the first 16-octet block with AES-ECB; encrypted mode
encrypts everything before the HMAC field with AES-CBC and a zero IV. The HMAC (HMAC-SHA1, 16 octets) always
covers the plaintext of the encrypted part, never the padding.
"""

from __future__ import annotations

import enum
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys
from nf.twamp.timestamps import NTP_UNIX_OFFSET

__all__ = [
    "REFLECTOR_AUTH",
    "REFLECTOR_OPEN",
    "SENDER_AUTH",
    "SENDER_AUTH_SYMMETRIC",
    "SENDER_OPEN",
    "SENDER_OPEN_SYMMETRIC",
    "Layout",
    "ReflectorPacket",
    "SenderPacket",
    "TestPacketCodec",
    "TestPacketError",
    "TestPacketErrorReason",
    "ntp_from_ns",
    "ntp_from_unix",
    "ntp_now",
    "unix_from_ntp",
]

MAX_UDP_PAYLOAD = 65507  # IPv4 bound; also the largest reply the reflector ever builds
_NTP_FRACTION = 1 << 32


def ntp_from_unix(unix_time: float) -> int:
    """64-bit NTP timestamp (seconds << 32 | fraction) of a Unix time."""
    seconds = int(unix_time // 1)
    fraction = int((unix_time - seconds) * _NTP_FRACTION) & 0xFFFFFFFF
    return (((seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | fraction


_NTP_UNIX_OFFSET_NS = NTP_UNIX_OFFSET * 1_000_000_000


def ntp_from_ns(unix_ns: int) -> int:
    """64-bit NTP timestamp of integer Unix nanoseconds: exact, for kernel timestamps on the fast path.

    One expression: whole seconds times 2^32 divide exactly, so this equals seconds << 32 | fraction (the
    fraction floored), and the mask wraps the seconds into the NTP era like the 32-bit field does.
    """
    return (((unix_ns + _NTP_UNIX_OFFSET_NS) << 32) // 1_000_000_000) & 0xFFFFFFFFFFFFFFFF


def ntp_now(time_ns: Callable[[], int]) -> int:
    """ntp_from_ns(time_ns()) in one call (the clock is injected): the reflector's T3 clock, per packet."""
    return (((time_ns() + _NTP_UNIX_OFFSET_NS) << 32) // 1_000_000_000) & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(ntp: int) -> float:
    """Unix time of a 64-bit NTP timestamp; seconds below 2^31 are read as NTP era 1 (from 2036 on)."""
    seconds = ntp >> 32
    if seconds < 0x80000000:
        seconds += 1 << 32
    return float(seconds - NTP_UNIX_OFFSET) + (ntp & 0xFFFFFFFF) / _NTP_FRACTION


class TestPacketErrorReason(enum.Enum):
    __test__ = False

    SHORT = "short"
    TOO_LONG = "too-long"
    BAD_HMAC = "bad-hmac"


class TestPacketError(ValueError):
    """A test packet that cannot be accepted; `reason` names the counter it belongs to."""

    __test__ = False

    def __init__(self, reason: TestPacketErrorReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


class Layout:
    """One wire format as a field table; named fields are packed/unpacked in table order."""

    __slots__ = ("fields", "name", "names", "offsets", "size", "struct")

    def __init__(self, name: str, fields: tuple[tuple[str, str], ...]) -> None:
        self.name = name
        self.fields = fields
        self.struct = struct.Struct("!" + "".join(fmt for _, fmt in fields))
        self.size = self.struct.size
        self.names = tuple(n for n, fmt in fields if not fmt.endswith("x"))
        offsets: dict[str, int] = {}
        position = 0
        for n, fmt in fields:
            offsets[n] = position
            position += struct.calcsize("!" + fmt)
        self.offsets = offsets

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, size={self.size})"


# RFC 4656 s4.1.2 / RFC 5357 s4.1.2: Session-Sender, unauthenticated and mixed (RFC 5618).
SENDER_OPEN = Layout("sender-open", (("seq", "I"), ("timestamp", "Q"), ("error_estimate", "H")))
# RFC 6038 s4.2: Symmetrical Size, unauthenticated: 27 MBZ octets make the header as long as the reply's.
SENDER_OPEN_SYMMETRIC = Layout(
    "sender-open-symmetric", (("seq", "I"), ("timestamp", "Q"), ("error_estimate", "H"), ("mbz", "27x"))
)
# RFC 4656 s4.1.2: Session-Sender, authenticated and encrypted.
SENDER_AUTH = Layout(
    "sender-auth",
    (
        ("seq", "I"),
        ("mbz1", "12x"),
        ("timestamp", "Q"),
        ("error_estimate", "H"),
        ("mbz2", "6x"),
        ("hmac", "16s"),
    ),
)
# RFC 6038 Symmetrical Size, authenticated/encrypted: the ordinary protected header (HMAC at 32, the same
# coverage), then 64 MBZ octets so the packet is as long as the reply's header. The RFC figure could not be
# read here; this is how two independent implementations lay it out (slogr-agent-kotlin PacketPadding.kt and
# SenderEncryptUPacket.kt, ncode/twamp server.go), so it is what a peer sends.
SENDER_AUTH_SYMMETRIC = Layout(
    "sender-auth-symmetric",
    (
        ("seq", "I"),
        ("mbz1", "12x"),
        ("timestamp", "Q"),
        ("error_estimate", "H"),
        ("mbz2", "6x"),
        ("hmac", "16s"),
        ("mbz3", "64x"),
    ),
)
# RFC 5357 s4.2.1: Session-Reflector, unauthenticated and mixed.
REFLECTOR_OPEN = Layout(
    "reflector-open",
    (
        ("seq", "I"),
        ("timestamp", "Q"),
        ("error_estimate", "H"),
        ("mbz1", "2x"),
        ("receive_timestamp", "Q"),
        ("sender_seq", "I"),
        ("sender_timestamp", "Q"),
        ("sender_error_estimate", "H"),
        ("mbz2", "2x"),
        ("sender_ttl", "B"),
    ),
)
# RFC 5357 s4.2.1: Session-Reflector, authenticated and encrypted (seven 16-octet blocks).
REFLECTOR_AUTH = Layout(
    "reflector-auth",
    (
        ("seq", "I"),
        ("mbz1", "12x"),
        ("timestamp", "Q"),
        ("error_estimate", "H"),
        ("mbz2", "6x"),
        ("receive_timestamp", "Q"),
        ("mbz3", "8x"),
        ("sender_seq", "I"),
        ("mbz4", "12x"),
        ("sender_timestamp", "Q"),
        ("sender_error_estimate", "H"),
        ("mbz5", "6x"),
        ("sender_ttl", "B"),
        ("mbz6", "15x"),
        ("hmac", "16s"),
    ),
)


@dataclass(frozen=True, slots=True)
class SenderPacket:
    """A Session-Sender packet with its crypto removed; timestamps are 64-bit NTP integers."""

    seq: int
    timestamp: int
    error_estimate: int  # the raw 16-bit word (S, Z, Scale, Multiplier), copied verbatim by reflectors
    padding: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class ReflectorPacket:
    seq: int
    timestamp: int
    error_estimate: int
    receive_timestamp: int
    sender_seq: int
    sender_timestamp: int
    sender_error_estimate: int
    sender_ttl: int
    padding: bytes = field(default=b"", repr=False)


class _Crypto:
    """The packet protection of one security mode, over a given layout (which part, which cipher)."""

    __slots__ = ("_decrypt_block", "_encrypt_block", "_keys", "_mode", "covered", "hmac_offset", "size")

    def __init__(self, mode: SecurityMode, keys: TestSessionKeys, layout: Layout) -> None:
        self._mode = mode
        self._keys = keys
        self.hmac_offset = layout.offsets["hmac"]
        self.size = layout.size  # the header may go on past the HMAC (Symmetrical Size MBZ octets)
        # Octets encrypted and HMACed: the first block (authenticated) or all before the HMAC (encrypted).
        self.covered = 16 if mode is SecurityMode.AUTHENTICATED else self.hmac_offset
        # Prepared ECB contexts: one per codec, so a codec must stay on one thread (each session's does).
        encryptor, decryptor = keys.ecb_contexts()
        self._encrypt_block = encryptor.update
        self._decrypt_block = decryptor.update

    def __repr__(self) -> str:
        return f"_Crypto({self._mode.value})"

    def protect(self, buf: bytearray) -> None:
        """In place: write the HMAC of the plaintext, then encrypt the covered part."""
        covered = self.covered
        plain = bytes(buf[:covered])
        buf[self.hmac_offset : self.hmac_offset + 16] = self._keys.hmac16(plain)
        if covered == 16:
            buf[:16] = self._encrypt_block(plain)
        else:
            buf[:covered] = self._keys.cbc_encrypt(plain)

    def unprotect(self, data: bytes | bytearray | memoryview) -> bytes:
        """The plaintext header (the layout's whole size); raises TestPacketError when the HMAC is wrong."""
        covered = self.covered
        head = bytes(data[: self.size])
        plain = self._decrypt_block(head[:16]) if covered == 16 else self._keys.cbc_decrypt(head[:covered])
        at = self.hmac_offset
        if not hmac.compare_digest(self._keys.hmac16(plain), head[at : at + 16]):
            raise TestPacketError(TestPacketErrorReason.BAD_HMAC, "HMAC does not match the packet")
        return plain + head[covered:]


class TestPacketCodec:
    """Encodes and decodes both directions of one test session's packets.

    Built from the session's security mode, keys and RFC 6038 Symmetrical Size flag; the layouts and crypto
    are chosen once here so the per-packet work is a struct call plus, when protected, one cipher pass.
    """

    __test__ = False
    __slots__ = (
        "mode",
        "reflector_crypto",
        "reflector_layout",
        "sender_crypto",
        "sender_layout",
        "symmetric",
    )

    def __init__(self, mode: SecurityMode, keys: TestSessionKeys | None, symmetric: bool = False) -> None:
        if mode.test_is_protected != (keys is not None):
            raise ValueError(f"{mode.value} mode {'needs' if keys is None else 'takes no'} test session keys")
        self.mode = mode
        self.symmetric = symmetric
        if keys is None:
            self.sender_layout = SENDER_OPEN_SYMMETRIC if symmetric else SENDER_OPEN
            self.reflector_layout = REFLECTOR_OPEN
            self.sender_crypto: _Crypto | None = None
            self.reflector_crypto: _Crypto | None = None
        else:
            self.sender_layout = SENDER_AUTH_SYMMETRIC if symmetric else SENDER_AUTH
            self.reflector_layout = REFLECTOR_AUTH
            self.sender_crypto = _Crypto(mode, keys, self.sender_layout)
            self.reflector_crypto = _Crypto(mode, keys, self.reflector_layout)

    def __repr__(self) -> str:
        return f"TestPacketCodec({self.mode.value}, symmetric={self.symmetric})"

    @property
    def truncation(self) -> int:
        """Octets the reflector drops from the padding to keep both directions equal (27 / 64 / 0)."""
        return self.reflector_layout.size - self.sender_layout.size

    # Session-Sender packets -------------------------------------------------------------------------------

    def encode_sender(self, packet: SenderPacket) -> bytes:
        buf = self.prepare_sender(packet.seq, packet.padding)
        return bytes(self.stamp_sender(buf, packet.timestamp, packet.error_estimate))

    def prepare_sender(self, seq: int, padding: bytes) -> bytearray:
        """Everything that does not depend on the send time, so the clock is read as late as possible.

        In authenticated mode this already encrypts and HMACs the sequence block (the reason that mode
        leaves the timestamp in clear); stamp_sender then only writes the timestamp.
        """
        layout = self.sender_layout
        if layout.size + len(padding) > MAX_UDP_PAYLOAD:
            raise TestPacketError(TestPacketErrorReason.TOO_LONG, f"{len(padding)} octets of padding")
        buf = bytearray(layout.size + len(padding))
        _pack_sender(layout, buf, seq, 0, 0)
        buf[layout.size :] = padding
        if self.sender_crypto is not None and self.mode is SecurityMode.AUTHENTICATED:
            self.sender_crypto.protect(buf)
        return buf

    def stamp_sender(self, buf: bytearray, timestamp: int, error_estimate: int) -> bytearray:
        """Writes the send time into a prepared buffer (and, in encrypted mode, encrypts and HMACs it)."""
        layout = self.sender_layout
        struct.pack_into("!QH", buf, layout.offsets["timestamp"], timestamp, error_estimate)
        if self.sender_crypto is not None and self.mode is SecurityMode.ENCRYPTED:
            self.sender_crypto.protect(buf)
        return buf

    def decode_sender(self, data: bytes | bytearray | memoryview) -> SenderPacket:
        layout = self.sender_layout
        if len(data) < layout.size:
            raise TestPacketError(
                TestPacketErrorReason.SHORT, f"{len(data)} octets, {layout.name} needs {layout.size}"
            )
        head = data if self.sender_crypto is None else self.sender_crypto.unprotect(data)
        values = layout.struct.unpack_from(head)
        return SenderPacket(values[0], values[1], values[2], bytes(data[layout.size :]))

    # Session-Reflector packets ----------------------------------------------------------------------------

    def encode_reflector(self, packet: ReflectorPacket) -> bytes:
        layout = self.reflector_layout
        if layout.size + len(packet.padding) > MAX_UDP_PAYLOAD:
            raise TestPacketError(TestPacketErrorReason.TOO_LONG, f"{len(packet.padding)} octets of padding")
        buf = bytearray(layout.size + len(packet.padding))
        values: list[int | bytes] = [
            packet.seq,
            packet.timestamp,
            packet.error_estimate,
            packet.receive_timestamp,
            packet.sender_seq,
            packet.sender_timestamp,
            packet.sender_error_estimate,
            packet.sender_ttl,
        ]
        if self.reflector_crypto is not None:
            values.append(bytes(16))
        layout.struct.pack_into(buf, 0, *values)
        buf[layout.size :] = packet.padding
        if self.reflector_crypto is not None:
            self.reflector_crypto.protect(buf)
        return bytes(buf)

    def decode_reflector(self, data: bytes | bytearray | memoryview) -> ReflectorPacket:
        layout = self.reflector_layout
        if len(data) < layout.size:
            raise TestPacketError(
                TestPacketErrorReason.SHORT, f"{len(data)} octets, {layout.name} needs {layout.size}"
            )
        head = data if self.reflector_crypto is None else self.reflector_crypto.unprotect(data)
        v = layout.struct.unpack_from(head)
        return ReflectorPacket(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], bytes(data[layout.size :]))


def _pack_sender(layout: Layout, buf: bytearray, seq: int, timestamp: int, error_estimate: int) -> None:
    if "hmac" in layout.offsets:
        layout.struct.pack_into(buf, 0, seq, timestamp, error_estimate, bytes(16))
    else:
        layout.struct.pack_into(buf, 0, seq, timestamp, error_estimate)
