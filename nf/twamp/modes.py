"""The TWAMP Modes word and Accept values (RFC 4656 s3.1/s3.3, RFC 5357, 5618, 5938, 6038, 7717).

Modes is a set of flags: the server offers a set, the client selects exactly one security mode and may add
feature bits the server offered. Keeping this as an IntFlag lets codecs carry the raw word and policy code
reason about sets.
"""

from __future__ import annotations

import enum


class Modes(enum.IntFlag):
    UNAUTHENTICATED = 1
    AUTHENTICATED = 2
    ENCRYPTED = 4
    MIXED = 8  # RFC 5618: unauthenticated TEST, encrypted CONTROL
    INDIVIDUAL_SESSION_CONTROL = 16  # RFC 5938
    REFLECT_OCTETS = 32  # RFC 6038
    SYMMETRICAL_SIZE = 64  # RFC 6038
    IKEV2_DERIVED = 128  # RFC 7717


SECURITY_MODES = Modes.UNAUTHENTICATED | Modes.AUTHENTICATED | Modes.ENCRYPTED | Modes.MIXED
FEATURE_MODES = (
    Modes.INDIVIDUAL_SESSION_CONTROL | Modes.REFLECT_OCTETS | Modes.SYMMETRICAL_SIZE | Modes.IKEV2_DERIVED
)
KNOWN_MODES = SECURITY_MODES | FEATURE_MODES


class SecurityMode(enum.Enum):
    """The one security mode of a control connection; decides the control crypto and test packet formats."""

    UNAUTHENTICATED = "unauthenticated"
    AUTHENTICATED = "authenticated"
    ENCRYPTED = "encrypted"
    MIXED = "mixed"

    @property
    def flag(self) -> Modes:
        return _FLAG_OF[self]

    @property
    def control_is_protected(self) -> bool:
        """True when the control stream is AES-CBC encrypted with HMAC (all modes but unauthenticated)."""
        return self is not SecurityMode.UNAUTHENTICATED

    @property
    def test_is_protected(self) -> bool:
        """True when test packets use the authenticated/encrypted formats (mixed uses the open formats)."""
        return self in (SecurityMode.AUTHENTICATED, SecurityMode.ENCRYPTED)

    @classmethod
    def from_modes(cls, word: int) -> SecurityMode | None:
        """The single security mode in a selected Mode word, or None when there is not exactly one."""
        chosen = [mode for mode in cls if word & mode.flag]
        return chosen[0] if len(chosen) == 1 else None


_FLAG_OF = {
    SecurityMode.UNAUTHENTICATED: Modes.UNAUTHENTICATED,
    SecurityMode.AUTHENTICATED: Modes.AUTHENTICATED,
    SecurityMode.ENCRYPTED: Modes.ENCRYPTED,
    SecurityMode.MIXED: Modes.MIXED,
}


class Accept(enum.IntEnum):
    """Accept field values (RFC 4656 s3.3, RFC 7717 s5.3 adds 6)."""

    OK = 0
    FAILURE = 1
    INTERNAL_ERROR = 2
    NOT_SUPPORTED = 3
    PERMANENT_RESOURCE_LIMITATION = 4
    TEMPORARY_RESOURCE_LIMITATION = 5
    UNKNOWN_SA = 6  # RFC 7717: the IKEv2 SA named by the Key ID is not known
