"""What TWAMP-Control agreed for one test session: the hand-off from the control machines to the test plane.

Both control state machines emit this once a Request-TW-Session was accepted; the session-sender and the
session-reflector are configured from it alone, so the test plane never looks at control messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys


@dataclass(frozen=True, slots=True)
class TestSessionParams:
    __test__ = False  # not a pytest class

    sid: bytes  # 16 octets, assigned by the server in Accept-Session
    mode: SecurityMode
    sender_address: str
    sender_port: int
    reflector_address: str
    reflector_port: int
    padding_length: int
    start_time: float  # Unix seconds
    timeout: float  # seconds the reflector keeps reflecting after Stop-Sessions
    dscp: int  # from the Type-P descriptor
    reflect_octets: int  # RFC 6038: octets of padding the reflector copies back (0 = none)
    server_octets: bytes  # RFC 6038: 2 octets from Accept-Session, echoed in the sender's padding
    symmetric: bool  # RFC 6038 Symmetrical Size sender format
    keys: TestSessionKeys | None  # present exactly when mode.test_is_protected
