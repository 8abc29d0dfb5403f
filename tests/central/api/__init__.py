"""A small city for the operations centre's tests, sent through a real ingest worker into a real store.

Day ``DAY`` (Asia/Ho_Chi_Minh), health interval ``HEALTH_S``. District ``district-1``: ``school-a`` (102
attendance taps, 111 library visitors, 7 loans, two alerts cleared after 30 and 60 minutes, half its health
records, a board used 3.5 h and an unused projector, one lab session)
and ``school-b`` (3 taps: below k, the whole day's records); district ``district-2``: ``school-c``
(a class of one: 1 tap, 1 present; a tenth of its health records). Every tap carries a card pseudonym.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edugate.central.config import ApiSection, CentralConfig, EventsSection, StoreSection
from edugate.central.eventstore import EventStore
from edugate.central.ingest.worker import IngestConfig, IngestWorker
from edugate.simulators.servers import Mosquitto
from tests.central import Publisher, batches, topic, wait_until
from tests.vmquery import sample_count

DAY = "2026-11-10"
TZ = "Asia/Ho_Chi_Minh"
HEALTH_S = 600.0
DISTRICTS = {"district-1": ["school-a", "school-b"], "district-2": ["school-c"]}
GATEWAYS = {"school-a": "gw-a", "school-b": "gw-b", "school-c": "gw-c"}
T0 = int(dt.datetime(2026, 11, 10, tzinfo=ZoneInfo(TZ)).timestamp() * 1000)  # the day's first millisecond
PSEUDONYMS = [f"p:{i:012x}" for i in range(200)]


def _event(seq: int, ts: int, type_: str, data: dict[str, Any], device: str = "door-1") -> dict[str, Any]:
    return {"seq": seq, "kind": "event", "device": device, "room": "room-1", "ts": ts, "synced": True,
            "type": type_, "data": data}


def _reading(seq: int, ts: int, device: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"seq": seq, "kind": "telemetry", "device": device, "ts": ts, "synced": True, "values": values}


def records(school: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(events, telemetry, states) of the school's one gateway on DAY."""
    taps = {"school-a": 102, "school-b": 3, "school-c": 1}[school]
    health = {"school-a": 72, "school-b": 144, "school-c": 14}[school]
    seq = iter(range(1, 100_000))
    events = [_event(next(seq), T0 + 8 * 3600_000 + i * 1000, "card_tap",
                     {"card": PSEUDONYMS[i % 200], "role": "attendance", "decision": "allow"}) for i in range(taps)]
    telemetry = [_reading(next(seq), T0 + (i + 1) * int(HEALTH_S * 1000) - 1, "_gateway",
                          {"uptime_s": 600.0 * (i + 1), "devices_online": 3, "devices_offline": 1})
                 for i in range(health)]
    if school == "school-c":
        events.append(_event(next(seq), T0 + 9 * 3600_000, "attendance_summary",
                             {"date": DAY, "period": "p1", "present": 1, "late": 0}))
    if school == "school-a":
        telemetry += [_reading(next(seq), T0 + (10 + h) * 3600_000, "gate-1", {"visitors_in": 37}) for h in range(3)]
        events += [_event(next(seq), T0 + 11 * 3600_000 + i, "library_loan", {"card": PSEUDONYMS[i]}, "desk-1")
                   for i in range(7)]
        for raised_h, minutes in ((8, 30), (9, 60)):
            base = {"rule": "co2-high", "severity": "warning", "condition": "co2 > 1000", "description": "CO2"}
            events.append(_event(next(seq), T0 + raised_h * 3600_000, "alert",
                                 base | {"state": "raised", "active": 1, "value": 1200}, "lab1-co2"))
            events.append(_event(next(seq), T0 + raised_h * 3600_000 + minutes * 60_000, "alert",
                                 base | {"state": "cleared", "active": 0, "value": 800}, "lab1-co2"))
        for asset, category in (("board-1", "board"), ("proj-1", "projector")):
            events.append(_event(next(seq), T0 + 7 * 3600_000, "asset", {"asset": asset, "category": category,
                                                                          "first_seen": T0}, asset))
        for hours, at_h in ((2.0, 12), (3.5, 18)):  # a day's usage is re-sent as it grows: the last one counts
            events.append(_event(next(seq), T0 + at_h * 3600_000, "asset_usage",
                                 {"asset": "board-1", "day": DAY, "power_on_h": hours, "readings": 10}, "board-1"))
        events.append(_event(next(seq), T0 + 18 * 3600_000, "asset_usage",
                             {"asset": "proj-1", "day": DAY, "power_on_h": 0, "readings": 10}, "proj-1"))
        for action in ("started", "stopped"):
            events.append(_event(next(seq), T0 + (14 + (action == "stopped")) * 3600_000, "session",
                                 {"action": action, "session": "s-1", "name": "pendulum", "by": "teacher"},
                                 "lab1-th"))
    states = [{"status": "online", "ts": T0 + (i + 1) * int(HEALTH_S * 1000) - 500, "version": "0.1.0",
               "started_at": T0, "district": next(d for d, s in DISTRICTS.items() if school in s), "devices": {}}
              for i in range(health)]
    return events, telemetry, states


@contextmanager
def running_worker(mosquitto: Mosquitto, store_url: str, events_db: Path) -> Iterator[IngestWorker]:
    cfg = IngestConfig(client_id="ingest-ioc", broker_host=mosquitto.host, broker_port=mosquitto.port,
                       store_url=store_url, summary_interval_s=0, events_db=events_db)
    worker = IngestWorker(cfg)
    thread = threading.Thread(target=worker.run, name="worker-ioc", daemon=True)
    thread.start()
    try:
        assert worker.subscribed.wait(10), "worker did not subscribe"
        yield worker
    finally:
        worker.stop()
        thread.join(20)
        assert not thread.is_alive(), "worker did not stop"


def feed_city(mosquitto: Mosquitto, store_url: str, events_db: Path) -> None:
    """Publish the whole city as its gateways would, through a real ingest worker; return once it is stored."""
    total = stored_events = 0
    with running_worker(mosquitto, store_url, events_db):
        for school, gateway in GATEWAYS.items():
            events, telemetry, states = records(school)
            publisher = Publisher(mosquitto.host, mosquitto.port, f"pub-{gateway}")
            publisher.publish_all(topic(school, gateway, "event"), batches(events, 50))
            publisher.publish_all(topic(school, gateway, "telemetry"), batches(telemetry, 50))
            for state in states:
                publisher.publish(topic(school, gateway, "state"), state, retain=True)
            publisher.close()
            total += sum(1 + sum(isinstance(v, int | float) for v in e["data"].values())
                         for e in events) + sum(len(r["values"]) for r in telemetry) + len(states)
            stored_events += len(events)
        wait_until(lambda: sample_count(store_url, '{__name__=~"edugate.*"}') == total, 60, 0.2,
                   f"{total} samples in the store")
        wait_until(lambda: len(EventStore(events_db).query(limit=100_000)) == stored_events, 20, 0.1,
                   f"{stored_events} events in the event store")


def central_config(store_url: str, events_db: Path, keys_file: Path, **api: Any) -> CentralConfig:
    return CentralConfig(store=StoreSection(url=store_url), events=EventsSection(db=events_db),
                         api=ApiSection(keys_file=keys_file, districts=DISTRICTS, health_interval_s=HEALTH_S,
                                        **api))
