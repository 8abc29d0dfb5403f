"""CPU use of this process over a recent window, safe to ask from several places.

``psutil.Process.cpu_percent(None)`` measures since *its previous call*: when the
health loop and the status page both call it, each resets the other's interval
and the health record shows the CPU of the last page refresh. A :class:`CpuMeter`
keeps its own samples instead, and answers for the last ``window_s`` seconds
whoever asks and however often.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import psutil

MIN_SPACING_S = 0.5  # samples closer than this are not kept (bounded memory for frequent callers)


def process_cpu_seconds(process: psutil.Process | None = None) -> Callable[[], float]:
    proc = process or psutil.Process()

    def cpu() -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    return cpu


class CpuMeter:
    """Percent of one core used over about the last ``window_s`` seconds (100 = one full core)."""

    def __init__(self, window_s: float, cpu_seconds: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._cpu = cpu_seconds or process_cpu_seconds()
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque([(clock(), self._cpu())])

    def percent(self) -> float:
        now, cpu = self._clock(), self._cpu()
        if now - self._samples[-1][0] >= MIN_SPACING_S:
            self._samples.append((now, cpu))
        # keep one sample at or before the window's start, so the window is covered in full
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        start, start_cpu = self._samples[0]
        return round(100 * (cpu - start_cpu) / (now - start), 1) if now > start else 0.0
