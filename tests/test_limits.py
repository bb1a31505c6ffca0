"""Connection admission limits (nf.net.limits)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nf.net.limits import ConnectionTracker, Limits, Refusal


def test_total_and_per_client_limits() -> None:
    tracker = ConnectionTracker(Limits(max_connections=3, max_connections_per_client=2))
    assert tracker.admit("a") is None
    assert tracker.admit("a") is None
    assert tracker.admit("a") is Refusal.TOO_MANY_FROM_CLIENT
    assert tracker.admit("b") is None
    assert tracker.admit("c") is Refusal.TOO_MANY_CONNECTIONS
    tracker.release("a")
    assert tracker.active == 2
    assert tracker.admit("c") is None
    with pytest.raises(ValueError):
        tracker.release("zzz")


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abcd")), max_size=200))
def test_tracker_never_exceeds_limits(ops: list[tuple[bool, str]]) -> None:
    limits = Limits(max_connections=5, max_connections_per_client=2)
    tracker = ConnectionTracker(limits)
    held: list[str] = []
    for admit, client in ops:
        if admit:
            if tracker.admit(client) is None:
                held.append(client)
        elif client in held:
            held.remove(client)
            tracker.release(client)
        assert tracker.active == len(held) <= 5
        assert all(held.count(c) <= 2 for c in held)


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        Limits(max_connections=0)
    with pytest.raises(ValueError):
        Limits(servwait=0)
    with pytest.raises(ValueError):
        Limits(max_message_size=16)
