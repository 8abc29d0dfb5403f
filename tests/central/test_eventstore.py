"""The central event log: every event once, queryable by type, school and time."""

from __future__ import annotations

from pathlib import Path

import orjson

from edugate.central.eventstore import EventStore
from tests.central import event, telemetry


def test_redelivered_and_rebatched_events_are_stored_once(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite")
    records = [event(i, type_="card_tap" if i % 2 else "bus_left_onboard") for i in range(1, 11)]
    assert store.add_payload("school-1", "gw-a", orjson.dumps(records[:6])) == 6
    assert store.add_payload("school-1", "gw-a", orjson.dumps(records[3:])) == 4  # 3 of them redelivered
    assert store.add_payload("school-1", "gw-b", orjson.dumps(records[:2])) == 2  # another gateway: its own seqs
    assert store.add_payload("school-1", "gw-a", b"not json") == 0
    assert store.add_payload("school-1", "gw-a", orjson.dumps([telemetry(99), {"seq": "x"}])) == 0
    alerts = store.query(type_="bus_left_onboard", gateway="gw-a")
    assert [e["seq"] for e in alerts] == [10, 8, 6, 4, 2]  # newest first
    assert alerts[0]["data"] == records[9]["data"] and alerts[0]["room"] == "lab-1"
    assert len(store.query(limit=1000)) == 12
    assert store.query(since_ms=records[8]["ts"], gateway="gw-a") == store.query(gateway="gw-a", limit=2)
    store.close()
    assert len(EventStore(tmp_path / "events.sqlite").query(limit=1000)) == 12  # it is on disk
