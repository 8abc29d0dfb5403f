"""Alerts under a ``kill -9`` loop: a real ``edugate run`` reads a thermometer's bytes over a pty, a value crosses
the fridge's limit, and the gateway is killed the moment its state file says the alert changed (raising and
sending are not one step). After every restart the broker's alert events for the rule still alternate raised /
cleared (no clearing lost, so central never keeps an alert the gateway has cleared) and end in the state the
gateway keeps.

Slow (a dozen gateway starts): ``pytest -m slow tests/gateway/services/test_alerts_kill9.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edugate.simulators.servers import Mosquitto
from edugate.simulators.thermometer import ThermometerSimulator
from tests.helpers import Collector, GatewayProcess, outbox_state, wait_async

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROUNDS = 12
RULE = "fridge-too-warm"


def raised_in_state_file(path: Path) -> bool | None:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return any(a["rule"] == RULE for a in doc.get("active", []))


async def test_alert_events_stay_consistent_through_kill_9(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config: dict[str, Any] = {
        "school": "lab-school", "gateway": "lab-gw",
        "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
        "alerts": {"rules": [{"id": RULE, "device": "fridge-1", "value": "temperature", "above": 8.0,
                              "hysteresis": 0.5, "severity": "critical"}]},
        "devices": [{"id": "fridge-1", "driver": "thermometer", "room": "bio-lab", "port": str(tmp_path / "tty"),
                     "names": {"T": "temperature"}}],
    }
    state_file = tmp_path / "gw" / "alerts.json"
    collector = Collector(mosquitto.port, client_id="alerts-kill9").start()
    async with ThermometerSimulator(tmp_path / "tty") as probe:
        gw = GatewayProcess(tmp_path / "gw", config)
        for i in range(ROUNDS):
            gw.start()
            want = i % 2 == 0  # even rounds raise, odd rounds clear
            value = (9.0 if want else 5.0) + i / 100
            polls = iter(range(10**9))

            def changed(v: float = value, w: bool = want, polls: Iterator[int] = polls) -> bool:
                if next(polls) % 50 == 0:  # the probe prints every 25 ms until the gateway has read it
                    probe.send(T=v)
                return raised_in_state_file(state_file) is w

            # the state file says the alert changed: kill -9 at once (the event may not be in the outbox yet)
            await wait_async(changed, 20, f"round {i}: the alert {'raised' if want else 'cleared'} in the state file",
                             interval=0.0005)
            gw.kill()
        births = len(collector.states)
        gw.start()  # a last run sends whatever the kills left behind
        await wait_async(lambda: any(d.get("status") == "online" for d in collector.states[births:])
                         and not json.loads(state_file.read_text()).get("pending")
                         and not outbox_state(gw.outbox_path)[1], 30, "everything sent after the last restart")
        assert gw.stop() == 0
    collector.stop()

    with collector.lock:
        events = [r for r in collector.records["event"] if r["type"] == "alert" and r["data"]["rule"] == RULE]
    # a copy resent after a kill has the same timestamp and state: one transition
    transitions = sorted({(r["ts"], r["data"]["state"]) for r in events if r["data"]["state"] != "acknowledged"})
    states = [state for _, state in transitions]
    assert states == ["raised", "cleared"] * (ROUNDS // 2), transitions
    assert raised_in_state_file(state_file) is False
