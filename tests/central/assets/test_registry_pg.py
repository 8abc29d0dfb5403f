"""The registry from the PostgreSQL event store (``events.postgres_dsn``) gives the same rows as from SQLite, and
PostgreSQL serves one school's query with the (school, type, ts) index."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edugate.central.assets.registry import RegistryWindow, load_registry
from edugate.central.eventstore import EventStore

try:
    from edugate.central.eventstore_pg import PgEventStore
    from edugate.simulators.postgres import Postgres, pg_bindir
    pg_bindir()
except (ImportError, FileNotFoundError) as exc:
    pytest.skip(f"PostgreSQL or psycopg missing: {exc}", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)
DAY = 86_400_000


def test_the_same_registry_from_postgresql_and_sqlite(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    day = time.strftime("%Y-%m-%d", time.localtime(now / 1000))
    batches = {school: [
        {"seq": 1, "ts": now - DAY, "device": "proj", "type": "asset",
         "data": {"asset": "proj", "source": "device", "driver": "pjlink", "serial": f"SN-{school}"}},
        {"seq": 2, "ts": now - 5, "device": "proj", "type": "asset_usage",
         "data": {"asset": "proj", "day": day, "power_on_h": 1.0, "powered": True, "last_seen": now - 5}},
        {"seq": 3, "ts": now, "device": "_gateway", "type": "asset",
         "data": {"asset": "micro-01", "source": "inventory", "name": "Kính hiển vi"}}] for school in ("a", "b")}
    server = Postgres().start()
    try:
        pg, lite = PgEventStore(server.dsn), EventStore(tmp_path / "events.db")
        for school, records in batches.items():
            pg.add(school, "gw-1", records)
            lite.add(school, "gw-1", records)
        window = RegistryWindow()
        for schools in (None, ["a"]):
            assert load_registry(pg, now, window, schools=schools) == load_registry(lite, now, window,
                                                                                    schools=schools)
        rows = load_registry(pg, now, window, schools=["a"])
        assert [(r.asset, r.serial, r.status) for r in rows] == [("micro-01", "", "not tracked"),
                                                                 ("proj", "SN-a", "in use")]
        with pg._lock:  # a handful of rows: ask which index it would use, were the table big
            pg._connection().execute("SET enable_seqscan = off")
        plan = pg.explain(school="a", type_="asset_usage")
        assert "events_by_school_type_ts" in plan, plan
        pg.close()
        lite.close()
    finally:
        server.cleanup()
