"""The end-to-end acknowledgement (issue 12): a real gateway (``edugate run``) keeps each record after the broker's
PUBACK until central's ingest confirms it stored it, so what a broker loses is sent again. Real Mosquitto with the
configuration central ships, a real ``edugate ingest`` and a real VictoriaMetrics (deduplicating).

Each synthetic reading carries ``n``, a counter (one per reading): every committed reading of a device is
``n = 1..N``, so what reached the store is checked reading by reading, against what is still in the outbox.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from edugate.simulators.servers import SHIPPED_CONF, Mosquitto, VictoriaMetrics
from tests.e2e.test_durability import Worker, central_broker  # noqa: F401 - the shipped-config broker fixture
from tests.helpers import GatewayProcess, outbox_state, wait_for
from tests.vmquery import export

SCHOOL, GATEWAY = "school-1", "gw-e2e"


def gateway_config(port: int, **uplink: Any) -> dict[str, Any]:
    return {
        "school": SCHOOL, "gateway": GATEWAY,
        "uplink": {"port": port, "health_interval_s": 1, "reconnect_max_s": 0.5, "confirm_timeout_s": 1, **uplink},
        "devices": [
            {"id": "fast", "driver": "synthetic", "interval_s": 0.01, "values": 2},
            {"id": "door", "driver": "synthetic", "interval_s": 0.1, "values": 0, "event_every": 1},
        ],
    }


def queued(outbox: Path) -> dict[str, set[int]]:
    """The counters ``n`` of the readings of ``fast`` and the events of ``door`` still in the outbox."""
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)
    try:
        readings = [orjson.loads(p) for (p,) in conn.execute("SELECT payload FROM telemetry")]
        events = [orjson.loads(p) for (p,) in conn.execute("SELECT payload FROM events")]
    finally:
        conn.close()
    return {"fast": {r["values"]["n"] for r in readings if r["device"] == "fast"},
            "door": {e["data"]["n"] for e in events if e["device"] == "door"}}


def central_confirms(outbox: Path) -> bool:
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'central_confirms'").fetchone()
    finally:
        conn.close()
    return bool(row and row[0])


def stored_readings(vm: VictoriaMetrics) -> list[int]:
    """Every stored sample of ``fast``'s counter (a sample stored twice would be here twice)."""
    return [int(v) for s in export(vm.url, f'{{__name__="edugate_n",gateway="{GATEWAY}",device="fast"}}')
            for v in s["values"]]


def stored_events(worker: Worker) -> list[int]:
    if not worker.events_db.exists():
        return []
    conn = sqlite3.connect(worker.events_db, timeout=10)
    try:
        return [orjson.loads(d)["n"] for (d,) in conn.execute("SELECT data FROM events WHERE gateway = ?",
                                                              (GATEWAY,))]
    finally:
        conn.close()


def missing(gw: GatewayProcess, vm: VictoriaMetrics, worker: Worker) -> dict[str, set[int]]:
    """Committed readings and events neither in central's stores nor still in the outbox."""
    left = queued(gw.outbox_path)
    readings, events = set(stored_readings(vm)), set(stored_events(worker))
    last = {"fast": max(readings | left["fast"], default=0), "door": max(events | left["door"], default=0)}
    return {"fast": set(range(1, last["fast"] + 1)) - readings - left["fast"],
            "door": set(range(1, last["door"] + 1)) - events - left["door"]}


def newest(gw: GatewayProcess, vm: VictoriaMetrics, worker: Worker) -> dict[str, int]:
    """The highest ``n`` committed so far, per device."""
    left = queued(gw.outbox_path)
    return {"fast": max(set(stored_readings(vm)) | left["fast"], default=0),
            "door": max(set(stored_events(worker)) | left["door"], default=0)}


def settled(gw: GatewayProcess, vm: VictoriaMetrics, worker: Worker, upto: dict[str, int]) -> bool:
    """Every record up to ``upto`` is stored, and confirmed (gone from the outbox); nothing committed is missing."""
    left = queued(gw.outbox_path)
    return not any(missing(gw, vm, worker).values()) and \
        not any(n <= upto[device] for device, ns in left.items() for n in ns)


def crash_the_broker_while_the_worker_is_down(broker: Mosquitto, gw: GatewayProcess, worker: Worker) -> None:
    """The worker stops; the gateway goes on sending (the broker PUBACKs and queues it, in memory only: the shipped
    autosave is once a minute); the broker is killed -9 and restarted; the worker comes back. (The crash also
    loses the worker's session, saved only at the autosave: when the gateway reconnects first, the broker drops
    what it sends again, and the deadline sends it once more.)"""
    wait_for(lambda: central_confirms(gw.outbox_path), 20, "central's first confirmation")
    worker.stop()
    before = outbox_state(gw.outbox_path)[0]
    wait_for(lambda: outbox_state(gw.outbox_path)[0] > before + 60, 20, "60 records sent while the worker is down")
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGKILL)
    broker.proc.wait()
    broker.start()
    worker.start()


def test_broker_kill_9_while_the_worker_is_down_loses_nothing(tmp_path: Path, central_broker: Mosquitto,  # noqa: F811
                                                              victoria: VictoriaMetrics) -> None:
    worker = Worker(tmp_path, central_broker, victoria).start()
    gw = GatewayProcess(tmp_path / "gw", gateway_config(central_broker.port)).start()
    try:
        crash_the_broker_while_the_worker_is_down(central_broker, gw, worker)
        upto = newest(gw, victoria, worker)
        assert len(queued(gw.outbox_path)["fast"]) > 40  # kept after the PUBACK, as the crash came
        # the gateway reconnects and sends again all it kept; central stores and confirms, the outbox empties
        wait_for(lambda: settled(gw, victoria, worker, upto), 30, "every record up to the crash stored and confirmed")
    finally:
        assert gw.stop() == 0
    try:
        wait_for(lambda: not any(missing(gw, victoria, worker).values()), 20, "the last records stored")
        readings = stored_readings(victoria)
        assert len(readings) == len(set(readings)), "a reading stored twice"  # exactly once
        events = stored_events(worker)
        assert len(events) == len(set(events)) and len(events) > 10
        assert len(readings) > 100  # (a sanity floor: the run lasts a few seconds at 100 readings/s)
    finally:
        worker.stop()
    assert "central confirms what it stores" in gw.log()


@pytest.mark.slow
def test_the_same_crash_without_the_end_to_end_ack_loses_records(tmp_path: Path, central_broker: Mosquitto,  # noqa: F811
                                                                 victoria: VictoriaMetrics) -> None:
    """The control: ``end_to_end_ack: false`` deletes at the PUBACK, and the broker crash costs what it held."""
    worker = Worker(tmp_path, central_broker, victoria).start()
    gw = GatewayProcess(tmp_path / "gw", gateway_config(central_broker.port, end_to_end_ack=False)).start()
    try:
        wait_for(lambda: stored_readings(victoria), 20, "the first readings stored")
        worker.stop()
        before = outbox_state(gw.outbox_path)[0]
        wait_for(lambda: outbox_state(gw.outbox_path)[0] > before + 100, 20, "100 records sent, worker down")
        assert central_broker.proc is not None
        central_broker.proc.send_signal(signal.SIGKILL)
        central_broker.proc.wait()
        central_broker.start()
        worker.start()
        wait_for(lambda: len(stored_readings(victoria)) > 400, 30, "readings after the crash")
    finally:
        assert gw.stop() == 0
        worker.stop()
    lost = missing(gw, victoria, worker)
    assert len(lost["fast"]) > 20, lost


@pytest.mark.slow
def test_what_the_broker_drops_without_a_disconnect_is_sent_again_after_the_deadline(
        tmp_path: Path, victoria: VictoriaMetrics) -> None:
    """A broker that PUBACKs and then drops (its queue limit for a worker that is down: the issue's
    ``max_queued_messages``) gives no reconnect to react to: once central confirms records sent after them, the
    gateway sends the unconfirmed ones again after ``confirm_timeout_s`` (1 s here).
    (Slow: the kill -9 test above goes through this path too, when the gateway reconnects before the worker.)"""
    broker = Mosquitto(tmp_path / "broker", conf_file=SHIPPED_CONF, extra_conf="max_queued_messages 10")
    broker.start()
    worker = Worker(tmp_path, broker, victoria).start()
    gw = GatewayProcess(tmp_path / "gw", gateway_config(broker.port)).start()
    try:
        wait_for(lambda: central_confirms(gw.outbox_path), 20, "central's first confirmation")
        worker.stop()
        before = outbox_state(gw.outbox_path)[0]
        wait_for(lambda: outbox_state(gw.outbox_path)[0] > before + 300, 20, "300 records, most beyond the queue")
        worker.start()
        upto = newest(gw, victoria, worker)
        wait_for(lambda: settled(gw, victoria, worker, upto), 30, "every record stored and confirmed")
    finally:
        assert gw.stop() == 0
        worker.stop()
        broker.stop()
    readings = stored_readings(victoria)
    assert len(readings) == len(set(readings))
    assert "sending them again" in gw.log()
    assert "central has confirmed nothing the broker acknowledged" in gw.log()  # while the worker was down
