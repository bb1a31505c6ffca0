"""Logging of bad input that cannot be turned into a log flood by whoever sends the bad input."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most one record per key per `interval` seconds; the next record says how many were suppressed."""

    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Logs unless `key` was logged within the interval; True when it logged."""
        now = self._clock()
        with self._lock:
            if now < self._next.get(key, 0.0):
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._next[key] = now + self._interval
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            self._logger.warning(message + " (%d similar suppressed)", *args, suppressed)
        else:
            self._logger.warning(message, *args)
        return True
