"""Errors raised by the IKEv2 codecs, algorithms, keymat and authentication.

Every error carries a machine-readable reason (an enum member) so the endpoint can count bad input per
reason and pick the notify to answer with, plus a short human detail. Details never contain key
material: they name fields, lengths and type numbers only.
"""

from __future__ import annotations

import enum


class ParseReason(enum.Enum):
    """Why a received IKE message was rejected; one counter per member at the endpoint."""

    TRUNCATED = "truncated"
    BAD_LENGTH = "bad-length"
    UNSUPPORTED_MAJOR_VERSION = "unsupported-major-version"
    UNSUPPORTED_CRITICAL_PAYLOAD = "unsupported-critical-payload"
    BAD_PAYLOAD = "bad-payload"
    SK_NOT_LAST = "sk-not-last"
    SK_WITHOUT_KEYS = "sk-without-keys"
    INTEGRITY_CHECK_FAILED = "integrity-check-failed"
    BAD_PADDING = "bad-padding"
    NON_ESP_MARKER = "non-esp-marker"


class IKEError(Exception):
    """Base of all IKE errors: a reason member plus a secret-free detail string."""

    reason: enum.Enum

    def __init__(self, reason: enum.Enum, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else str(reason.value))


class IKEParseError(IKEError):
    """A message or payload that does not decode; `payload_type` names an unknown critical payload."""

    reason: ParseReason

    def __init__(self, reason: ParseReason, detail: str = "", payload_type: int | None = None) -> None:
        super().__init__(reason, detail)
        self.payload_type = payload_type


class ProposalReason(enum.Enum):
    BAD_PROPOSAL_STRING = "bad-proposal-string"
    NO_PROPOSAL_CHOSEN = "no-proposal-chosen"
    BAD_REPLY = "bad-reply"
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"


class ProposalError(IKEError):
    """Negotiation failed: nothing acceptable offered, or a reply that is not one of our offers."""

    reason: ProposalReason

    def __init__(self, reason: ProposalReason, detail: str = "") -> None:
        super().__init__(reason, detail)


class KeyExchangeReason(enum.Enum):
    BAD_PUBLIC_VALUE = "bad-public-value"
    ZERO_SHARED_SECRET = "zero-shared-secret"


class KeyExchangeError(IKEError):
    """The peer's KE data is malformed or a weak value (off-curve point, 0/1/p-1, all-zero X25519)."""

    reason: KeyExchangeReason

    def __init__(self, reason: KeyExchangeReason, detail: str = "") -> None:
        super().__init__(reason, detail)


class AuthReason(enum.Enum):
    BAD_AUTH_DATA = "bad-auth-data"
    WRONG_AUTH_DATA = "wrong-auth-data"
    UNSUPPORTED_METHOD = "unsupported-method"
    HASH_NOT_NEGOTIATED = "hash-not-negotiated"
    KEY_MISMATCH = "key-mismatch"
    ID_MISMATCH = "id-mismatch"
    UNTRUSTED_CERTIFICATE = "untrusted-certificate"
    BAD_CERTIFICATE = "bad-certificate"
    BAD_IDENTITY = "bad-identity"
    BAD_CREDENTIAL = "bad-credential"


class AuthenticationError(IKEError):
    """The peer's AUTH, certificate or identity is not acceptable (answer AUTHENTICATION_FAILED)."""

    reason: AuthReason

    def __init__(self, reason: AuthReason, detail: str = "") -> None:
        super().__init__(reason, detail)
