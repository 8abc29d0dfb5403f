"""Poison events from an outside sender: records the event store cannot hold (a seq past a 64-bit signed
integer, a room that is an object, a NUL in data that PostgreSQL's JSONB refuses) or should not (a device or
type off the contract, a timestamp in 2200). The worker keeps running and storing the good events; neither
store is left in a failed transaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edugate.central.eventstore import EventStore
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central import Publisher, event, topic, wait_until
from tests.central.ingest.test_worker import running_worker

SCHOOL = "school-1"


def poison() -> list[dict[str, Any]]:
    records = [event(1), event(2), event(3), event(4, device="door 2"), event(5, type_="Card-Tap"),
               event(6, ts=7_258_118_400_000), event(7, data={"note": "a\x00b", "decision": "allow"})]
    records[0]["seq"] = 2**63
    records[1]["room"] = {"x": 1}
    records[2]["data"] = ["not", "an", "object"]
    return records


def test_sqlite_store_refuses_poison_and_stays_usable(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite")
    assert store.add_payload(SCHOOL, "gw-a", orjson.dumps(poison())) == 1  # only the NUL one, NUL replaced
    with pytest.raises(OverflowError):
        store.add(SCHOOL, "gw-a", [{**event(8), "seq": 2**64}])  # a caller passing a bad row directly
    assert store.add_payload(SCHOOL, "gw-a", orjson.dumps([event(9)])) == 1  # no transaction left open
    assert [(e["seq"], e["data"].get("note")) for e in store.query()] == [(9, None), (7, "a\ufffdb")]


def test_the_worker_survives_poison_events(tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    db = tmp_path / "events.sqlite"
    with running_worker(mosquitto, victoria.url, client_id="outside-events", events_db=db) as worker:
        pub = Publisher(mosquitto.host, mosquitto.port, client_id="third-party")
        pub.publish(topic(SCHOOL, "gw-a", "event"), poison())
        pub.publish(topic(SCHOOL, "gw-a", "event"), [event(10)])
        pub.close()
        wait_until(lambda: worker.stats.messages_acked == 2, 20, 0.05, "both messages handled")
        assert (worker.stats.events_stored, worker.stats.events_store_errors) == (2, 0)
    assert sorted(e["seq"] for e in EventStore(db).query()) == [7, 10]


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    try:
        from edugate.simulators.postgres import Postgres, pg_bindir
        pg_bindir()
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"PostgreSQL or psycopg missing: {exc}")
    server = Postgres().start()
    yield server.dsn
    server.cleanup()


def test_postgresql_store_refuses_poison_and_stays_usable(pg_dsn: str) -> None:
    from edugate.central.eventstore_pg import PgEventStore

    store = PgEventStore(pg_dsn)
    try:
        assert store.add_payload(SCHOOL, "gw-a", orjson.dumps(poison())) == 1
        assert store.add_payload(SCHOOL, "gw-a", orjson.dumps([event(9)])) == 1
        assert sorted((e["seq"], e["data"].get("note")) for e in store.query()) == [(7, "a\ufffdb"), (9, None)]
    finally:
        store.close()
