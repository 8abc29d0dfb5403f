"""How the pages (the gateway's and central's) show times: '3 min ago', local wall-clock time."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo


def ago(ts: float | None, now: float | None = None) -> str:
    """'12 s ago', '3 min ago', '2 h ago', '4 d ago' ('never' for None)."""
    if ts is None:
        return "never"
    delta = max(0.0, (now if now is not None else time.time()) - ts)
    if delta < 90:
        return f"{delta:.0f} s ago"
    if delta < 90 * 60:
        return f"{delta / 60:.0f} min ago"
    if delta < 36 * 3600:
        return f"{delta / 3600:.0f} h ago"
    return f"{delta / 86400:.0f} d ago"


def local_time(ts: float | None, tz: str) -> str:
    """``2025-11-23 19:04:05`` in time zone ``tz`` ('' for None)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")
