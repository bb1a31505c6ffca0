"""Logging that a flood of bad input cannot turn into a flood of log lines.

Each reason has its own budget of `burst` lines per `interval` seconds; what is over budget is counted and the
count is reported on the next line that gets through, so an operator still learns how much was dropped. The
clock is injected so tests can drive it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Budget:
    window_start: float
    used: int = 0
    suppressed: int = 0


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be positive and burst at least 1")
        self._logger = logger
        self._interval = interval
        self._burst = burst
        self._clock = clock
        self._budgets: dict[str, _Budget] = {}

    def log(self, reason: str, level: int, msg: str, *args: object) -> bool:
        """Log msg under reason's budget; returns whether it was emitted."""
        now = self._clock()
        budget = self._budgets.get(reason)
        if budget is None or now - budget.window_start >= self._interval:
            suppressed = budget.suppressed if budget else 0
            budget = self._budgets[reason] = _Budget(now)
            if suppressed:
                msg = f"{msg} ({suppressed} similar messages suppressed)"
        if budget.used >= self._burst:
            budget.suppressed += 1
            return False
        budget.used += 1
        self._logger.log(level, msg, *args)
        return True

    def warning(self, reason: str, msg: str, *args: object) -> bool:
        return self.log(reason, logging.WARNING, msg, *args)
