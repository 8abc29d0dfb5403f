"""Two races of the outbox, each driven through its bad interleaving explicitly (events, not sleeps):

* a thinning pass must not delete rows a fetch has just read, before the fetch marks them in flight (the record
  would be counted thinned and still be delivered);
* a reader of the file (the doctor, a test, another process) never sees some of the outbox's tables and not the
  others: the schema is created in one transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from edugate.contract.records import Kind
from edugate.gateway.runtime import outbox as outbox_module
from edugate.gateway.runtime.outbox import Outbox
from tests.helpers import wait_for_async

START = 1_700_000_000_000


def reading(n: int) -> dict[str, Any]:
    return {"kind": "telemetry", "device": "lab-co2", "ts": START + n * 1000, "synced": True,
            "values": {"n": n, "co2_ppm": 400 + n % 300}}


class _PausingCursor:
    """A cursor whose ``fetchall`` returns the rows, then waits (inside the fetch) until the test lets it go."""

    def __init__(self, cursor: sqlite3.Cursor, read: threading.Event, go_on: threading.Event) -> None:
        self._cursor, self._read, self._go_on = cursor, read, go_on

    def fetchall(self) -> list[Any]:
        rows = self._cursor.fetchall()
        self._read.set()
        assert self._go_on.wait(30), "the test never let the fetch go on"
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _PausingReader:
    """The outbox's reader connection, pausing the next telemetry read after its rows were read."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.read, self.go_on = threading.Event(), threading.Event()
        self.armed = True

    def execute(self, sql: str, *args: Any) -> Any:
        cursor = self._conn.execute(sql, *args)
        if self.armed and "FROM telemetry" in sql and "ORDER BY seq LIMIT" in sql:
            self.armed = False
            return _PausingCursor(cursor, self.read, self.go_on)
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _WatchedLock:
    """The outbox's in-flight lock, telling the test when the writer thread starts waiting for it."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.writer_waits = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if threading.current_thread().name == "outbox-writer" and self._lock.locked():
            self.writer_waits.set()
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return bool(self._lock.locked())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


async def test_thinning_never_takes_rows_a_fetch_read_before_it_marks_them_in_flight(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=10_000_000)
    try:
        await asyncio.gather(*(box.put(Kind.TELEMETRY, reading(n)) for n in range(2000)))
        assert box.stats.telemetry_thinned == 0
        reader = _PausingReader(box._reader)  # type: ignore[arg-type]
        box._reader = reader  # type: ignore[assignment]
        lock = _WatchedLock(getattr(box, "_inflight_lock", threading.Lock()))
        box._inflight_lock = lock  # type: ignore[assignment]

        # 1. The uplink fetches the oldest 200 readings: the rows are read, the fetch not yet done.
        fetch = asyncio.ensure_future(box.fetch(Kind.TELEMETRY, 0, 200, 1 << 30))
        assert await asyncio.to_thread(reader.read.wait, 30)
        # 2. Meanwhile the outbox goes over its budget: the next commit starts a thinning pass.
        box.data_target = 0
        put = asyncio.ensure_future(box.put(Kind.TELEMETRY, reading(2000)))
        await wait_for_async(lambda: lock.writer_waits.is_set() or box.stats.telemetry_thinned > 0, 30,
                             "the writer to thin, or to wait for the fetch in progress")
        # 3. The fetch finishes: whatever it returned goes to the broker.
        reader.go_on.set()
        fetched = [seq for seq, _ in await fetch]
        await put
        await wait_for_async(lambda: box.stats.telemetry_thinned > 0 and not box.thinning, 30, "the pass to end")
    finally:
        box._reader = getattr(box._reader, "_conn", box._reader)  # type: ignore[assignment]
        await box.close()

    assert len(fetched) == 200
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=10_000_000)
    try:
        queued = {seq for seq, _ in await box.fetch(Kind.TELEMETRY, 0, 10_000, 1 << 30)}
    finally:
        await box.close()
    thinned_yet_sent = sorted(set(fetched) - queued)
    assert not thinned_yet_sent, f"{len(thinned_yet_sent)} records were fetched for sending and thinned too"
    assert len(queued) < 2001, "the pass should have thinned the readings not in flight"


async def test_a_reader_sees_all_of_the_outbox_tables_or_none(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "o.sqlite"
    seen: list[set[str]] = []
    connect = outbox_module._connect

    def look(statement: str) -> None:
        """Before each statement the outbox runs on a new file: which tables does another connection see?"""
        other = sqlite3.connect(path, timeout=10)
        try:
            seen.append({name for (name,) in other.execute("SELECT name FROM sqlite_master WHERE type='table'")})
        finally:
            other.close()

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        if not seen:  # the writer's connection, the first one opened
            conn.set_trace_callback(look)
        return conn

    monkeypatch.setattr(outbox_module, "_connect", traced_connect)
    box = await Outbox.open(path, budget_bytes=10_000_000)
    await box.close()
    assert len(seen) > 3
    tables = {"meta", "telemetry", "events"}
    partial = [names for names in seen if names and not tables <= names]
    assert not partial, f"another reader saw only some of the outbox's tables: {partial}"
