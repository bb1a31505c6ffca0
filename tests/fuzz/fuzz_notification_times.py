"""Fuzz target: the RFC 3339 date-times of create-subscription (startTime, stopTime) and of runtime events
(nf_netconf.notifications.parse_date_time) never raise; what is accepted is an aware time that prints back
to text parsing to the same instant."""

from __future__ import annotations

from nf_netconf.notifications import _format, parse_date_time


def fuzz_one(data: bytes) -> None:
    moment = parse_date_time(data.decode("utf-8", errors="replace"))
    if moment is None:
        return
    assert moment.tzinfo is not None
    assert parse_date_time(_format(moment)) == moment
