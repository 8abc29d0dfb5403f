"""The on-device models in the health record (numbers) and the state document (version, SHA-256), as the
gateway writes them and as the AsyncAPI document describes them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import yaml

from edugate.central.fleet import parse_state
from edugate.contract.state import MODEL_ENTRY_FIELDS, STATE_FIELDS, model_health_key, model_health_values
from edugate.gateway.config import parse_config
from edugate.gateway.runtime.gateway import Gateway
from tests.helpers import REPO


def config(tmp_path: Path, extra: str = "") -> str:
    return (f"school: thpt-a\ngateway: gw-1\nstorage: {{path: {tmp_path / 'outbox.sqlite'}}}\n"
            f"privacy: {{secret_file: {tmp_path / 'school.key'}}}\n"
            "devices:\n  - {id: lab1-fridge, driver: synthetic, room: lab-1, interval_s: 1}\n" + extra)


def test_a_gateway_reports_its_models_in_the_state_and_the_health_record(tmp_path: Path) -> None:
    folder = tmp_path / "school-models" / "anomaly"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{not json")  # the fridge model fails: reported, not hidden
    gw = Gateway(parse_config(config(tmp_path, f"models:\n  anomaly: [{{device: lab1-fridge, kind: fridge}}]\n"
                                               f"  folder: {tmp_path / 'school-models'}\n")))
    stage = next(s for s in gw.services if s.name == "models")
    asyncio.run(stage.refresh())  # type: ignore[attr-defined]  # loads (here: fails to load) the model
    doc = gw.state_document() | {"status": "online"}
    assert set(doc) <= set(STATE_FIELDS)
    [(name, entry)] = doc["models"].items()
    assert name == "anomaly-fridge" and set(entry) == set(MODEL_ENTRY_FIELDS)
    assert entry["loaded"] is False and "manifest.json" in entry["error"] and entry["calls"] == 0
    parsed, problems = parse_state(orjson.dumps(doc))
    assert parsed is not None and problems == []
    health = gw.health_record_values()
    assert health["model_anomaly_fridge_loaded"] == 0 and health["model_anomaly_fridge_calls"] == 0
    assert "model_anomaly_fridge_p99_ms" not in health  # no call yet
    assert all(type(v) in (int, float) for k, v in health.items() if k.startswith("model_"))


def test_without_models_the_state_says_so() -> None:
    assert model_health_values({}) == {}
    entry = {"version": "1", "sha256": "a" * 64, "loaded": True, "error": None, "calls": 3, "overruns": 1,
             "p99_ms": 0.25}
    assert model_health_values({"attendance-card-shared": entry}) == {  # type: ignore[dict-item]
        "model_attendance_card_shared_loaded": 1, "model_attendance_card_shared_calls": 3,
        "model_attendance_card_shared_overruns": 1, "model_attendance_card_shared_p99_ms": 0.25}
    assert len(model_health_key("x" * 64, "overruns")) <= 64


def test_the_asyncapi_document_describes_the_model_entries() -> None:
    doc = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text())
    assert set(doc["components"]["schemas"]["modelState"]["properties"]) == set(MODEL_ENTRY_FIELDS)
