"""Connection admission, token bucket and rate-limited logging (nf.net.limits, nf.runtime.ratelimited_log)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nf.net.limits import ConnectionTracker, Limits, Refusal, TokenBucket
from nf.runtime.ratelimited_log import RateLimitedLog


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


def test_token_bucket_rate() -> None:
    bucket = TokenBucket(rate=10, burst=2, now=0.0)
    assert [bucket.allow(0.0) for _ in range(3)] == [True, True, False]
    assert not bucket.allow(0.05)
    assert bucket.allow(0.1)
    # over 10 s at most burst + rate * 10 packets pass however often it is asked
    passed = sum(bucket.allow(0.2 + i * 0.001) for i in range(10_000))
    assert passed <= 2 + 10 * 10 + 1


@given(st.floats(1, 1000), st.lists(st.floats(0, 0.01), max_size=300))
def test_token_bucket_never_exceeds_budget(rate: float, gaps: list[float]) -> None:
    bucket = TokenBucket(rate=rate, burst=5, now=0.0)
    now = 0.0
    passed = 0
    for gap in gaps:
        now += gap
        passed += bucket.allow(now)
    assert passed <= 5 + rate * now + 1e-6


def test_rate_limited_log_suppresses_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    log = RateLimitedLog(logging.getLogger("t"), interval=10, burst=2, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        emitted = [log.warning("bad-hmac", "bad hmac from %s", "x") for _ in range(5)]
        assert emitted == [True, True, False, False, False]
        assert log.warning("bad-length", "short") is True  # separate budget per reason
        clock[0] = 10.5
        assert log.warning("bad-hmac", "bad hmac from %s", "y")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "bad hmac from x",
        "bad hmac from x",
        "short",
        "bad hmac from y (3 similar messages suppressed)",
    ]
