"""Gateway -> real Mosquitto: batching, birth/last will, broker outage, kill -9, disk budget."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path

from edugate.simulators.servers import Mosquitto
from tests.helpers import Collector, GatewayProcess, outbox_state, undelivered, wait_for


def synthetic_config(port: int, **uplink) -> dict:
    return {
        "school": "test-school",
        "gateway": "gw-1",
        "uplink": {"port": port, "health_interval_s": 1, **uplink},
        "devices": [
            {"id": "fast", "driver": "synthetic", "interval_s": 0.002, "values": 9, "room": "lab-1"},
            {"id": "door", "driver": "synthetic", "interval_s": 0.05, "values": 0, "event_every": 1},
        ],
    }


def wait_delivered(collector: Collector, gw: GatewayProcess, thinned: int = 0) -> None:
    """After the gateway stopped: wait until what the broker acknowledged to it has reached the collector,
    i.e. every committed record is received or still queued (or one of the ``thinned`` the budget dropped)."""
    wait_for(lambda: len(undelivered(collector, gw.outbox_path)) <= thinned, 15,
             "the records the broker acknowledged to reach the collector")


def final_counters(gw: GatewayProcess) -> dict:
    """The counters of the gateway's last log line (``gateway stopped: {...}``)."""
    [line] = [line for line in gw.log().splitlines() if "gateway stopped: " in line][-1:]
    return json.loads(line.split("gateway stopped: ", 1)[1])


def queued_events(outbox: Path) -> int:
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def assert_complete(collector: Collector, gw: GatewayProcess) -> int:
    """Everything the outbox ever committed was received, or is still queued in the outbox."""
    next_seq, queued = outbox_state(gw.outbox_path)
    received = collector.distinct()
    missing = set(range(1, next_seq)) - received - queued
    assert not missing, f"{len(missing)} committed records neither received nor queued: {sorted(missing)[:10]}"
    assert not received - set(range(1, next_seq)), "received a seq the outbox never assigned"
    return next_seq - 1


def test_birth_batches_and_clean_shutdown(mosquitto: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(mosquitto.port).start()
    gw = GatewayProcess(tmp_path / "gw", synthetic_config(mosquitto.port)).start()
    wait_for(lambda: len(collector.seqs("telemetry")) > 1000, 30, "1000 telemetry records")
    wait_for(lambda: any(r["device"] == "_gateway" for r in collector.records["telemetry"]), 10, "a health record")
    assert gw.stop() == 0
    wait_for(lambda: collector.states and collector.states[-1]["status"] == "offline", 10, "the offline state")
    wait_delivered(collector, gw)
    # retained birth, then a clean offline on SIGTERM
    assert collector.states[0]["status"] == "online"
    assert collector.states[0]["devices"]["fast"]["driver"] == "synthetic"
    assert collector.states[-1]["status"] == "offline" and collector.states[-1]["reason"] == "shutdown"
    # records are batched: far fewer messages than records
    telemetry_msgs = [n for _, kind, n in collector.arrivals if kind == "telemetry"]
    assert sum(telemetry_msgs) / len(telemetry_msgs) > 5
    # every record carries its stable id, time and clock flag; rooms come from the config
    fast = [r for r in collector.records["telemetry"] if r["device"] == "fast"]
    assert all(r["room"] == "lab-1" and isinstance(r["ts"], int) and isinstance(r["synced"], bool) for r in fast)
    health = [r for r in collector.records["telemetry"] if r["device"] == "_gateway"][-1]["values"]
    assert health["devices_online"] == 2 and health["outbox_budget_bytes"] > 0 and health["rss_bytes"] > 0
    events = collector.records["event"]
    assert events and all(e["type"] == "synthetic" for e in events)
    assert_complete(collector, gw)
    collector.stop()


def test_last_will_marks_a_killed_gateway_offline(mosquitto: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(mosquitto.port).start()
    cfg = synthetic_config(mosquitto.port, keepalive_s=2)
    gw = GatewayProcess(tmp_path / "gw", cfg).start()
    wait_for(lambda: collector.states, 20, "birth message")
    gw.kill()
    state = wait_for(lambda: [s for s in collector.states if s["status"] == "offline"], 10, "last will")
    assert state[-1]["reason"] == "connection lost"
    collector.stop()


def test_broker_outage_under_load_loses_nothing_and_reconnects_fast(mosquitto: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(mosquitto.port).start()
    gw = GatewayProcess(tmp_path / "gw", synthetic_config(mosquitto.port)).start()
    wait_for(lambda: len(collector.seqs()) > 500, 30, "records before the outage")
    mosquitto.stop()
    # the outage lasts until 2000 records wait in the outbox (about 4 s: long enough for the uplink's
    # reconnect back-off to grow, which the quick reconnect below must not suffer from)
    wait_for(lambda: len(outbox_state(gw.outbox_path)[1]) > 2000, 30, "2000 records waiting in the outbox")
    _, queued = outbox_state(gw.outbox_path)
    assert len(queued) > 500, "records should wait in the outbox while the broker is down"
    before = len(collector.arrivals)
    restarted = time.time()
    mosquitto.start()
    wait_for(lambda: len(collector.arrivals) > before, 15, "first delivery after the broker came back")
    first_delivery = collector.arrivals[before][0] - restarted
    print(f"broker restart -> first delivery: {first_delivery:.2f} s")
    assert first_delivery < 3.0, f"took {first_delivery:.1f} s to deliver after the broker came back"
    wait_for(lambda: len(outbox_state(gw.outbox_path)[1]) < 200, 30, "the backlog to drain")
    assert gw.stop() == 0
    wait_delivered(collector, gw)
    total = assert_complete(collector, gw)
    assert total > 2000
    collector.stop()


def test_kill_9_mid_stream_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(mosquitto.port).start()
    gw = GatewayProcess(tmp_path / "gw", synthetic_config(mosquitto.port))
    rng = random.Random(3)
    last_next = 1
    for _ in range(4):
        gw.start()
        # kill at a random point mid-stream: after 100 to 1000 more records were committed
        target = last_next + rng.randint(100, 1000)
        wait_for(lambda t=target: outbox_state(gw.outbox_path)[0] >= t, 20, f"seq {target} committed")
        gw.kill()
        next_seq, _ = outbox_state(gw.outbox_path)
        assert next_seq > last_next, "sequence numbers continue across restarts"
        last_next = next_seq
    gw.start()
    before_last_kill = set(range(1, last_next))
    wait_for(lambda: before_last_kill <= collector.distinct(), 30, "every record committed before the kills")
    assert gw.stop() == 0
    wait_delivered(collector, gw)
    assert_complete(collector, gw)
    collector.stop()


def test_disk_budget_thins_telemetry_and_keeps_every_event(mosquitto: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(mosquitto.port).start()
    mosquitto.stop()  # the uplink is down from the start: everything waits in the outbox
    cfg = synthetic_config(mosquitto.port)
    cfg["storage"] = {"path": str(tmp_path / "gw" / "outbox.sqlite"), "budget_mb": 0.25}
    gw = GatewayProcess(tmp_path / "gw", cfg).start()

    def thinned_with_60_events_queued() -> bool:
        next_seq, queued = outbox_state(gw.outbox_path)
        return len(queued) < next_seq - 1 and queued_events(gw.outbox_path) > 60

    wait_for(thinned_with_60_events_queued, 30, "the budget to thin telemetry, with 60 events queued")
    next_seq, queued = outbox_state(gw.outbox_path)
    assert len(queued) < next_seq - 1, "the budget should have forced thinning"
    mosquitto.start()
    wait_for(lambda: any(r["device"] == "_gateway" and r["values"]["telemetry_thinned"] > 0
                         for r in collector.records["telemetry"]), 20, "a health record reporting thinning")
    assert gw.stop() == 0
    wait_delivered(collector, gw, thinned=final_counters(gw)["telemetry_thinned"])
    next_seq, queued = outbox_state(gw.outbox_path)
    events_produced = wait_for(lambda: len(collector.distinct("event")), 5, "events")
    # every event ever committed arrived or is still queued: none was thinned
    event_seqs = collector.distinct("event")
    telemetry_seqs = collector.distinct("telemetry")
    all_seqs = set(range(1, next_seq))
    thinned = all_seqs - event_seqs - telemetry_seqs - queued
    assert thinned, "some telemetry must have been thinned"
    assert events_produced > 50
    last_health = [r for r in collector.records["telemetry"] if r["device"] == "_gateway"][-1]["values"]
    assert last_health["telemetry_thinned"] > 0
    # the events are consecutive per "door" reading: every door reading has its event
    door_n = {r["values"]["n"] for r in collector.records["telemetry"] if r["device"] == "door"}
    event_n = {e["data"]["n"] for e in collector.records["event"] if e["device"] == "door"}  # not outbox_over_budget
    with sqlite3.connect(gw.outbox_path) as conn:  # or still queued: committed after the uplink's last send
        event_n |= {json.loads(p)["data"]["n"] for (p,) in conn.execute("SELECT payload FROM events")
                    if json.loads(p)["device"] == "door"}
    assert door_n - event_n == set(), "an event is missing for a door reading that survived"
    collector.stop()
