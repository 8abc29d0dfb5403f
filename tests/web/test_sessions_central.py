"""A session started and stopped by signed commands on a real gateway, its readings through Mosquitto and the
ingest into VictoriaMetrics, and central answering for it by id (``GET /api/sessions/...`` on its pages)."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edugate.central.eventstore import EventStore
from edugate.central.sessions import SessionNotFound, session_from_store
from edugate.central.web.pages import Store
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from edugate.simulators.thermometer import ThermometerSimulator
from tests.e2e.conftest import central_key, ingest  # noqa: F401 - fixtures of the end-to-end tests
from tests.helpers import Collector, GatewayProcess, outbox_state, send_command, wait_async
from tests.vmquery import export
from tests.web.fakes import central_app

pytestmark = pytest.mark.timeout(180)

SCHOOL, GATEWAY = "lab-school", "gw-stem"


async def test_central_answers_for_a_session_by_id_from_the_store(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, ingest: Path, central_key: Path,  # noqa: F811
        tmp_path: Path) -> None:
    config = {
        "school": SCHOOL, "gateway": GATEWAY,
        "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
        "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
        "sessions": {},
        "devices": [{"id": p, "driver": "thermometer", "room": "lab-1", "port": str(tmp_path / f"tty-{p}"),
                     "names": {"T": "temperature", "H": "humidity"}} for p in ("probe-a", "probe-b")],
    }
    collector = Collector(mosquitto.port, client_id="session-central").start()
    async with ThermometerSimulator(tmp_path / "tty-probe-a") as a, ThermometerSimulator(tmp_path / "tty-probe-b") as b:
        gw = GatewayProcess(tmp_path / "gw", config).start()
        await wait_async(lambda: collector.states, 20, "the gateway online")
        await wait_async(lambda: a.send(T=19.0, H=50) and b.send(T=19.0, H=50) and
                         len({r["device"] for r in collector.records["telemetry"]}) == 2, 20, "both probes read")
        await asyncio.sleep(0.01)  # the store keeps one sample per ms and series: the session starts after these
        started = send_command(mosquitto.url, central_key, SCHOOL, GATEWAY, "sessions.start",
                               {"name": "Heating curve", "devices": ["probe-a"], "by": "central-ops"})
        assert started["status"] == "ok", started
        session: dict[str, Any] = started["result"]
        sent = []
        for i in range(8):
            value = round(20 + 1.25 * i, 2)
            assert a.send(T=value, H=40 + i)
            b.send(T=value + 100, H=1)  # not in the session
            sent.append((value, 40 + i))
            await asyncio.sleep(0.02)  # the probes' pace
        await wait_async(lambda: sum(r.get("session") == session["id"] for r in collector.records["telemetry"]) == 8,
                         20, "eight readings marked with the session at the broker")
        stopped = send_command(mosquitto.url, central_key, SCHOOL, GATEWAY, "sessions.stop",
                               {"session": session["id"], "by": "central-ops"})
        assert stopped["status"] == "ok" and stopped["result"]["rows"] == 8
        await asyncio.sleep(0.01)
        a.send(T=99.0, H=99)  # after the stop
        await wait_async(lambda: any(r["values"].get("temperature") == 99.0 for r in collector.records["telemetry"]),
                         20, "the reading after the stop")
        await wait_async(lambda: not outbox_state(gw.outbox_path)[1], 20, "every record acknowledged")
        assert gw.stop() == 0
    collector.stop()

    await wait_async(lambda: len(export(victoria.url, '{__name__="edugate_event_count",type="session"}')) == 2
                     and sum(len(s["values"]) for s in export(victoria.url, '{__name__="edugate_temperature"}')) >= 19,
                     30, "the session events and the readings in the store")
    store = Store(victoria.url)
    events = EventStore(tmp_path / "events.sqlite")
    answer = await asyncio.to_thread(session_from_store, store, SCHOOL, GATEWAY, session["id"], events)
    assert {k: answer[k] for k in ("devices", "running", "values", "rows", "name", "started_by", "stopped_by")} == {
        "devices": ["probe-a"], "running": False, "values": ["humidity", "temperature"], "rows": 8,
        "name": "Heating curve", "started_by": "central-ops", "stopped_by": "central-ops"}
    assert [(r["values"]["temperature"], r["values"]["humidity"]) for r in answer["readings"]] == sent
    marked = sorted(r["ts"] for r in collector.records["telemetry"] if r.get("session") == session["id"])
    assert [r["ts"] for r in answer["readings"]] == marked, "the same readings, at the same times"
    with pytest.raises(SessionNotFound):
        session_from_store(store, SCHOOL, GATEWAY, "s-20260101-000000-0000")

    # the same through central's pages (JSON and CSV), as an operator's tool would ask
    (tmp_path / "pages").mkdir()
    app, _ = central_app(tmp_path / "pages", victoria.url)
    with TestClient(app) as client:
        client.post("/login", data={"username": "victor", "password": "victor-viewer-pw-1"})
        got = client.get(f"/api/sessions/{SCHOOL}/{GATEWAY}/{session['id']}")
        assert got.status_code == 200 and got.json()["rows"] == 8
        table = client.get(f"/api/sessions/{SCHOOL}/{GATEWAY}/{session['id']}?format=csv")
        rows = list(csv.DictReader(io.StringIO(table.text)))
        assert [float(r["temperature"]) for r in rows] == [t for t, _ in sent] and rows[0]["device"] == "probe-a"
        assert client.get(f"/api/sessions/{SCHOOL}/{GATEWAY}/s-20260101-000000-0000").status_code == 404
