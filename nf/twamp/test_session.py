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
    reflect_octets: int  # RFC 6038 Octets to be reflected, as granted in Accept-Session (0 = none)
    server_octets: bytes  # RFC 6038: 2 octets from Accept-Session, echoed in the sender's padding
    symmetric: bool  # RFC 6038 Symmetrical Size sender format
    keys: TestSessionKeys | None  # present exactly when mode.test_is_protected
    # RFC 6038 "Length of padding to reflect": how many octets at the start of the sender's padding come back
    # at the start of the reply's padding (RFC 6038 s5.1.3, EID 6408: the sender pads the truncation amount
    # plus this length, so the truncated reply still holds them). 0 = none; only with Reflect Octets.
    padding_to_reflect: int = 0
