"""Is the system clock synchronised? A Raspberry Pi has no RTC: until NTP has
synced, ``time.time()`` may be days off, and every record says so."""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Literal

TIME_ERROR = 5  # adjtimex() return value: clock not synchronised


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: we only need the call's return value; the
    # struct must merely be large enough (it is 208 bytes on 64-bit Linux).
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 252)]


def kernel_clock_synced() -> bool | None:
    """The kernel's view (adjtimex): True/False, or None where it cannot be asked."""
    path = ctypes.util.find_library("c")
    if not path:
        return None
    try:
        libc = ctypes.CDLL(path, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


class Clock:
    """Wall-clock timestamps in ms plus whether the clock was synchronised (re-checked every 10 s)."""

    def __init__(self, mode: Literal["auto", "always", "never"] = "auto") -> None:
        self.mode = mode
        self._synced = mode == "always"
        self._checked_at = -1e9

    def synced(self) -> bool:
        if self.mode != "auto":
            return self.mode == "always"
        now = time.monotonic()
        if now - self._checked_at > 10:
            self._checked_at = now
            self._synced = bool(kernel_clock_synced())
        return self._synced

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000
