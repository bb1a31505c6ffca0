"""Whether the host clock is synchronized: the S bit and error of the Error Estimate (RFC 4656 s4.1.2).

Reads the kernel's NTP state with a read-only adjtimex(2) (modes = 0 needs no privilege): STA_UNSYNC clear and
a state other than TIME_ERROR mean an external source (ntpd, chrony, PTP) disciplines the clock, and
maxerror bounds its error. Anything that goes wrong yields "unsynchronized, error unknown" rather than a claim
we cannot back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from dataclasses import dataclass

from nf.twamp.timestamps import UNKNOWN_ERROR, ErrorEstimate

STA_UNSYNC = 0x0040
TIME_ERROR = 5


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """struct timex from <sys/timex.h> (glibc, 64-bit Linux)."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("reserved", ctypes.c_int * 11),
    )


@dataclass(frozen=True, slots=True)
class ClockState:
    synchronized: bool
    max_error: float | None  # seconds, None when the kernel could not be asked

    def error_estimate(self) -> ErrorEstimate:
        if self.max_error is None:
            return UNKNOWN_ERROR
        return ErrorEstimate.from_seconds(max(self.max_error, 1e-9), self.synchronized)


UNKNOWN_CLOCK = ClockState(False, None)


def _load_adjtimex() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        func = libc.adjtimex
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.POINTER(_Timex),)
    func.restype = ctypes.c_int
    return func


_ADJTIMEX = _load_adjtimex()


def read_clock_state() -> ClockState:
    if _ADJTIMEX is None:
        return UNKNOWN_CLOCK
    timex = _Timex()
    state = _ADJTIMEX(ctypes.byref(timex))
    if state < 0:
        return UNKNOWN_CLOCK
    synchronized = state != TIME_ERROR and not timex.status & STA_UNSYNC
    return ClockState(synchronized, timex.maxerror / 1e6)


class ClockSyncCache:
    """The clock state re-read at most every `ttl` seconds: per-packet callers pay a lookup, not a syscall."""

    def __init__(self, ttl: float = 5.0) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._expires = 0.0
        self._word = UNKNOWN_ERROR.encode()
        self._estimate = UNKNOWN_ERROR

    def error_estimate(self) -> ErrorEstimate:
        self._refresh()
        return self._estimate

    def error_estimate_word(self) -> int:
        """The Error Estimate as the raw 16-bit word the packet codecs write."""
        self._refresh()
        return int.from_bytes(self._word, "big")

    def _refresh(self) -> None:
        now = time.monotonic()
        if now < self._expires:
            return
        with self._lock:
            if now < self._expires:
                return
            estimate = read_clock_state().error_estimate()
            self._estimate = estimate
            self._word = estimate.encode()
            self._expires = now + self._ttl
