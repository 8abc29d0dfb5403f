"""Central event log in PostgreSQL: the same interface as :class:`edugate.central.eventstore.EventStore`.

For central at city scale: every ingest worker (on any machine) writes to one database, idempotent on
(school, gateway, seq), so a redelivered message or two workers seeing the same message store an event once. The
SQLite file (``eventstore.py``) stays the default for one machine; ``events.postgres_dsn`` in ``central.yaml``
selects this one (:func:`open_event_store`).

Indexes serve the queries ``edugate events`` and the pages make: by type and time, by time, one gateway's
events by time (its page), and one school's events of a type by time (the asset registry, ``edugate assets``).
``data`` is JSONB: its keys are queryable (``data->>'n'``) without a schema change.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import psycopg

from edugate.central.eventstore import EventStore, data_json, query_sql, well_formed

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    school TEXT NOT NULL, gateway TEXT NOT NULL, seq BIGINT NOT NULL,
    ts BIGINT NOT NULL, device TEXT NOT NULL, room TEXT, type TEXT NOT NULL, data JSONB NOT NULL,
    PRIMARY KEY (school, gateway, seq)
);
CREATE INDEX IF NOT EXISTS events_by_type_ts ON events (type, ts DESC);
CREATE INDEX IF NOT EXISTS events_by_ts ON events (ts DESC);
CREATE INDEX IF NOT EXISTS events_by_gateway_ts ON events (school, gateway, ts DESC);
CREATE INDEX IF NOT EXISTS events_by_school_type_ts ON events (school, type, ts DESC);
"""

INSERT = """
INSERT INTO events (school, gateway, seq, ts, device, room, type, data)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[],
                     %s::jsonb[])
ON CONFLICT (school, gateway, seq) DO NOTHING
"""


class EventStoreUnavailable(sqlite3.Error):
    """The database refused or could not be reached. A ``sqlite3.Error`` so that the ingest worker's handler
    for event-log failures (logged and counted in ``events_store_errors``) covers both stores."""


class PgEventStore:
    """Events in PostgreSQL. One connection per store, reopened after a failure; thread-safe."""

    def __init__(self, dsn: str, *, connect_timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(SCHEMA)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.dsn, autocommit=True,
                                             connect_timeout=max(1, int(self.connect_timeout_s)))
            except psycopg.Error as exc:
                raise EventStoreUnavailable(f"event database {where(self.dsn)}: {exc}") from None
        return self._conn

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
        rows = [(r["seq"], r["ts"], r["device"], r.get("room"), r["type"], data_json(r)) for r in records]
        if not rows:
            return 0
        columns = list(zip(*rows, strict=True))
        args = [[school] * len(rows), [gateway] * len(rows), *[list(c) for c in columns]]
        with self._lock:
            try:
                cur = self._connection().execute(INSERT, args)
            except psycopg.Error as exc:
                raise EventStoreUnavailable(f"event database {where(self.dsn)}: {exc}") from None
            return max(cur.rowcount, 0)

    def query(self, *, type_: str | None = None, school: str | None = None, gateway: str | None = None,
              since_ms: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = query_sql("%s", type_=type_, school=school, gateway=gateway, since_ms=since_ms, limit=limit)
        with self._lock:
            try:
                rows = self._connection().execute(sql, args).fetchall()
            except psycopg.Error as exc:
                raise EventStoreUnavailable(f"event database {where(self.dsn)}: {exc}") from None
        keys = ("school", "gateway", "seq", "ts", "device", "room", "type", "data")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def explain(self, **filters: Any) -> str:
        """The plan PostgreSQL picks for :meth:`query` with these filters (to check an index serves it)."""
        where = " AND ".join(f"{k.rstrip('_')} = %s" for k in filters)
        sql = "EXPLAIN SELECT * FROM events" + (f" WHERE {where}" if where else "") + " ORDER BY ts DESC LIMIT 100"
        with self._lock:
            return "\n".join(r[0] for r in self._connection().execute(sql, list(filters.values())).fetchall())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def where(dsn: str) -> str:
    """The DSN without a password, for messages."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def open_event_store(*, db: Path | None = None, postgres_dsn: str | None = None) -> EventStore | PgEventStore | None:
    """The event store ``central.yaml`` asks for: PostgreSQL when a DSN is given, else the SQLite file, else none."""
    if postgres_dsn:
        return PgEventStore(postgres_dsn)
    return EventStore(db) if db is not None else None
