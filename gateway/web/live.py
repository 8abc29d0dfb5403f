"""Recent telemetry in memory (for the plots and the CSV download) and live updates (Server-Sent Events).

:class:`LiveData` is the record observer the gateway calls for every committed
record. It keeps, per device, a ring buffer of the last ``window_s`` seconds
of numeric values (at most one row per ``resolution_s``; the newest value in a
slot wins) and forwards each record to the open live pages. Memory is bounded:
one row is 8 bytes per value plus 8 for the time, so an hour at 1 s for a
device with three values is about 115 kB; at most ``max_columns`` value
columns are kept in all. Nothing here is durable: the outbox is the record of
truth, this is what the gateway has seen lately.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import math
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

NAN = float("nan")
GATEWAY_DEVICE = "_gateway"


class DeviceHistory:
    """One device's recent rows: a shared time column and one column per value name (NaN = no value)."""

    __slots__ = ("cap", "cols", "room", "start", "ts")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.ts = array("d")
        self.cols: dict[str, array[float]] = {}
        self.start = 0  # index of the oldest row once the ring is full
        self.room: str | None = None

    def __len__(self) -> int:
        return len(self.ts)

    def clear(self) -> None:
        self.ts = array("d")
        self.cols = {name: array("d") for name in self.cols}
        self.start = 0

    def add(self, ts: float, values: dict[str, float], resolution: float, allow_new: int) -> int:
        """Add one reading; return how many new columns it created (at most ``allow_new``)."""
        n = len(self.ts)
        created = 0
        for name in values:
            if name not in self.cols:
                if created >= allow_new:
                    continue
                self.cols[name] = array("d", [NAN]) * n
                created += 1
        if n:
            last_i = (self.start - 1) % n
            last = self.ts[last_i]
            if ts < last - resolution:  # the clock stepped back (NTP fixed a Pi with no RTC): start again
                self.clear()
                n = 0
            elif int(ts // resolution) <= int(last // resolution):  # same slot: the newest value wins
                self.ts[last_i] = max(ts, last)
                for name, value in values.items():
                    if name in self.cols:
                        self.cols[name][last_i] = value
                return created
        if n < self.cap:
            self.ts.append(ts)
            for name, col in self.cols.items():
                col.append(values.get(name, NAN))
        else:
            i = self.start
            self.ts[i] = ts
            for name, col in self.cols.items():
                col[i] = values.get(name, NAN)
            self.start = (i + 1) % n
        return created

    def _order(self) -> Iterator[int]:
        n = len(self.ts)
        return (((self.start + k) % n) for k in range(n))

    def rows(self, since: float) -> tuple[list[float], dict[str, list[float | None]]]:
        """Times (s) and each value's column, oldest first, from ``since`` on (NaN -> None)."""
        idx = [i for i in self._order() if self.ts[i] >= since]
        ts = [self.ts[i] for i in idx]
        cols = {name: [None if math.isnan(v := col[i]) else v for i in idx] for name, col in self.cols.items()}
        return ts, {name: col for name, col in cols.items() if any(v is not None for v in col)}


@dataclass
class LiveData:
    """Feeds the live pages: call :meth:`observe` with every committed record."""

    window_s: float = 3600.0
    resolution_s: float = 1.0
    max_columns: int = 5000
    max_clients: int = 32
    queue_size: int = 512
    devices: dict[str, DeviceHistory] = field(default_factory=dict)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> last telemetry record seen
    _columns: int = 0
    _clients: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)  # None: the end
    dropped_updates: int = 0

    @property
    def capacity(self) -> int:
        return max(1, math.ceil(self.window_s / self.resolution_s))

    def observe(self, record: dict[str, Any]) -> None:
        """The pipeline's observer: called on the event loop after each record is committed."""
        device = record.get("device")
        if not isinstance(device, str) or device == GATEWAY_DEVICE:
            return
        ts_ms = record.get("ts")
        if not isinstance(ts_ms, int):
            return
        if record.get("kind") == "telemetry":
            raw = record.get("values") or {}
            numbers = {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and math.isfinite(v)}
            if numbers:
                hist = self.devices.get(device)
                if hist is None:
                    hist = self.devices[device] = DeviceHistory(self.capacity)
                hist.room = record.get("room")
                self._columns += hist.add(ts_ms / 1000, numbers, self.resolution_s,
                                          self.max_columns - self._columns)
            update = {"kind": "telemetry", "device": device, "room": record.get("room"), "ts": ts_ms,
                      "values": {k: v for k, v in raw.items() if isinstance(v, int | float | str)}}
            self.latest[device] = update
        elif record.get("kind") == "event":
            # the event's type only: its data may hold pseudonyms, which a live page has no use for
            update = {"kind": "event", "device": device, "room": record.get("room"), "ts": ts_ms,
                      "type": record.get("type")}
        else:
            return
        for queue in self._clients:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()  # a slow client loses its oldest update, never blocks the pipeline
                self.dropped_updates += 1
            queue.put_nowait(update)

    def close(self) -> None:
        """End every live stream (the process is stopping): each queue gets ``None``."""
        for queue in self._clients:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(None)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[dict[str, Any] | None]]:
        """A queue of updates for one live page; raises :class:`TooManyClients` beyond ``max_clients``."""
        if len(self._clients) >= self.max_clients:
            raise TooManyClients(f"{self.max_clients} live pages are open already; close one and reload")
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self.queue_size)
        self._clients.add(queue)
        try:
            yield queue
        finally:
            self._clients.discard(queue)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def history(self, device: str, now: float | None = None) -> dict[str, Any]:
        """``{"device", "room", "ts": [s...], "values": {name: [...]}}`` for the last ``window_s``."""
        hist = self.devices.get(device)
        if hist is None:
            return {"device": device, "room": None, "ts": [], "values": {}}
        since = (now if now is not None else time.time()) - self.window_s
        ts, cols = hist.rows(since)
        return {"device": device, "room": hist.room, "ts": ts, "values": cols}

    def csv(self, devices: list[str], timezone: str, now: float | None = None) -> str:
        """One row per device and time: ``time,ts_ms,device,room,<value names...>`` (the school's time zone)."""
        tz = ZoneInfo(timezone)
        parts = [self.history(d, now) for d in devices]
        names = sorted({name for p in parts for name in p["values"]})
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["time", "ts_ms", "device", "room", *names])
        for part in parts:
            for i, ts in enumerate(part["ts"]):
                row: list[Any] = [datetime.fromtimestamp(ts, tz).isoformat(timespec="milliseconds"),
                                  round(ts * 1000), part["device"], part["room"] or ""]
                for name in names:
                    value = part["values"].get(name, [None] * len(part["ts"]))[i]
                    row.append("" if value is None else _number(value))
                writer.writerow(row)
        return out.getvalue()


class TooManyClients(RuntimeError):
    pass


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
