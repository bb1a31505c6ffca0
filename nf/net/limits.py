"""Resource limits of the TWAMP server and the bookkeeping that admits control connections.

Pure bookkeeping (no sockets, no clock of its own) so the asyncio listener and the reflector share one
definition of each limit and tests can drive it directly. Defaults follow RFC 5357 s3.1/s4.2 for SERVWAIT and
REFWAIT (900 s) and keep the rest small enough that one host cannot exhaust the server.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass


class Refusal(enum.Enum):
    """Why a control connection was refused; the value is the counter name."""

    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_FROM_CLIENT = "too_many_connections_from_client"


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 64
    max_connections_per_client: int = 8
    max_sessions_per_connection: int = 16
    max_pps: float | None = None  # per test session, reflected packets per second; None = unlimited
    servwait: float = 900.0  # seconds a control connection may stay silent (RFC 5357 SERVWAIT)
    refwait: float = 900.0  # seconds a test session may stay silent (RFC 5357 REFWAIT)
    max_message_size: int = 1024  # octets of one control message (bounds RFC 5938 SID lists)

    def __post_init__(self) -> None:
        if min(self.max_connections, self.max_connections_per_client, self.max_sessions_per_connection) < 1:
            raise ValueError("connection and session limits must be at least 1")
        if min(self.servwait, self.refwait, self.max_pps or 1.0) <= 0:
            raise ValueError("max-pps, servwait and refwait must be positive")
        if self.max_message_size < 112:
            raise ValueError("max message size must hold a Request-TW-Session (112 octets)")


class ConnectionTracker:
    """Admits control connections within the total and per-client limits."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._per_client: Counter[str] = Counter()

    @property
    def active(self) -> int:
        return self._per_client.total()

    def admit(self, client: str) -> Refusal | None:
        """Reserve a slot for client, or say why not (nothing is reserved then)."""
        if self.active >= self._limits.max_connections:
            return Refusal.TOO_MANY_CONNECTIONS
        if self._per_client[client] >= self._limits.max_connections_per_client:
            return Refusal.TOO_MANY_FROM_CLIENT
        self._per_client[client] += 1
        return None

    def release(self, client: str) -> None:
        if self._per_client[client] <= 0:
            raise ValueError(f"release of a connection never admitted for {client}")
        self._per_client[client] -= 1
        if not self._per_client[client]:
            del self._per_client[client]
