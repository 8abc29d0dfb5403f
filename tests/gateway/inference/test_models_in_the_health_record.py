"""A running gateway (``edugate run``) tells central about its models over a real Mosquitto: the retained state
carries each model's version and SHA-256, the health record its numbers; a model that failed to load says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edugate.contract.state import MODEL_ENTRY_FIELDS
from edugate.gateway.inference import load_manifest
from edugate.simulators.servers import Mosquitto
from tests.helpers import REPO, Collector, GatewayProcess, wait_for


def health_records(collector: Collector) -> list[dict[str, Any]]:
    with collector.lock:
        return [r["values"] for r in collector.records["telemetry"] if r["device"] == "_gateway"]


def test_the_state_and_the_health_record_carry_the_models(tmp_path: Path) -> None:
    broken = tmp_path / "school-models" / "anomaly"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{}")  # the fridge's school model is unusable: reported, not hidden
    broker = Mosquitto(tmp_path / "mosquitto", persistence=False)
    broker.start()
    collector = Collector(broker.port).start()
    config = {
        "school": "test-school", "gateway": "gw-models", "uplink": {"port": broker.port, "health_interval_s": 0.5},
        "devices": [{"id": "c10a-env", "driver": "synthetic", "interval_s": 0.05, "values": 4, "room": "class-10a"},
                    {"id": "lab-fridge", "driver": "synthetic", "interval_s": 1, "values": 2, "room": "lab-2"}],
        "models": {"occupancy": [{"device": "c10a-env", "channels": {"co2": "v0", "temp": "v1", "humidity": "v2",
                                                                     "light": "v3"}}],
                   "anomaly": [{"device": "lab-fridge", "kind": "fridge", "channels": {"temp": "v0", "power": "v1"}}],
                   "folder": str(tmp_path / "school-models")},
    }
    gw = GatewayProcess(tmp_path / "gw", config).start()
    try:
        health = wait_for(lambda: [h for h in health_records(collector)
                                   if h.get("model_occupancy_occupied_calls", 0) >= 3], 30,
                          "a health record with model calls")[-1]
        state = wait_for(lambda: [s for s in collector.states
                                  if s and s.get("models", {}).get("occupancy-occupied", {}).get("loaded")], 10,
                         "a state with the models")[-1]
    finally:
        assert gw.stop() == 0
        collector.stop()
        broker.stop()
    shipped = load_manifest(REPO / "ml_models" / "occupancy" / "manifest.json")["occupancy-occupied"]
    occupied = state["models"]["occupancy-occupied"]
    assert set(occupied) == set(MODEL_ENTRY_FIELDS)
    assert (occupied["version"], occupied["sha256"]) == (shipped.version, shipped.sha256)
    fridge = state["models"]["anomaly-fridge"]
    assert fridge["loaded"] is False and "manifest.json" in fridge["error"] and fridge["sha256"] is None
    assert health["model_occupancy_occupied_loaded"] == 1 and health["model_anomaly_fridge_loaded"] == 0
    assert health["model_occupancy_occupied_p99_ms"] > 0 and health["model_occupancy_occupied_overruns"] >= 0
    assert all(type(v) in (int, float) for k, v in health.items() if k.startswith("model_"))
