"""Why an IKE message or exchange was refused: one counter per reason, one rate-limited log line per reason.

The endpoint serves untrusted UDP, so every refusal is counted (operators read the counters through the
runtime) and logged through a per-reason budget, so a flood of junk costs a few log lines, not a disk.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter

from nf.net.rate_limited_log import RateLimitedLog


class Reason(enum.Enum):
    """Every way the IKE endpoint drops or refuses input, or an SA ends badly."""

    # framing and parsing (before any SA is found)
    TRUNCATED = "truncated"
    BAD_LENGTH = "bad-length"
    NON_ESP_MARKER = "non-esp-marker"
    UNSUPPORTED_MAJOR_VERSION = "unsupported-major-version"
    INVALID_SYNTAX = "invalid-syntax"
    UNSUPPORTED_CRITICAL_PAYLOAD = "unsupported-critical-payload"
    # SA lookup and message-ID window
    UNKNOWN_SPI = "unknown-spi"
    UNEXPECTED_RESPONSE = "unexpected-response"
    OUT_OF_WINDOW = "out-of-window"
    RETRANSMITTED_REQUEST = "retransmitted-request"
    WRONG_EXCHANGE = "wrong-exchange"
    # crypto
    INTEGRITY_CHECK_FAILED = "integrity-check-failed"
    BAD_PADDING = "bad-padding"
    BAD_KEY_EXCHANGE = "bad-key-exchange"
    # negotiation and DoS protection
    NO_PROPOSAL_CHOSEN = "no-proposal-chosen"
    INVALID_KE_PAYLOAD = "invalid-ke-payload"
    COOKIE_REQUIRED = "cookie-required"
    COOKIE_INVALID = "cookie-invalid"
    HALF_OPEN_LIMIT = "half-open-limit"
    SA_LIMIT = "sa-limit"
    # authentication
    AUTHENTICATION_FAILED = "authentication-failed"
    PEER_REFUSED = "peer-refused"
    # lifecycle
    TIMEOUT = "timeout"
    HALF_OPEN_TIMEOUT = "half-open-timeout"
    DELETED_BY_PEER = "deleted-by-peer"
    CHILD_SA_REFUSED = "child-sa-refused"
    REKEY_REFUSED = "rekey-refused"  # we answered a peer's rekey with TEMPORARY_FAILURE


class IKECounters:
    """Counts per reason and logs each reason through its own rate-limited budget."""

    def __init__(self, logger: logging.Logger | None = None, log: RateLimitedLog | None = None) -> None:
        self._counts: Counter[Reason] = Counter()
        self._log = log if log is not None else RateLimitedLog(logger or logging.getLogger("nf.ike"))

    def __repr__(self) -> str:
        return f"IKECounters({dict(self.snapshot())!r})"

    def count(self, reason: Reason, detail: str = "") -> None:
        """Count one event; `detail` must be secret-free (addresses, SPIs, type numbers only)."""
        self._counts[reason] += 1
        self._log.warning(reason.value, "ike: %s%s", reason.value, f" ({detail})" if detail else "")

    def __getitem__(self, reason: Reason) -> int:
        return self._counts[reason]

    def snapshot(self) -> dict[str, int]:
        return {reason.value: n for reason, n in self._counts.items() if n}
