"""The central event log in PostgreSQL: the SQLite store's behaviour, shared by workers, indexed, and honest
about a database that is down. A real PostgreSQL (Debian's) on a free loopback port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from edugate.central.eventstore import EventStore
from tests.central import event, telemetry

try:
    from edugate.central.eventstore_pg import EventStoreUnavailable, PgEventStore, open_event_store
    from edugate.simulators.postgres import Postgres, pg_bindir
    pg_bindir()
except (ImportError, FileNotFoundError) as exc:
    pytest.skip(f"PostgreSQL or psycopg missing: {exc}", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres().start()
    yield server
    server.cleanup()


@pytest.fixture
def store(postgres: Postgres) -> Iterator[PgEventStore]:
    s = PgEventStore(postgres.dsn)
    with s._lock:
        s._connection().execute("TRUNCATE events")
    yield s
    s.close()


def key(e: dict) -> tuple:
    return e["school"], e["gateway"], e["seq"]


def test_same_answers_as_the_sqlite_store(store: PgEventStore, tmp_path: Path) -> None:
    lite = EventStore(tmp_path / "events.sqlite")
    records = [event(i, type_="card_tap" if i % 2 else "bus_left_onboard") for i in range(1, 11)]
    for s in (store, lite):
        assert s.add_payload("school-1", "gw-a", orjson.dumps(records[:6])) == 6
        assert s.add_payload("school-1", "gw-a", orjson.dumps(records[3:])) == 4  # 3 of them redelivered
        assert s.add_payload("school-1", "gw-b", orjson.dumps(records[:2])) == 2
        assert s.add_payload("school-1", "gw-a", b"not json") == 0
        assert s.add_payload("school-1", "gw-a", orjson.dumps([telemetry(99), {"seq": "x"}])) == 0
    for query in ({"type_": "bus_left_onboard", "gateway": "gw-a"}, {"limit": 1000}, {"school": "school-1"},
                  {"since_ms": records[8]["ts"], "gateway": "gw-a"}, {"gateway": "gw-b", "limit": 1}):
        got, want = store.query(**query), lite.query(**query)
        assert [(e["ts"], e["seq"]) for e in got] == [(e["ts"], e["seq"]) for e in want], query  # newest first
        assert sorted(got, key=key) == sorted(want, key=key), query  # the same rows (ties in any order)
    alerts = store.query(type_="bus_left_onboard", gateway="gw-a")
    assert [e["seq"] for e in alerts] == [10, 8, 6, 4, 2]
    assert alerts[0]["data"] == records[9]["data"] and alerts[0]["room"] == "lab-1"


def test_workers_writing_the_same_events_at_once_store_each_once(store: PgEventStore, postgres: Postgres) -> None:
    records = [event(i) for i in range(1, 2001)]
    payloads = [orjson.dumps(records[i:i + 50]) for i in range(0, 2000, 50)]
    stores = [PgEventStore(postgres.dsn) for _ in range(4)]
    added = [0] * 4

    def worker(k: int) -> None:  # every worker gets every message: redelivery at its worst
        for p in payloads:
            added[k] += stores[k].add_payload("school-1", "gw-a", p)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(added) == 2000
    assert len(store.query(limit=10_000)) == 2000
    for s in stores:
        s.close()


def test_the_queries_use_an_index(store: PgEventStore) -> None:
    store.add("school-1", "gw-a", (event(i, type_=f"t{i % 50}") for i in range(1, 20001)))
    with store._lock:
        store._connection().execute("ANALYZE events")
    for filters in ({"type_": "t7"}, {"school": "school-1", "gateway": "gw-a"}, {}):
        plan = store.explain(**filters)
        assert "Index" in plan and "Seq Scan" not in plan, (filters, plan)


def test_a_database_that_is_down_is_a_clear_error_and_it_recovers(tmp_path: Path) -> None:
    server = Postgres().start()
    try:
        store = open_event_store(db=tmp_path / "unused.sqlite", postgres_dsn=server.dsn)
        assert isinstance(store, PgEventStore)
        assert store.add("school-1", "gw-a", [event(1)]) == 1
        server.stop()
        with pytest.raises(EventStoreUnavailable, match=rf"event database 127\.0\.0\.1:{server.port}/edugate"):
            store.add("school-1", "gw-a", [event(2)])
        server.start()
        assert store.add("school-1", "gw-a", [event(2), event(1)]) == 1  # reconnected; seq 1 was stored before
        assert [e["seq"] for e in store.query()] == [2, 1]
        store.close()
    finally:
        server.cleanup()
    assert isinstance(open_event_store(db=tmp_path / "e.sqlite"), EventStore)
    assert open_event_store() is None
