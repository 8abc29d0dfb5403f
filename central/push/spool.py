"""The batches made for the warehouse, durable in one SQLite file (``push.state_db``).

Each batch keeps its body and idempotency key from the moment it is made, so every retry sends the same bytes
under the same key. Status ``pending`` (to send at ``next_ms``), ``delivered`` or ``dead``: the dead-letter
record, listed by ``edugate push dead-letters`` and sent again by ``edugate push redeliver``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["pending", "delivered", "dead"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    key TEXT PRIMARY KEY,
    period TEXT NOT NULL,
    batch INTEGER NOT NULL,
    batches INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    last_error TEXT,
    done_ms INTEGER
);
CREATE INDEX IF NOT EXISTS batches_due ON batches (status, next_ms);
"""


@dataclass(frozen=True)
class Batch:
    key: str
    period: str
    batch: int
    batches: int
    body: bytes
    created_ms: int
    status: Status
    attempts: int
    next_ms: int
    last_error: str | None
    done_ms: int | None


class Spool:
    """One connection to the state file; used by one thread at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add(self, key: str, period: str, batch: int, batches: int, body: bytes, now_ms: int) -> bool:
        """Keep a new batch, due now; False (and nothing changes) when a batch with this key exists already."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO batches (key, period, batch, batches, body, created_ms, status, next_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)", (key, period, batch, batches, body, now_ms, now_ms))
        return cur.rowcount == 1

    def due(self, now_ms: int) -> list[Batch]:
        return self._select("WHERE status = 'pending' AND next_ms <= ? ORDER BY next_ms, created_ms, batch",
                            (now_ms,))

    def next_due_ms(self) -> int | None:
        row = self.db.execute("SELECT min(next_ms) FROM batches WHERE status = 'pending'").fetchone()
        return None if row[0] is None else int(row[0])

    def with_status(self, status: Status) -> list[Batch]:
        return self._select("WHERE status = ? ORDER BY created_ms, batch", (status,))

    def get(self, key: str) -> Batch | None:
        found = self._select("WHERE key = ?", (key,))
        return found[0] if found else None

    def delivered(self, key: str, attempts: int, now_ms: int) -> None:
        self.db.execute("UPDATE batches SET status = 'delivered', attempts = ?, done_ms = ?, last_error = NULL "
                        "WHERE key = ?", (attempts, now_ms, key))

    def retry_at(self, key: str, attempts: int, next_ms: int, error: str) -> None:
        self.db.execute("UPDATE batches SET attempts = ?, next_ms = ?, last_error = ? WHERE key = ?",
                        (attempts, next_ms, error, key))

    def dead(self, key: str, attempts: int, now_ms: int, error: str) -> None:
        self.db.execute("UPDATE batches SET status = 'dead', attempts = ?, done_ms = ?, last_error = ? "
                        "WHERE key = ?", (attempts, now_ms, error, key))

    def revive(self, keys: list[str] | None, now_ms: int) -> list[str]:
        """Dead letters back to pending, attempts from 0, due now (all of them with ``keys`` None); the keys
        revived. A key that is not a dead letter is left alone."""
        dead = {b.key for b in self.with_status("dead")}
        chosen = sorted(dead if keys is None else dead & set(keys))
        for key in chosen:
            self.db.execute("UPDATE batches SET status = 'pending', attempts = 0, next_ms = ?, done_ms = NULL "
                            "WHERE key = ?", (now_ms, key))
        return chosen

    def _select(self, where: str, args: tuple[object, ...]) -> list[Batch]:
        cur = self.db.execute("SELECT key, period, batch, batches, body, created_ms, status, attempts, next_ms, "
                              f"last_error, done_ms FROM batches {where}", args)
        return [Batch(*row) for row in cur.fetchall()]
