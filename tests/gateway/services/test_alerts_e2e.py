"""Alerts end to end: a thermometer's real bytes over a pty -> ``edugate run`` -> Mosquitto -> ingest ->
VictoriaMetrics -> central's fleet view; rules changed by a signed command and by editing the rules file,
without a restart."""

from __future__ import annotations

import asyncio
import html
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edugate.central.web.pages import Central, StateFollower, Store, create_central_app
from edugate.common.web.auth import SessionSigner, UserStore
from edugate.common.web.site import SiteAuth
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from edugate.simulators.thermometer import ThermometerSimulator
from tests.e2e.conftest import central_key, ingest  # noqa: F401 - fixtures of the end-to-end tests
from tests.helpers import REPO, Collector, GatewayProcess, outbox_state, send_command, wait_async
from tests.vmquery import export
from tests.web.fakes import users_file

pytestmark = pytest.mark.timeout(180)

SCHOOL, GATEWAY = "lab-school", "lab-gw"
CROSSINGS = 100  # readings alternating 7.9 / 8.1 around the fridge's limit of 8.0


def alert_events(collector: Collector) -> list[dict[str, Any]]:
    with collector.lock:
        seen = {r["seq"]: r for r in collector.records["event"] if r["type"] == "alert"}
    return [seen[s] for s in sorted(seen)]


def send_failing(broker: Mosquitto, key: Path, name: str, args: dict[str, Any]) -> str:
    """``edugate send`` a command the gateway answers with ``failed``; return what the tool printed."""
    result = subprocess.run(
        [sys.executable, "-m", "edugate.central.command_tools", "send", "--key", f"{key}.pem", "--broker", broker.url,
         "--school", SCHOOL, "--gateway", GATEWAY, "--name", name, "--args", json.dumps(args), "--ttl", "60",
         "--timeout", "15"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0, result.stdout
    return result.stdout + result.stderr


def count(events: list[dict[str, Any]], rule: str, state: str) -> int:
    return sum(e["data"]["rule"] == rule and e["data"]["state"] == state for e in events)


async def test_a_value_crossing_the_limit_many_times_raises_one_alert_through_the_real_gateway(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, ingest: Path, central_key: Path,  # noqa: F811
        tmp_path: Path) -> None:
    rules_file = tmp_path / "alert-rules.yaml"
    rules_file.write_text("rules: []\n")
    config = {
        "school": SCHOOL, "gateway": GATEWAY,
        "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
        "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
        "alerts": {"rules_file": str(rules_file), "check_interval_s": 0.2, "rules": [
            {"id": "fridge-too-warm", "device": "fridge-1", "value": "temperature", "above": 8.0, "hysteresis": 0.5,
             "severity": "critical", "description": "Lab fridge above 8 °C"},
            {"id": "fridge-naive", "device": "fridge-1", "value": "temperature", "above": 8.0, "severity": "info"}]},
        "devices": [{"id": "fridge-1", "driver": "thermometer", "room": "bio-lab", "port": str(tmp_path / "ttyFRIDGE"),
                     "names": {"T": "temperature"}}],
    }
    collector = Collector(mosquitto.port, client_id="alerts-collector").start()
    async with ThermometerSimulator(tmp_path / "ttyFRIDGE") as probe:
        gw = GatewayProcess(tmp_path / "gw", config).start()
        await wait_async(lambda: collector.states, 20, "the gateway online")
        # the probe prints until the driver has opened its port and a reading reached the broker
        await wait_async(lambda: probe.send(T=5.0) and collector.records["telemetry"], 20, "a first reading")
        for i in range(CROSSINGS):
            probe.send(T=8.1 if i % 2 else 7.9)
            await asyncio.sleep(0.01)  # the probe's pace: one line every 10 ms, a reading each
        await wait_async(lambda: count(alert_events(collector), "fridge-naive", "raised") == CROSSINGS // 2, 30,
                         f"{CROSSINGS // 2} raises of the rule without hysteresis")
        events = alert_events(collector)
        assert count(events, "fridge-too-warm", "raised") == 1, "hysteresis: one alert, not a storm"
        assert count(events, "fridge-too-warm", "cleared") == 0
        assert count(events, "fridge-naive", "cleared") == CROSSINGS // 2 - 1  # the last reading is 8.1
        raised = next(e for e in events if e["data"]["rule"] == "fridge-too-warm")
        assert raised["device"] == "fridge-1" and raised["room"] == "bio-lab"
        assert raised["data"].items() >= {
            "state": "raised", "severity": "critical", "condition": "above", "value": 8.1, "limit": 8.0,
            "active": 1, "name": "temperature"}.items()

        # a signed command switches the naive rule off: its raised alert clears at once, saying why
        answer = send_command(mosquitto.url, central_key, SCHOOL, GATEWAY, "alerts.rules.set",
                              {"version": 1, "rules": [{"id": "fridge-naive", "value": "temperature", "above": 8,
                                                        "enabled": False}]})
        assert answer["status"] == "ok" and answer["result"] == {"version": 1, "pushed": 1, "in_force": 1}
        await wait_async(lambda: count(alert_events(collector), "fridge-naive", "cleared") == CROSSINGS // 2, 20,
                         "the naive rule's alert cleared")
        assert alert_events(collector)[-1]["data"]["cause"] == "rule_removed"
        stale = send_failing(mosquitto, central_key, "alerts.rules.set", {"version": 1, "rules": []})
        assert "failed" in stale and "not newer than 1" in stale

        # the rules file gains a rule; the gateway reads it within its check interval, no restart
        rules_file.write_text("rules:\n  - {id: fridge-too-cold, device: fridge-1, value: temperature, below: 2,"
                              " severity: warning}\n")
        await wait_async(lambda: "rules file" in gw.log() and "1 rule(s)" in gw.log(), 20, "the rules file re-read")
        probe.send(T=1.0)
        await wait_async(lambda: count(alert_events(collector), "fridge-too-cold", "raised") == 1, 20,
                         "the new rule's alert")
        events = alert_events(collector)
        assert count(events, "fridge-too-warm", "cleared") == 1, "1.0 is far below 8 - 0.5"
        # a bad edit keeps the rules in force and says where the problem is
        rules_file.write_text("rules:\n  - {id: fridge-too-cold, device: fridge-1, value: temperature, blow: 2}\n")
        await wait_async(lambda: f"{rules_file}:2: rules[0].blow: unknown key" in gw.log(), 20, "the typo reported")
        await wait_async(lambda: not outbox_state(gw.outbox_path)[1], 20, "every record acknowledged")
        assert gw.stop() == 0
    collector.stop()

    # central: the store has the alert events with rule and severity as labels; the fleet view lists the one
    # alert still raised (fridge-too-cold), not the cleared ones
    def stored() -> list[dict[str, Any]] | None:
        series = export(victoria.url, '{__name__="edugate_event_active",type="alert"}')
        return series if sum(len(s["values"]) for s in series) == len(events) else None

    series = await wait_async(stored, 30, "every alert event in VictoriaMetrics")
    assert {(s["metric"]["rule"], s["metric"]["severity"]) for s in series} == {
        ("fridge-too-warm", "critical"), ("fridge-naive", "info"), ("fridge-too-cold", "warning")}
    follower = StateFollower()
    follower.apply(f"edu/v1/{SCHOOL}/{GATEWAY}/state", json.dumps(collector.states[0]).encode())
    central = Central(follower, Store(victoria.url))
    fleet = await central.fleet()
    assert fleet["store_error"] is None
    texts = [a["text"] for a in fleet["alerts"]]
    assert f"{SCHOOL}/{GATEWAY}: warning alert fridge-too-cold at fridge-1 (bio-lab), value 1" in texts, texts
    assert not [t for t in texts if "fridge-too-warm" in t or "fridge-naive" in t]

    # ... and on central's fleet page, as an operator sees it (logged in, the page from the same store)
    auth = SiteAuth(UserStore(users_file(tmp_path / "central-users.json")), SessionSigner(b"c" * 32),
                    "edugate_central_session", "edugate web-user add NAME --role admin --users-file x")
    with TestClient(create_central_app(central, auth)) as client:
        client.post("/login", data={"username": "victor", "password": "victor-viewer-pw-1"})
        page = client.get("/fleet")
    assert page.status_code == 200
    alerts = page.text.split('id="alerts"', 1)[1].split("</section>", 1)[0]
    assert "warning alert fridge-too-cold at fridge-1 (bio-lab), value 1" in html.unescape(alerts), alerts
    assert "fridge-too-warm" not in alerts and "fridge-naive" not in alerts
