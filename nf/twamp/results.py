"""Statistics of TWAMP test sessions: loss, duplicates, reordering, delay and delay variation.

Pure functions over per-packet records, so the same code summarises a live run, a benchmark and a hypothesis
example. Timestamps are Unix seconds as floats (T1 sender send, T2 reflector receive, T3 reflector send,
T4 sender receive); results are in milliseconds. Round-trip time excludes the reflector's residence time
((T4-T1)-(T3-T2)), so it is independent of clock offset; the one-way figures are only meaningful when both
clocks are synchronised, which is what clock_synchronized reports.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Reply:
    """One reflected packet as the session-sender saw it (sender sequence number and the four timestamps)."""

    seq: int
    t1: float
    t2: float
    t3: float
    t4: float
    sender_synchronized: bool = False
    reflector_synchronized: bool = False

    @property
    def rtt(self) -> float:
        return (self.t4 - self.t1) - (self.t3 - self.t2)

    @property
    def forward(self) -> float:
        return self.t2 - self.t1

    @property
    def backward(self) -> float:
        return self.t4 - self.t3


@dataclass(frozen=True, slots=True)
class SessionRecords:
    """What one test session produced: how many packets went out, and every reply in arrival order."""

    sent: int
    replies: Sequence[Reply]


@dataclass(frozen=True, slots=True)
class DelayStats:
    min: float
    median: float
    p95: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("min", "median", "p95", "p99", "max", "mean")}


@dataclass(frozen=True, slots=True)
class VariationStats:
    median: float
    p95: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "p95": self.p95, "max": self.max}


@dataclass(frozen=True, slots=True)
class Summary:
    sent: int
    received: int
    lost: int
    loss_ratio: float
    duplicates: int
    reordered: int
    rtt_ms: DelayStats | None  # None when nothing came back
    ipdv_ms: VariationStats | None  # None with fewer than two consecutive sequence numbers received
    forward_ms: DelayStats | None
    backward_ms: DelayStats | None
    clock_synchronized: bool

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape `twamp-nf ping --json` prints (null for statistics with no samples)."""
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "loss_ratio": self.loss_ratio,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "rtt_ms": self.rtt_ms.as_dict() if self.rtt_ms else None,
            "ipdv_ms": self.ipdv_ms.as_dict() if self.ipdv_ms else None,
            "forward_ms": self.forward_ms.as_dict() if self.forward_ms else None,
            "backward_ms": self.backward_ms.as_dict() if self.backward_ms else None,
            "clock_synchronized": self.clock_synchronized,
        }


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least p% of the samples at or below it.

    Nearest rank always returns an observed value, so a reported p99 is a delay that really happened.
    """
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} outside (0, 100]")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def delay_stats(samples_s: Iterable[float]) -> DelayStats | None:
    values = sorted(s * 1000.0 for s in samples_s)
    if not values:
        return None
    return DelayStats(
        min=values[0],
        median=statistics.median(values),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
        max=values[-1],
        mean=math.fsum(values) / len(values),
    )


def variation_stats(ipdv_s: Iterable[float]) -> VariationStats | None:
    values = sorted(abs(v) * 1000.0 for v in ipdv_s)
    if not values:
        return None
    return VariationStats(median=statistics.median(values), p95=percentile(values, 95), max=values[-1])


def first_arrivals(replies: Iterable[Reply], sent: int) -> tuple[list[Reply], int]:
    """Replies whose seq was really sent, first copy only, in arrival order; and the count of extra copies.

    A reply carrying a sequence number that was never sent is neither received nor a duplicate: it is dropped
    here (the sender counts it as bad input).
    """
    seen: set[int] = set()
    firsts: list[Reply] = []
    duplicates = 0
    for reply in replies:
        if not 0 <= reply.seq < sent:
            continue
        if reply.seq in seen:
            duplicates += 1
            continue
        seen.add(reply.seq)
        firsts.append(reply)
    return firsts, duplicates


def reordered_count(seqs_in_arrival_order: Iterable[int]) -> int:
    """RFC 4737 s3: a packet is reordered when its sequence number is below the highest one seen before it."""
    highest = -1
    count = 0
    for seq in seqs_in_arrival_order:
        if seq < highest:
            count += 1
        else:
            highest = seq
    return count


def ipdv(replies: Iterable[Reply]) -> list[float]:
    """RFC 3393 / RFC 5481 IPDV of round-trip delays: rtt(i+1) - rtt(i) for consecutive sequence numbers.

    Pairs with a lost member are undefined in RFC 3393 and are skipped rather than bridged.
    """
    by_seq = {r.seq: r for r in replies}
    return [by_seq[s + 1].rtt - by_seq[s].rtt for s in sorted(by_seq) if s + 1 in by_seq]


def summarize(sessions: Sequence[SessionRecords]) -> Summary:
    """Counts add up over sessions; reordering and IPDV are per session (sequence numbers are per session);
    delay percentiles are over all samples together."""
    sent = received = duplicates = reordered = 0
    firsts_all: list[Reply] = []
    variations: list[float] = []
    for session in sessions:
        if session.sent < 0:
            raise ValueError("negative sent count")
        firsts, dups = first_arrivals(session.replies, session.sent)
        sent += session.sent
        received += len(firsts)
        duplicates += dups
        reordered += reordered_count(r.seq for r in firsts)
        variations.extend(ipdv(firsts))
        firsts_all.extend(firsts)
    lost = sent - received
    return Summary(
        sent=sent,
        received=received,
        lost=lost,
        loss_ratio=lost / sent if sent else 0.0,
        duplicates=duplicates,
        reordered=reordered,
        rtt_ms=delay_stats(r.rtt for r in firsts_all),
        ipdv_ms=variation_stats(variations),
        forward_ms=delay_stats(r.forward for r in firsts_all),
        backward_ms=delay_stats(r.backward for r in firsts_all),
        clock_synchronized=bool(firsts_all)
        and all(r.sender_synchronized and r.reflector_synchronized for r in firsts_all),
    )
