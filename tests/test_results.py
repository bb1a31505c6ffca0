"""Properties and worked examples of the TWAMP statistics (nf.twamp.results)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nf.twamp.results import (
    Reply,
    SessionRecords,
    percentile,
    reordered_count,
    summarize,
)


def reply(seq: int, rtt: float = 0.01, fwd: float = 0.004, residence: float = 0.0001) -> Reply:
    t1 = 1000.0 + seq * 0.1
    t2 = t1 + fwd
    t3 = t2 + residence
    t4 = t3 + (rtt - fwd)
    return Reply(seq, t1, t2, t3, t4, True, True)


delays = st.floats(min_value=0.0, max_value=2.0, allow_nan=False)
reply_st = st.builds(
    lambda seq, rtt, fwd, res, s1, s2: Reply(seq, 1e9, 1e9 + fwd, 1e9 + fwd + res, 1e9 + res + rtt, s1, s2),
    st.integers(0, 60),
    delays,
    delays,
    delays,
    st.booleans(),
    st.booleans(),
)


def test_worked_example() -> None:
    # 5 sent; seq 3 lost; seq 1 duplicated; seq 2 arrives after 4 (reordered)
    replies = [reply(0, 0.010), reply(1, 0.012), reply(1, 0.012), reply(4, 0.011), reply(2, 0.020)]
    s = summarize([SessionRecords(5, replies)])
    assert (s.sent, s.received, s.lost, s.duplicates, s.reordered) == (5, 4, 1, 1, 1)
    assert s.loss_ratio == pytest.approx(0.2)
    assert s.rtt_ms is not None and s.ipdv_ms is not None
    assert s.rtt_ms.min == pytest.approx(10.0)
    assert s.rtt_ms.max == pytest.approx(20.0)
    assert s.rtt_ms.median == pytest.approx(11.5)
    assert s.rtt_ms.mean == pytest.approx(13.25)
    assert s.rtt_ms.p95 == pytest.approx(20.0)
    # consecutive pairs received: (0,1) and (1,2); (2,3), (3,4) have a lost member
    assert s.ipdv_ms.max == pytest.approx(8.0)
    assert s.ipdv_ms.median == pytest.approx(5.0)
    assert s.forward_ms is not None and s.forward_ms.median == pytest.approx(4.0)
    assert s.backward_ms is not None and s.backward_ms.min == pytest.approx(6.0)
    assert s.clock_synchronized


def test_nothing_received_gives_nulls_and_full_loss() -> None:
    s = summarize([SessionRecords(3, [])])
    assert (s.received, s.lost, s.loss_ratio) == (0, 3, 1.0)
    d = s.as_dict()
    assert d["rtt_ms"] is None and d["ipdv_ms"] is None and d["forward_ms"] is None
    assert d["clock_synchronized"] is False
    json.dumps(d)


def test_reply_for_never_sent_seq_is_ignored() -> None:
    s = summarize([SessionRecords(2, [reply(0), reply(7)])])
    assert (s.received, s.lost, s.duplicates) == (1, 1, 0)


def test_unsynchronized_reflector_clears_clock_flag() -> None:
    r = reply(0)
    unsynced = Reply(1, r.t1, r.t2, r.t3, r.t4, True, False)
    assert not summarize([SessionRecords(2, [r, unsynced])]).clock_synchronized


def test_sessions_are_counted_separately_for_reordering() -> None:
    # seq 0 in session B after seq 5 of session A is not reordering
    a = SessionRecords(6, [reply(i) for i in range(6)])
    b = SessionRecords(2, [reply(0), reply(1)])
    s = summarize([a, b])
    assert (s.sent, s.received, s.reordered) == (8, 8, 0)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 50) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1), st.floats(0.001, 100))
def test_percentile_is_an_observed_sample_and_bounded(values: list[float], p: float) -> None:
    ordered = sorted(values)
    got = percentile(ordered, p)
    assert got in ordered
    assert sum(v <= got for v in ordered) >= p / 100 * len(ordered) - 1e-9


@given(st.lists(reply_st), st.integers(0, 80))
def test_counts_add_up(replies: list[Reply], sent: int) -> None:
    s = summarize([SessionRecords(sent, replies)])
    valid = [r.seq for r in replies if r.seq < sent]
    assert s.received == len(set(valid))
    assert s.duplicates == len(valid) - len(set(valid))
    assert s.sent == s.received + s.lost
    assert 0.0 <= s.loss_ratio <= 1.0
    assert 0 <= s.reordered < max(s.received, 1)


@given(st.lists(reply_st, min_size=1))
def test_delay_stats_are_ordered(replies: list[Reply]) -> None:
    s = summarize([SessionRecords(61, replies)])
    for stats in (s.rtt_ms, s.forward_ms, s.backward_ms):
        assert stats is not None
        assert stats.min <= stats.median <= stats.max
        assert stats.min <= stats.p95 <= stats.p99 <= stats.max
        assert stats.min - 1e-9 <= stats.mean <= stats.max + 1e-9
    if s.ipdv_ms is not None:
        assert 0 <= s.ipdv_ms.median <= s.ipdv_ms.max
        assert s.ipdv_ms.p95 <= s.ipdv_ms.max


@given(st.lists(reply_st, min_size=1), st.floats(-1000, 1000, allow_nan=False))
def test_rtt_ignores_reflector_clock_offset(replies: list[Reply], offset: float) -> None:
    shifted = [Reply(r.seq, r.t1, r.t2 + offset, r.t3 + offset, r.t4) for r in replies]
    a = summarize([SessionRecords(61, replies)]).rtt_ms
    b = summarize([SessionRecords(61, shifted)]).rtt_ms
    assert a is not None and b is not None
    assert math.isclose(a.median, b.median, abs_tol=1e-3)
    assert math.isclose(a.max, b.max, abs_tol=1e-3)


@given(st.permutations(list(range(20))))
def test_reordered_count_matches_definition(order: list[int]) -> None:
    expected = sum(1 for i, seq in enumerate(order) if any(prev > seq for prev in order[:i]))
    assert reordered_count(order) == expected


@given(st.integers(1, 50))
def test_in_order_is_never_reordered_and_reverse_is_all_but_first(n: int) -> None:
    assert reordered_count(range(n)) == 0
    assert reordered_count(reversed(range(n))) == n - 1


@given(st.integers(2, 40), st.floats(0.0001, 1.0))
def test_constant_delay_has_zero_ipdv(n: int, rtt: float) -> None:
    s = summarize([SessionRecords(n, [reply(i, rtt) for i in range(n)])])
    assert s.ipdv_ms is not None
    assert s.ipdv_ms.max == pytest.approx(0.0, abs=1e-3)
    assert s.rtt_ms is not None and s.rtt_ms.median == pytest.approx(rtt * 1000, rel=1e-6)
