"""One log limiter: at most ``burst`` lines per ``window_s`` per key; the next line let through says how many
were held back.

A device spewing garbage (a wrong baud rate, a loose Wiegand wire) must not flood the journal, yet the first
problem of each kind shows at once and nothing is hidden without a count::

    limiter = LogLimiter(burst=1, window_s=60)
    held = limiter.allow("bad_checksum")
    if held is not None:
        log.warning("bad sentence%s", f" ({held} more since the last report)" if held else "")
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Hashable


class LogLimiter:
    """A sliding window of ``window_s`` seconds holding at most ``burst`` allowed lines per key."""

    def __init__(self, burst: int = 10, window_s: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or window_s <= 0:
            raise ValueError("burst must be at least 1 and window_s positive")
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._times: dict[Hashable, deque[float]] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable = "") -> int | None:
        """None if this line must be held back (it is counted), else how many of ``key`` were held before it."""
        now = self._clock()
        times = self._times.setdefault(key, deque())
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if len(times) >= self.burst:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        times.append(now)
        return self._held.pop(key, 0)

    def held(self, key: Hashable = "") -> int:
        """Lines of ``key`` held back since the last one let through."""
        return self._held.get(key, 0)


class LimitedLog:
    """A logger's warnings through one :class:`LogLimiter`: the first ``burst`` per window are logged, the rest
    counted, and the next line let through says how many were held back (a sender of garbage cannot flood the
    journal, and nothing is hidden without a count)."""

    def __init__(self, logger: logging.Logger, *, burst: int = 20, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self.limiter = LogLimiter(burst=burst, window_s=window_s, clock=clock)

    def warning(self, msg: str, *args: object, key: Hashable = "") -> bool:
        """Log ``msg % args`` unless ``key`` is over its budget; True if it was logged."""
        held = self.limiter.allow(key)
        if held is None:
            return False
        if held:
            msg, args = msg + " (%d more like it were not logged)", (*args, held)
        self._log.warning(msg, *args)
        return True
