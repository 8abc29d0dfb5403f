"""Central event log: every event record (taps, alarms, summaries) kept queryable, once.

VictoriaMetrics keeps counts of events as series; this keeps the events themselves
(with their data: pseudonyms, decisions, positions) in SQLite, keyed by
(school, gateway, seq), so redelivery stores nothing twice. ``edugate ingest
--events-db FILE`` fills it; ``edugate events --db FILE`` queries it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

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
        return self.add(school, gateway, (r for r in batch if _well_formed(r)))

    def add(self, school: str, gateway: str, records: Iterable[dict[str, Any]]) -> int:
        rows = [(school, gateway, r["seq"], r["ts"], r["device"], r.get("room"), r["type"],
                 orjson.dumps(r.get("data") or {}).decode()) for r in records]
        if not rows:
            return 0
        with self._lock:
            before = self._conn.total_changes
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._conn.execute("COMMIT")
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


def _well_formed(record: Any) -> bool:
    return (isinstance(record, dict) and type(record.get("seq")) is int and type(record.get("ts")) is int
            and isinstance(record.get("device"), str) and isinstance(record.get("type"), str)
            and record.get("kind") == "event")
