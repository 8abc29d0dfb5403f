"""Central event log: every event record (taps, alarms, summaries) kept queryable, once.

VictoriaMetrics keeps counts of events as series; this keeps the events themselves
(with their data: pseudonyms, decisions, positions) in SQLite, keyed by
(school, gateway, seq), so redelivery stores nothing twice. ``edugate ingest
--events-db FILE`` fills it; ``edugate events --db FILE`` queries it.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from edugate.contract.records import DEVICE_PATTERN, EVENT_TYPE_PATTERN, MAX_ROOM_CHARS, MAX_TS_MS

DEVICE_RE = re.compile(DEVICE_PATTERN)
EVENT_TYPE_RE = re.compile(EVENT_TYPE_PATTERN)
MAX_SEQ = 2**63 - 1  # an SQLite INTEGER, a PostgreSQL bigint
MAX_FUTURE_MS = 86_400_000  # as the ingest's line encoder: further ahead is a wrong clock or a forgery

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    school TEXT NOT NULL, gateway TEXT NOT NULL, seq INTEGER NOT NULL,
    ts INTEGER NOT NULL, device TEXT NOT NULL, room TEXT, type TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (school, gateway, seq)
);
CREATE INDEX IF NOT EXISTS events_by_type_ts ON events (type, ts);
CREATE INDEX IF NOT EXISTS events_by_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_by_school_type_ts ON events (school, type, ts);
"""


def query_sql(mark: str, *, type_: str | None, school: str | None, gateway: str | None, since_ms: int | None,
              limit: int) -> tuple[str, list[str | int]]:
    """The newest events matching the filters, as SQL with ``mark`` placeholders (``?`` for SQLite, ``%s`` for
    PostgreSQL) and its arguments: one query for both event stores."""
    where: list[str] = []
    args: list[str | int] = []
    for column, value in (("type", type_), ("school", school), ("gateway", gateway)):
        if value is not None:
            where.append(f"{column} = {mark}")
            args.append(value)
    if since_ms is not None:
        where.append(f"ts >= {mark}")
        args.append(since_ms)
    sql = "SELECT school, gateway, seq, ts, device, room, type, data FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return f"{sql} ORDER BY ts DESC, seq DESC LIMIT {mark}", [*args, limit]


class EventStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def add_payload(self, school: str, gateway: str, payload: bytes) -> int:
        """Store the well-formed event records of one MQTT message; return how many were new."""
        try:
            batch = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return 0
        if not isinstance(batch, list):
            return 0
        return self.add(school, gateway, well_formed(batch))

    def add(self, school: str, gateway: str, records: Iterable[dict[str, Any]]) -> int:
        rows = [(school, gateway, r["seq"], r["ts"], r["device"], r.get("room"), r["type"], data_json(r))
                for r in records]
        if not rows:
            return 0
        with self._lock:
            before = self._conn.total_changes
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")  # never leave a transaction open: every later write would fail
                raise
            return self._conn.total_changes - before

    def query(self, *, type_: str | None = None, school: str | None = None, gateway: str | None = None,
              since_ms: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = query_sql("?", type_=type_, school=school, gateway=gateway, since_ms=since_ms, limit=limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        keys = ("school", "gateway", "seq", "ts", "device", "room", "type")
        return [dict(zip(keys, row[:7], strict=True)) | {"data": orjson.loads(row[7])} for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def well_formed(batch: list[Any], now_ms: int | None = None) -> list[dict[str, Any]]:
    """The event records of a payload that both stores can hold and the ingest stores as series too: the
    contract's fields and patterns (docs/mqtt-contract.md), ``ts`` at most a day ahead of ``now_ms``."""
    max_ts = (int(time.time() * 1000) if now_ms is None else now_ms) + MAX_FUTURE_MS
    return [r for r in batch if _well_formed(r, max_ts)]


def _well_formed(record: Any, max_ts: int = MAX_TS_MS) -> bool:
    if not isinstance(record, dict) or record.get("kind") != "event":
        return False
    seq, ts, device, kind, room, data = (record.get(k) for k in ("seq", "ts", "device", "type", "room", "data"))
    return (type(seq) is int and 0 <= seq <= MAX_SEQ and type(ts) is int and 0 < ts < min(max_ts, MAX_TS_MS)
            and isinstance(device, str) and DEVICE_RE.fullmatch(device) is not None
            and isinstance(kind, str) and EVENT_TYPE_RE.fullmatch(kind) is not None
            and (room is None or (isinstance(room, str) and len(room) <= MAX_ROOM_CHARS and room.isprintable()))
            and (data is None or isinstance(data, dict)))


def data_json(record: dict[str, Any]) -> str:
    """The record's ``data`` as JSON text; a NUL character (which PostgreSQL's JSONB refuses) becomes U+FFFD."""
    text = orjson.dumps(record.get("data") or {}).decode()
    return text if "\\u0000" not in text else orjson.dumps(_without_nul(record.get("data"))).decode()


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {str(k).replace("\x00", "\ufffd"): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value
