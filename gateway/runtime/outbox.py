"""The durable outbox: every record is committed to SQLite (WAL) before anyone
is told it was accepted, and leaves only when the broker has PUBACKed the
message that carried it.

* One writer thread owns the write connection and commits in groups: every
  record that arrived while the previous commit was on disk goes into the next
  transaction, so thousands of records per second cost a handful of fsyncs.
* Telemetry may wait a little for company: on the event loop, a reading is
  held while more keep arriving less than ``TELEMETRY_GAP_S`` (1 ms) apart,
  for at most ``telemetry_commit_delay_s`` (10 ms), and the readings held go
  to the writer together. Polled readings trickle in one by one (100 devices
  on one Modbus connection finish their polls a few hundred microseconds
  apart); without the wait each would pay a transaction, an fsync and a wake-up
  of the writer thread of its own. A reading is held only when a reading of
  *another* device arrived less than 1 ms before it (or some are held
  already): a lone reading, or one fast device awaiting each commit, goes at
  once. An event (a card tap, a gate alarm) never waits: it goes at once,
  taking the readings held before it along (sequence order is arrival order).
* Sequence numbers are assigned inside the commit and persisted with it
  (table ``meta``), so they continue across restarts and never repeat.
* Telemetry and events live in separate tables with one shared sequence. Over
  the disk budget, the oldest telemetry is thinned (every second record of the
  oldest tenth goes, counted); events are never deleted, and events alone over
  the budget are reported, not dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from edugate.contract.records import Kind

log = logging.getLogger(__name__)

ROW_OVERHEAD = 32  # bytes of SQLite bookkeeping per row, counted against the budget
MAX_GROUP = 5000  # records in one transaction at most
DEFAULT_TELEMETRY_COMMIT_DELAY_S = 0.01  # the longest a telemetry-only group waits for more
TELEMETRY_GAP_S = 0.001  # ... and it stops waiting when nothing arrived for this long
TABLES = {Kind.TELEMETRY: "telemetry", Kind.EVENT: "events"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS telemetry (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
"""


class OutboxClosed(RuntimeError):
    pass


@dataclass
class OutboxStats:
    records: dict[str, int] = field(default_factory=lambda: {"telemetry": 0, "event": 0})
    bytes: int = 0
    budget_bytes: int = 0
    committed: int = 0
    commits: int = 0
    acked: int = 0
    telemetry_thinned: int = 0
    events_over_budget: bool = False
    next_seq: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "outbox_records": sum(self.records.values()),
            "outbox_events": self.records["event"],
            "outbox_telemetry": self.records["telemetry"],
            "outbox_bytes": self.bytes,
            "outbox_budget_bytes": self.budget_bytes,
            "outbox_committed": self.committed,
            "outbox_commits": self.commits,
            "outbox_acked": self.acked,
            "telemetry_thinned": self.telemetry_thinned,
            "events_over_budget": self.events_over_budget,
            "next_seq": self.next_seq,
        }


@dataclass(slots=True)
class _Put:
    kind: Kind
    record: dict[str, Any]
    future: asyncio.Future[int] | None


@dataclass(slots=True)
class _Ack:
    kind: Kind
    seqs: Sequence[int]


def _connect(path: Path, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA journal_size_limit=16777216")
    return conn


class Outbox:
    """Durable FIFO of records per kind. Create with :meth:`open`, inside a running loop."""

    def __init__(self, path: Path, *, budget_bytes: int, sync: str = "full",
                 telemetry_commit_delay_s: float = DEFAULT_TELEMETRY_COMMIT_DELAY_S) -> None:
        self.path = Path(path)
        self.stats = OutboxStats(budget_bytes=budget_bytes)
        self.sync = sync
        self.telemetry_commit_delay_s = telemetry_commit_delay_s
        self._ops: queue.SimpleQueue[list[_Put | _Ack] | None] = queue.SimpleQueue()
        self._held: list[_Put | _Ack] = []  # telemetry waiting for company (event loop side)
        self._held_since = 0.0
        self._last_held = 0.0
        self._last_device: Any = None  # the device of the latest reading, and when it came
        self._last_at = -1.0
        self._other_at = -1.0  # when the latest reading of a device other than _last_device came
        self._flush_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._closed = False
        self.changed = asyncio.Event()  # set after every commit that added records
        self.newest: dict[Kind, int] = {Kind.TELEMETRY: 0, Kind.EVENT: 0}  # highest committed seq per kind
        self._sizes: dict[int, int] = {}  # seq -> size, for the budget (kept for queued rows only)

    @classmethod
    async def open(cls, path: Path, *, budget_bytes: int, sync: str = "full",
                   telemetry_commit_delay_s: float = DEFAULT_TELEMETRY_COMMIT_DELAY_S) -> Outbox:
        box = cls(path, budget_bytes=budget_bytes, sync=sync, telemetry_commit_delay_s=telemetry_commit_delay_s)
        await asyncio.to_thread(box._open_sync)
        box._loop = asyncio.get_running_loop()
        box._thread = threading.Thread(target=box._writer, name="outbox-writer", daemon=True)
        box._thread.start()
        return box

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_conn = _connect(self.path, self.sync)
        self._writer_conn.executescript(SCHEMA)
        row = self._writer_conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        top = 0
        for kind, table in TABLES.items():
            (m,) = self._writer_conn.execute(f"SELECT coalesce(max(seq), 0) FROM {table}").fetchone()
            top = max(top, m)
            self.newest[kind] = m
        self.stats.next_seq = max(row[0] if row else 1, top + 1)
        for kind, table in TABLES.items():
            rows = self._writer_conn.execute(f"SELECT seq, length(payload) FROM {table}").fetchall()
            self.stats.records[kind.value] = len(rows)
            for seq, size in rows:
                self._sizes[seq] = size + ROW_OVERHEAD
        self.stats.bytes = sum(self._sizes.values())
        self._reader = _connect(self.path, self.sync)
        log.info("outbox %s: %d queued records, next seq %d", self.path, len(self._sizes),
                 self.stats.next_seq)

    # ------------------------------------------------------------------ API (event loop)

    async def put(self, kind: Kind, record: dict[str, Any]) -> int:
        """Queue ``record`` (without ``seq``); return its sequence number once committed."""
        if self._closed:
            raise OutboxClosed("outbox is closed")
        assert self._loop is not None
        fut: asyncio.Future[int] = self._loop.create_future()
        op = _Put(kind, record, fut)
        if kind is not Kind.EVENT and self.telemetry_commit_delay_s > 0 and self._has_company(record.get("device")):
            self._hold(op)
        else:
            self._held.append(op)
            self._flush_held()
        return await fut

    def _has_company(self, device: Any) -> bool:
        """Whether a reading of ``device`` arriving now is likely to be joined by others soon."""
        assert self._loop is not None
        now = self._loop.time()
        if device != self._last_device:
            self._other_at, self._last_device = self._last_at, device
        self._last_at = now
        return bool(self._held) or now - self._other_at < TELEMETRY_GAP_S

    def _hold(self, op: _Put) -> None:
        assert self._loop is not None
        now = self._loop.time()
        if not self._held:
            self._held_since = now
        self._held.append(op)
        self._last_held = now
        if len(self._held) >= MAX_GROUP:
            self._flush_held()
        elif self._flush_timer is None:
            due = min(now + TELEMETRY_GAP_S, self._held_since + self.telemetry_commit_delay_s)
            self._flush_timer = self._loop.call_at(due, self._on_flush_timer)

    def _on_flush_timer(self) -> None:
        assert self._loop is not None
        self._flush_timer = None
        due = min(self._last_held + TELEMETRY_GAP_S, self._held_since + self.telemetry_commit_delay_s)
        if self._loop.time() >= due - 1e-4:
            self._flush_held()
        else:  # more arrived meanwhile: wait for the gap after the last one (never past the delay)
            self._flush_timer = self._loop.call_at(due, self._on_flush_timer)

    def _flush_held(self) -> None:
        """Hand everything held to the writer thread, as one operation."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._held:
            held, self._held = self._held, []
            self._ops.put(held)

    def ack(self, kind: Kind, seqs: Sequence[int]) -> None:
        """The broker has the records ``seqs``: delete them (in the next group commit)."""
        if seqs and not self._closed:
            self._ops.put([_Ack(kind, seqs)])

    async def fetch(self, kind: Kind, after: int, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Queued records of ``kind`` with seq > ``after``, oldest first, at most ``limit``/``max_bytes``."""
        return await asyncio.to_thread(self._fetch_sync, kind, after, limit, max_bytes)

    def _fetch_sync(self, kind: Kind, after: int, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        assert self._reader is not None
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT seq, payload FROM {TABLES[kind]} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        out: list[tuple[int, bytes]] = []
        total = 0
        for seq, payload in rows:
            total += len(payload) + 1
            if out and total > max_bytes:
                break
            out.append((seq, payload))
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._flush_held()
        self._ops.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._reader is not None:
            with self._read_lock:
                self._reader.close()

    # ------------------------------------------------------------------ writer thread

    def _writer(self) -> None:
        conn = self._writer_conn
        running = True
        while running:
            ops = self._ops.get()
            group: list[_Put | _Ack] = []
            if ops is None:
                running = False
            else:
                group.extend(ops)
            while running and len(group) < MAX_GROUP:  # whatever else is queued joins this transaction
                try:
                    ops = self._ops.get_nowait()
                except queue.Empty:
                    break
                if ops is None:
                    running = False
                    break
                group.extend(ops)
            if group:
                self._commit(conn, group)
        conn.close()

    def _commit(self, conn: sqlite3.Connection, group: list[_Put | _Ack]) -> None:
        puts = [op for op in group if isinstance(op, _Put)]
        acks = [op for op in group if isinstance(op, _Ack)]
        seq = self.stats.next_seq
        rows: dict[Kind, list[tuple[int, bytes]]] = {Kind.TELEMETRY: [], Kind.EVENT: []}
        assigned: list[tuple[asyncio.Future[int] | None, int]] = []
        for op in puts:
            op.record["seq"] = seq
            rows[op.kind].append((seq, orjson.dumps(op.record)))
            assigned.append((op.future, seq))
            seq += 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            for kind, kind_rows in rows.items():
                if kind_rows:
                    conn.executemany(f"INSERT INTO {TABLES[kind]} (seq, payload) VALUES (?, ?)", kind_rows)
            deleted: dict[Kind, list[int]] = {Kind.TELEMETRY: [], Kind.EVENT: []}
            for ack in acks:
                deleted[ack.kind].extend(ack.seqs)
            for kind, seqs in deleted.items():
                if seqs:
                    conn.executemany(f"DELETE FROM {TABLES[kind]} WHERE seq = ?", [(s,) for s in seqs])
            if puts:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?)", (seq,))
            thinned = self._enforce_budget(conn, rows, deleted)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("outbox %s: commit of %d records failed: %s", self.path, len(puts), exc)
            self._resolve_errors(puts, exc)
            return
        # Bookkeeping after the commit is durable.
        self.stats.next_seq = seq
        for kind, kind_rows in rows.items():
            self.stats.records[kind.value] += len(kind_rows)
            if kind_rows:
                self.newest[kind] = kind_rows[-1][0]
            for s, payload in kind_rows:
                self._sizes[s] = len(payload) + ROW_OVERHEAD
                self.stats.bytes += len(payload) + ROW_OVERHEAD
        for kind, seqs in deleted.items():
            for s in seqs:
                size = self._sizes.pop(s, None)
                if size is not None:
                    self.stats.bytes -= size
                    self.stats.records[kind.value] -= 1
                    self.stats.acked += 1
        for s in thinned:
            size = self._sizes.pop(s, None)
            if size is not None:
                self.stats.bytes -= size
                self.stats.records["telemetry"] -= 1
        self.stats.telemetry_thinned += len(thinned)
        self.stats.committed += len(puts)
        self.stats.commits += 1
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._resolve, assigned, bool(puts))

    def _enforce_budget(self, conn: sqlite3.Connection, rows: dict[Kind, list[tuple[int, bytes]]],
                        deleted: dict[Kind, list[int]]) -> list[int]:
        """Thin the oldest telemetry while the outbox is over budget; return the seqs removed."""
        added = sum(len(p) + ROW_OVERHEAD for kind_rows in rows.values() for _, p in kind_rows)
        removed = sum(self._sizes.get(s, 0) for seqs in deleted.values() for s in seqs)
        projected = self.stats.bytes + added - removed
        budget = self.stats.budget_bytes
        if projected <= budget:
            self.stats.events_over_budget = False
            return []
        gone = set(deleted[Kind.TELEMETRY])
        thinned: list[int] = []
        new_sizes = {s: len(p) + ROW_OVERHEAD for s, p in rows[Kind.TELEMETRY]}
        while projected > budget:
            count = self.stats.records["telemetry"] + len(rows[Kind.TELEMETRY]) - len(gone) - len(thinned)
            if count <= 0:
                break
            chunk = max(2, count // 10)
            oldest = [s for (s,) in conn.execute(
                "SELECT seq FROM telemetry ORDER BY seq LIMIT ?", (chunk + len(gone) + len(thinned),))
                if s not in gone and s not in thinned][:chunk]
            victims = oldest[1::2] if len(oldest) > 1 else oldest  # every second record; the last one alone
            if not victims:
                break
            conn.executemany("DELETE FROM telemetry WHERE seq = ?", [(s,) for s in victims])
            for s in victims:
                projected -= self._sizes.get(s, new_sizes.get(s, 0))
            thinned.extend(victims)
        if projected > budget and not self.stats.events_over_budget:
            log.error("outbox %s: events alone exceed the disk budget (%d > %d bytes); keeping them all",
                      self.path, projected, budget)
        self.stats.events_over_budget = projected > budget
        if thinned:
            log.warning("outbox %s over its budget of %d bytes: thinned %d old telemetry records",
                        self.path, budget, len(thinned))
        return thinned

    def _resolve(self, assigned: list[tuple[asyncio.Future[int] | None, int]], added: bool) -> None:
        for fut, seq in assigned:
            if fut is not None and not fut.done():
                fut.set_result(seq)
        if added:
            self.changed.set()

    def _resolve_errors(self, puts: list[_Put], exc: Exception) -> None:
        def fail() -> None:
            for op in puts:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(OSError(f"outbox commit failed: {exc}"))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fail)

