"""The durable outbox: every record is committed to SQLite (WAL) before anyone
is told it was accepted, and leaves only when the broker has PUBACKed the
message that carried it (:meth:`Outbox.ack`) or, with the end-to-end
acknowledgement, when central has confirmed it stored it (:meth:`Outbox.confirm`,
seq ranges from ``.../stored``; the uplink then does not call ``ack``).

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
* Telemetry and events live in separate tables with one shared sequence.
* The disk budget bounds the files (database and WAL), not payload bytes: the
  pages in use stay under 7/8 of it, the WAL is checkpointed and truncated
  once it passes the rest (``wal_limit``), and the database file, which never
  shrinks, only grows when no freed page is left, so it stays near the pages
  in use. (The WAL is truncated past half ``wal_limit``, so that one more
  transaction, a thinning chunk included, still fits under it.) Nothing is held in memory per queued record.
* Over the budget, old telemetry becomes coarser evenly across the whole
  backlog, never a hole (:class:`_ThinPass`): a pass walks every reading but
  the newest tenth and keeps, per device, one reading per ``spacing``: twice
  the device's average spacing over what the pass walks, and never finer than
  the previous pass left it, so each pass at least halves the readings and
  leaves them at one even resolution; in chunks of ``THIN_CHUNK`` rows that go into the ordinary group commits, so
  a pass never stalls the records arriving meanwhile. The rows a chunk keeps
  are rewritten packed, so the pages of the ones thinned are really freed.
  The gateway's own health records, and every event, are never thinned; when
  they alone exceed the budget they are kept and ``events_over_budget`` says
  so. Each episode over the budget is handed to ``on_over_budget`` (the
  gateway turns it into an ``outbox_over_budget`` event for central) at its
  start, then at most once per ``OVER_BUDGET_EVENT_EVERY_S``; an episode ends
  when the pages in use fall under half the target. The log gets one summary
  line per ``THIN_LOG_EVERY_S``.
  A record is thinned or delivered, never both: a telemetry fetch reads its rows and marks them in flight
  under one lock (``_inflight_lock``), which a transaction that thins holds from its first decision to its
  COMMIT; so the fetch reads after that COMMIT, or the thinning sees the mark.
* The tables are created in one transaction: a reader of the file sees all of them or none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from edugate.contract.records import Kind
from edugate.contract.state import GATEWAY_DEVICE

log = logging.getLogger(__name__)

DATA_SHARE = 7 / 8  # the pages in use stay under this share of the budget; the rest is the WAL's
MIN_WAL_LIMIT = 64 * 1024  # the WAL is truncated once it passes max(budget/8, this), at most MAX_WAL_LIMIT
MAX_WAL_LIMIT = 16 * 1024 * 1024
THIN_CHUNK = 2000  # telemetry rows one commit thins at most (a pass over a large backlog spans many commits),
# and no more than a quarter of the WAL limit's worth: a chunk's rows are deleted and written again
FRESH_SHARE = 0.1  # the newest tenth of the telemetry backlog is left at full resolution by a pass ...
FRESH_MIN = 64  # ... and at least this many readings (but never more than half)
PASS_SAMPLE = 1024  # rows sampled to find each device's share of the backlog when a pass starts ...
PASS_RUN = 32  # ... in runs of this many consecutive rows
OVER_BUDGET_EVENT = "outbox_over_budget"
OVER_BUDGET_EVENT_EVERY_S = 600.0  # while over budget, one event at the start, then at most one per 10 min
THIN_LOG_EVERY_S = 60.0  # one summary log line per minute while thinning
MAX_GROUP = 5000  # records in one transaction at most
DEFAULT_TELEMETRY_COMMIT_DELAY_S = 0.01  # the longest a telemetry-only group waits for more
TELEMETRY_GAP_S = 0.001  # ... and it stops waiting when nothing arrived for this long
TABLES = {Kind.TELEMETRY: "telemetry", Kind.EVENT: "events"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS telemetry (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
"""


SCHEMA_VERSION = 1  # meta 'schema_version': the layout above; a newer file is refused (OutboxSchemaError)


class OutboxSchemaError(RuntimeError):
    """The outbox file was written by a newer EduGate (a higher schema version) than this one reads."""


def read_schema_version(conn: sqlite3.Connection) -> int:
    """The file's schema version; a file from before versions were recorded (no meta row) is version 1."""
    with contextlib.suppress(sqlite3.OperationalError):  # no meta table yet: a new file
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 1
    return 1


def check_schema_version(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a newer file; record the version in an older or new one (``edugate migrate`` does the same)."""
    version = read_schema_version(conn)
    if version > SCHEMA_VERSION:
        raise OutboxSchemaError(f"{path}: outbox schema version {version} was written by a newer EduGate; this "
                                f"one reads up to version {SCHEMA_VERSION}. Install the newer EduGate again, or "
                                "move the file aside (it may hold records not yet sent)")
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))


def create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables (if missing) and check/record the schema version, in ONE transaction: a reader of the
    file (the doctor, ``edugate outbox``, another process) sees all of the tables or none. (``executescript``
    alone would commit each CREATE by itself: a reader could find ``meta`` and no ``events`` yet.)"""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in filter(str.strip, SCHEMA.split(";")):
            conn.execute(statement)
        check_schema_version(conn, path)
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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
    disk_bytes: int = 0  # database + WAL files, as measured after the latest commit
    thin_passes: int = 0
    confirmed: int = 0  # records deleted on central's confirmation (end-to-end acknowledgement)
    thinned_unconfirmed: int = 0  # of telemetry_thinned: acknowledged by the broker, not yet confirmed (may arrive)

    def as_dict(self) -> dict[str, Any]:
        return {
            "outbox_records": sum(self.records.values()),
            "outbox_events": self.records["event"],
            "outbox_telemetry": self.records["telemetry"],
            "outbox_bytes": self.bytes,
            "outbox_disk_bytes": self.disk_bytes,
            "outbox_budget_bytes": self.budget_bytes,
            "outbox_committed": self.committed,
            "outbox_commits": self.commits,
            "outbox_acked": self.acked,
            "telemetry_thinned": self.telemetry_thinned,
            "events_over_budget": self.events_over_budget,
            "outbox_thin_passes": self.thin_passes,
            "outbox_confirmed": self.confirmed,
            "telemetry_thinned_unconfirmed": self.thinned_unconfirmed,
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


@dataclass(slots=True)
class _Confirm:
    kind: Kind
    ranges: Sequence[tuple[int, int]]  # inclusive seq ranges central stored


@dataclass
class _ThinPass:
    """One pass of thinning over the telemetry up to ``end`` (inclusive); ``cursor``: the last seq done.
    Per device, a reading is kept when it comes at least ``spacing`` (ms, less 1/8 for jitter) after the one
    kept before it: the whole span ends up at one resolution, whatever resolution each part had before."""

    end: int
    spacing: dict[str, int]  # device -> ms between kept readings; a device not in it is not thinned
    cursor: int = 0
    last_kept: dict[str, int] = field(default_factory=dict)  # device -> ts of the reading kept last

    def keep(self, device: str, ts: Any) -> bool:
        spacing = self.spacing.get(device)
        if spacing is None or type(ts) is not int:
            return True  # not ours to judge
        last = self.last_kept.get(device)
        if last is None or ts - last >= spacing - spacing // 8 or ts < last:  # (a clock stepped back: restart)
            self.last_kept[device] = ts
            return True
        return False


def _ts(payload: bytes) -> int:
    try:
        ts = orjson.loads(payload).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return ts if type(ts) is int else 0


def _device(payload: bytes) -> str | None:
    try:
        device = orjson.loads(payload).get("device")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return device if isinstance(device, str) else None


def _connect(path: Path, sync: str, wal_limit: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
    conn.execute(f"PRAGMA journal_size_limit={wal_limit}")
    return conn


def wal_limit_for(budget_bytes: int) -> int:
    """The WAL size past which the writer checkpoints and truncates it."""
    return max(MIN_WAL_LIMIT, min(MAX_WAL_LIMIT, budget_bytes // 8))


class Outbox:
    """Durable FIFO of records per kind. Create with :meth:`open`, inside a running loop."""

    def __init__(self, path: Path, *, budget_bytes: int, sync: str = "full",
                 telemetry_commit_delay_s: float = DEFAULT_TELEMETRY_COMMIT_DELAY_S) -> None:
        self.path = Path(path)
        self.stats = OutboxStats(budget_bytes=budget_bytes)
        self.sync = sync
        self.telemetry_commit_delay_s = telemetry_commit_delay_s
        self._ops: queue.SimpleQueue[list[_Put | _Ack | _Confirm] | None] = queue.SimpleQueue()
        self._held: list[_Put | _Ack | _Confirm] = []  # telemetry waiting for company (event loop side)
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
        # Held by a telemetry fetch from its SELECT until it has marked the rows in flight (``_sent_upto``), and by
        # the writer thread from its first thinning decision in a transaction until that transaction's COMMIT:
        # so a fetch never returns rows a thinning commit deletes (it reads after that COMMIT, or the thinning
        # sees its mark). Without it a pass could delete rows read but not yet marked: counted thinned, and sent.
        self._inflight_lock = threading.Lock()
        self._inflight_held = False  # writer thread only: it holds _inflight_lock in the current transaction
        self._closed = False
        self.changed = asyncio.Event()  # set after every commit that added records
        # Called on the event loop with the figures of an episode over the budget (see the module's docstring).
        self.on_over_budget: Callable[[dict[str, Any]], None] | None = None
        self.newest: dict[Kind, int] = {Kind.TELEMETRY: 0, Kind.EVENT: 0}  # highest committed seq per kind
        self.wal_limit = wal_limit_for(budget_bytes)
        self.data_target = int(budget_bytes * DATA_SHARE)  # pages in use above this: thin
        # writer thread only
        self._pass: _ThinPass | None = None
        # Telemetry up to this seq was handed to the uplink on its current connection (published, awaiting its
        # PUBACK): never thinned, so a record is either thinned or delivered, and the count stays exact.
        self._sent_upto = 0
        # ... except what the uplink says the broker acknowledged (:meth:`handed`): with the end-to-end
        # acknowledgement such records stay until central confirms them, and may be thinned meanwhile.
        self._handed_upto = 0
        self.central_confirms = False  # central has confirmed records at least once (persisted in meta)
        self._spacing: dict[str, int] = {}  # device -> spacing the last pass left (ms); reset once drained
        self._page_size = 4096
        self._over_since: float | None = None  # monotonic time the current episode over the budget began
        self._over_event_at = float("-inf")
        self._thin_log_at = float("-inf")
        self._thin_log_count = 0

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
        self._writer_conn = _connect(self.path, self.sync, self.wal_limit)
        self._writer_conn.execute(f"PRAGMA wal_autocheckpoint={max(16, self.wal_limit // 4096)}")
        create_schema(self._writer_conn, self.path)
        (self._page_size,) = self._writer_conn.execute("PRAGMA page_size").fetchone()
        row = self._writer_conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        top = 0
        for kind, table in TABLES.items():
            (m,) = self._writer_conn.execute(f"SELECT coalesce(max(seq), 0) FROM {table}").fetchone()
            top = max(top, m)
            self.newest[kind] = m
        self.stats.next_seq = max(row[0] if row else 1, top + 1)
        confirms = self._writer_conn.execute("SELECT value FROM meta WHERE key='central_confirms'").fetchone()
        self.central_confirms = bool(confirms and confirms[0])
        for kind, table in TABLES.items():
            (self.stats.records[kind.value],) = self._writer_conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        self.stats.bytes = self._used_bytes(self._writer_conn)
        self._reader = _connect(self.path, self.sync, self.wal_limit)
        self._checkpoint(self._writer_conn)
        log.info("outbox %s: %d queued records, next seq %d, %d bytes on disk", self.path,
                 sum(self.stats.records.values()), self.stats.next_seq, self.stats.disk_bytes)

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

    def confirm(self, kind: Kind, ranges: Sequence[tuple[int, int]]) -> None:
        """Central stored the records of ``kind`` in these inclusive seq ranges: delete them (next group commit),
        and remember for good that central confirms (:attr:`central_confirms`)."""
        if ranges and not self._closed:
            self.central_confirms = True
            self._ops.put([_Confirm(kind, ranges)])

    def handed(self, upto: int) -> None:
        """Every telemetry record up to seq ``upto`` sent on this connection was acknowledged by the broker: those
        kept for central's confirmation are no longer in flight, so thinning may take them (counted apart)."""
        self._handed_upto = upto

    @property
    def thinning(self) -> bool:
        """A thinning pass is under way (it goes on by itself, a chunk per commit, until the backlog is done)."""
        return self._pass is not None

    async def fetch(self, kind: Kind, after: int, limit: int, max_bytes: int,
                    upto: int | None = None) -> list[tuple[int, bytes]]:
        """Queued records of ``kind`` with seq > ``after``, oldest first, at most ``limit``/``max_bytes``.
        With ``upto`` (a resend of records the broker acknowledged before): only seq <= ``upto``."""
        return await asyncio.to_thread(self._fetch_sync, kind, after, limit, max_bytes, upto)

    def _fetch_sync(self, kind: Kind, after: int, limit: int, max_bytes: int,
                    upto: int | None = None) -> list[tuple[int, bytes]]:
        assert self._reader is not None
        if kind is Kind.TELEMETRY and upto is None:  # rows about to be in flight: read and mark them in one go
            with self._inflight_lock:
                return self._fetch_rows(kind, after, limit, max_bytes, upto, mark=True)
        return self._fetch_rows(kind, after, limit, max_bytes, upto, mark=False)

    def _fetch_rows(self, kind: Kind, after: int, limit: int, max_bytes: int, upto: int | None,
                    mark: bool) -> list[tuple[int, bytes]]:
        assert self._reader is not None
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT seq, payload FROM {TABLES[kind]} WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, (1 << 63) - 1 if upto is None else upto, limit)).fetchall()
        out: list[tuple[int, bytes]] = []
        total = 0
        for seq, payload in rows:
            total += len(payload) + 1
            if out and total > max_bytes:
                break
            out.append((seq, payload))
        if mark:
            if after < self._sent_upto:  # the uplink starts over (a new connection resends everything)
                self._sent_upto = after
                self._handed_upto = min(self._handed_upto, after)
            if out:
                self._sent_upto = max(self._sent_upto, out[-1][0])
        return out

    async def oldest(self, kind: Kind) -> int | None:
        """The lowest seq of ``kind`` still queued (None: none)."""
        return await asyncio.to_thread(self._oldest_sync, kind)

    def _oldest_sync(self, kind: Kind) -> int | None:
        assert self._reader is not None
        with self._read_lock:
            (seq,) = self._reader.execute(f"SELECT min(seq) FROM {TABLES[kind]}").fetchone()
        return int(seq) if seq is not None else None

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
            if self._pass is not None:  # thinning under way: do not wait for records, go on with the pass
                try:
                    ops = self._ops.get_nowait()
                except queue.Empty:
                    ops = []
            else:
                ops = self._ops.get()
            group: list[_Put | _Ack | _Confirm] = []
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
            if group or (running and self._pass is not None):
                self._commit(conn, group)
        with contextlib.suppress(sqlite3.Error):
            self._checkpoint(conn)
        conn.close()

    # The budget, in pages and files

    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        """Bytes of the database's pages in use (inside a transaction: as that transaction sees them)."""
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        return int((pages - free) * self._page_size)

    def _disk_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += (self.path.parent / (self.path.name + suffix)).stat().st_size
        return total

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Truncate the WAL once it passed half ``wal_limit`` (a reader in the middle of a fetch: next time)."""
        wal = self.path.parent / (self.path.name + "-wal")
        with contextlib.suppress(OSError):
            if wal.stat().st_size > self.wal_limit // 2:  # so that the next transaction still fits
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        self.stats.disk_bytes = self._disk_bytes()

    def _commit(self, conn: sqlite3.Connection, group: list[_Put | _Ack | _Confirm]) -> None:
        puts = [op for op in group if isinstance(op, _Put)]
        acks = [op for op in group if isinstance(op, _Ack)]
        confirms = [op for op in group if isinstance(op, _Confirm)]
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
            gone = {Kind.TELEMETRY: 0, Kind.EVENT: 0}
            for kind, seqs in deleted.items():
                if seqs:
                    gone[kind] = conn.executemany(f"DELETE FROM {TABLES[kind]} WHERE seq = ?",
                                                  [(s,) for s in seqs]).rowcount
            confirmed = 0
            for confirm in confirms:
                count = conn.executemany(f"DELETE FROM {TABLES[confirm.kind]} WHERE seq BETWEEN ? AND ?",
                                         confirm.ranges).rowcount
                gone[confirm.kind] += count
                confirmed += count
            if confirms:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('central_confirms', 1)")
            telemetry_left = self.stats.records["telemetry"] + len(rows[Kind.TELEMETRY]) - gone[Kind.TELEMETRY]
            thinned, used, notice = self._enforce_budget(conn, telemetry_left)
            if puts:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?)", (seq,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("outbox %s: commit of %d records failed: %s", self.path, len(puts), exc)
            self._pass = None
            self._resolve_errors(puts, exc)
            return
        finally:
            self._release_inflight()
        # Bookkeeping after the commit is durable.
        self.stats.next_seq = seq
        for kind, kind_rows in rows.items():
            self.stats.records[kind.value] += len(kind_rows) - gone[kind]
            if kind_rows:
                self.newest[kind] = kind_rows[-1][0]
        self.stats.acked += gone[Kind.TELEMETRY] + gone[Kind.EVENT] - confirmed
        self.stats.confirmed += confirmed
        self.stats.records["telemetry"] -= thinned
        self.stats.telemetry_thinned += thinned
        self.stats.bytes = used
        if self.stats.records["telemetry"] == 0 and self._pass is None:
            self._spacing.clear()  # drained: the next outage starts at full resolution
        self.stats.committed += len(puts)
        if group:
            self.stats.commits += 1
        self._checkpoint(conn)
        self._log_thinning(thinned)
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._resolve, assigned, bool(puts))
                if notice is not None:
                    self._loop.call_soon_threadsafe(self._notify_over_budget, notice)

    def _enforce_budget(self, conn: sqlite3.Connection,
                        telemetry_left: int) -> tuple[int, int, dict[str, Any] | None]:
        """Inside the commit's transaction: go on with (or start) thinning while the pages in use are over
        the target, at most ``THIN_CHUNK`` rows (or a quarter of the WAL limit's worth) this time. Returns (rows
        thinned, bytes in use, the figures for ``on_over_budget`` if a notice is due)."""
        used = self._used_bytes(conn)
        thinned = 0
        rows_done = 0
        row_bytes = max(64, used // max(1, telemetry_left + self.stats.records["event"]))
        chunk = max(32, min(THIN_CHUNK, self.wal_limit // 4 // row_bytes))  # rows are deleted and written again
        while rows_done < chunk and (self._pass is not None or used > self.data_target):
            if self._pass is None:
                self._pass = self._start_pass(conn, telemetry_left - thinned)
                if self._pass is None:
                    break  # nothing left that may be thinned
            done, removed = self._thin_chunk(conn, self._pass, chunk - rows_done)
            rows_done += done
            thinned += removed
            used = self._used_bytes(conn)
            if done == 0 or self._pass.cursor >= self._pass.end:
                self._spacing = dict(self._pass.spacing)
                self._pass = None
                if used <= self.data_target:
                    break
        over = used > self.data_target
        stuck = over and self._pass is None
        if stuck and not self.stats.events_over_budget:
            log.error("outbox %s: events alone exceed the disk budget (with the gateway's health records, "
                      "which are never thinned either: %d > %d bytes in use); keeping them all", self.path, used,
                      self.data_target)
        self.stats.events_over_budget = stuck
        now = time.monotonic()
        notice = None
        if over or thinned or self._pass is not None:
            if self._over_since is None:
                self._over_since = now
            if now - self._over_event_at >= OVER_BUDGET_EVENT_EVERY_S:
                self._over_event_at = now
                notice = self._over_budget_figures(used, thinned)
        elif used <= self.data_target // 2:  # the episode is over (hysteresis: not at every pass)
            self._over_since = None
            self._over_event_at = float("-inf")
        return thinned, used, notice

    def _start_pass(self, conn: sqlite3.Connection, telemetry_rows: int) -> _ThinPass | None:
        """A pass over all telemetry but the newest tenth: per device, twice its average spacing there (and
        never finer than the previous pass left it), so the pass at least halves what it walks, evenly.

        The average comes from a sample of ``PASS_SAMPLE`` rows, in runs from random places in the range (index lookups,
        not a scan: starting a pass costs milliseconds, whatever the backlog): a device's share of the sample
        times the rows in the range is its count, the range's first and last timestamps its span."""
        fresh = min(max(int(telemetry_rows * FRESH_SHARE), FRESH_MIN), telemetry_rows // 2)
        row = conn.execute("SELECT seq, payload FROM telemetry ORDER BY seq DESC LIMIT 1 OFFSET ?",
                           (fresh,)).fetchone()
        first = conn.execute("SELECT seq, payload FROM telemetry ORDER BY seq LIMIT 1").fetchone()
        if row is None or first is None:
            return None
        end, rows_in_range = row[0], telemetry_rows - fresh
        span = _ts(row[1]) - _ts(first[1])
        shares: dict[str, int] = {}
        seen: set[int] = set()
        samples = min(PASS_SAMPLE, rows_in_range)
        # runs of rows from random positions: evenly spaced positions alias with devices polled in turn, and
        # single rows after a random seq favour the row after the widest gap (the first device of each round)
        rng = random.Random(end)
        for _ in range(max(1, samples // PASS_RUN)):
            at = rng.randint(first[0], end)
            for seq, payload in conn.execute("SELECT seq, payload FROM telemetry WHERE seq >= ? AND seq <= ? "
                                             "ORDER BY seq LIMIT ?", (at, end, PASS_RUN)):
                if seq in seen:
                    continue
                seen.add(seq)
                device = _device(payload)
                if device is not None and device != GATEWAY_DEVICE:
                    shares[device] = shares.get(device, 0) + 1
        spacing: dict[str, int] = {}
        for device, share in shares.items():
            count = rows_in_range * share / len(seen)
            if count >= 2 and span > 0:
                previous = self._spacing.get(device, 0)
                estimate = int(2 * span / (count - 1))
                spacing[device] = max(min(estimate, 4 * previous) if previous else estimate, previous, 1)
        if not spacing:
            return None
        self.stats.thin_passes += 1
        return _ThinPass(end=end, spacing=spacing)

    def _thin_chunk(self, conn: sqlite3.Connection, thin: _ThinPass, limit: int) -> tuple[int, int]:
        """Thin the next ``limit`` rows of the pass: delete them all and write back the ones kept, packed
        (deleting every other row alone would leave half-empty pages that free nothing)."""
        if not self._inflight_held:  # from here until this transaction ends, no fetch reads or marks rows
            self._inflight_lock.acquire()
            self._inflight_held = True
        chunk = conn.execute("SELECT seq, payload FROM telemetry WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                             (thin.cursor, thin.end, max(1, limit))).fetchall()
        if not chunk:
            thin.cursor = thin.end
            return 0, 0
        kept: list[tuple[int, bytes]] = []
        for seq, payload in chunk:
            try:
                record = orjson.loads(payload)
                device, ts = str(record.get("device")), record.get("ts")
            except (orjson.JSONDecodeError, AttributeError):
                kept.append((seq, payload))  # not ours to judge
                continue
            if self._handed_upto < seq <= self._sent_upto or device == GATEWAY_DEVICE or thin.keep(device, ts):
                # in flight to the broker; or the gateway's health, which is never thinned
                kept.append((seq, payload))
            elif seq <= self._sent_upto:  # the broker has it, central has not confirmed it: it may yet arrive
                self.stats.thinned_unconfirmed += 1
        thin.cursor = chunk[-1][0]
        removed = len(chunk) - len(kept)
        if removed:
            conn.execute("DELETE FROM telemetry WHERE seq >= ? AND seq <= ?", (chunk[0][0], chunk[-1][0]))
            conn.executemany("INSERT INTO telemetry (seq, payload) VALUES (?, ?)", kept)
        return len(chunk), removed

    def _release_inflight(self) -> None:
        """The transaction that thinned is committed (or rolled back): fetches may read and mark again."""
        if self._inflight_held:
            self._inflight_held = False
            self._inflight_lock.release()

    def _over_budget_figures(self, used: int, thinned: int) -> dict[str, Any]:
        spacing = max(self._spacing.values(), default=0)
        if self._pass is not None:
            spacing = max([spacing, *self._pass.spacing.values()])
        return {"budget_bytes": self.stats.budget_bytes, "used_bytes": used, "disk_bytes": self._disk_bytes(),
                "telemetry_thinned": self.stats.telemetry_thinned + thinned, "telemetry_spacing_ms": spacing,
                "events_over_budget": self.stats.events_over_budget}

    def _notify_over_budget(self, figures: dict[str, Any]) -> None:
        if self.on_over_budget is not None:
            try:
                self.on_over_budget(figures)
            except Exception:  # a bug in the hook must not stop the outbox
                log.exception("outbox %s: the over-budget hook failed", self.path)

    def _log_thinning(self, thinned: int) -> None:
        """One summary line per ``THIN_LOG_EVERY_S`` while thinning, not one per commit."""
        self._thin_log_count += thinned
        now = time.monotonic()
        if self._thin_log_count and now - self._thin_log_at >= THIN_LOG_EVERY_S:
            spacing = max((self._pass.spacing if self._pass is not None else self._spacing).values(), default=0)
            log.warning("outbox %s over its budget of %d bytes (%d on disk): thinned %d old readings since the "
                        "last line (%d in all); older readings are kept at about one per %d ms per device (%s)",
                        self.path, self.stats.budget_bytes, self.stats.disk_bytes, self._thin_log_count,
                        self.stats.telemetry_thinned, spacing,
                        "a pass under way" if self._pass is not None else f"{self.stats.thin_passes} passes")
            self._thin_log_at, self._thin_log_count = now, 0

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

