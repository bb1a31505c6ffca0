"""NTP-format timestamps and the Error Estimate word shared by TWAMP-Control and TWAMP-Test (RFC 4656 s4.1.2).

Time is always passed in as a float of Unix seconds so the sans-IO code never reads a clock itself.
Decoding follows RFC 4330's era rule, so timestamps stay right from 1968 to 2104, across the 2036 wrap.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_TS = struct.Struct("!II")
_EE = struct.Struct("!H")


def encode_timestamp(unix_time: float) -> bytes:
    """8 octets: seconds since 1900 and a 2^-32 s fraction."""
    seconds = int(unix_time)
    fraction = int((unix_time - seconds) * 4_294_967_296.0) & 0xFFFFFFFF
    return _TS.pack((seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF, fraction)


def decode_timestamp(data: bytes | memoryview, offset: int = 0) -> float:
    seconds: int
    fraction: int
    seconds, fraction = _TS.unpack_from(data, offset)
    if not seconds & 0x8000_0000:  # RFC 4330 s3: MSB clear means NTP era 1 (from 2036-02-07)
        seconds += 1 << 32
    return float(seconds - NTP_UNIX_OFFSET) + fraction / 4_294_967_296.0


@dataclass(frozen=True, slots=True)
class ErrorEstimate:
    """S bit, Scale and Multiplier; error = Multiplier * 2^-32 * 2^Scale seconds."""

    synchronized: bool
    scale: int
    multiplier: int

    def encode(self) -> bytes:
        sync_bit = 0x8000 if self.synchronized else 0
        return _EE.pack(sync_bit | ((self.scale & 0x3F) << 8) | (self.multiplier & 0xFF))

    @classmethod
    def decode(cls, data: bytes | memoryview, offset: int = 0) -> ErrorEstimate:
        (word,) = _EE.unpack_from(data, offset)
        return cls(bool(word & 0x8000), (word >> 8) & 0x3F, word & 0xFF)

    @property
    def seconds(self) -> float:
        return self.multiplier * 2.0 ** (self.scale - 32)

    @classmethod
    def from_seconds(cls, error: float, synchronized: bool) -> ErrorEstimate:
        """Smallest Scale whose Multiplier (1..255) covers error; owamp's 'unknown' value when it cannot."""
        for scale in range(64):
            multiplier = int(-(-error // 2.0 ** (scale - 32)))  # ceil
            if multiplier <= 0xFF:
                return cls(synchronized, scale, max(1, multiplier))
        return cls(False, 0x3F, 0xFF)


UNKNOWN_ERROR = ErrorEstimate(False, 0x3F, 0xFF)
