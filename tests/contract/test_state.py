"""One DeviceState for drivers, gateway and central; the state document's fields as the gateway writes them."""

from __future__ import annotations

from pathlib import Path

import orjson

from edugate.central.fleet import parse_state
from edugate.contract.ids import ID_PATTERN, is_id
from edugate.contract.state import (
    DEVICE_ENTRY_FIELDS,
    GATEWAY_DEVICE,
    HEALTH_CORE_VALUES,
    HEALTHY_DEVICE_STATES,
    MODEL_ENTRY_FIELDS,
    STATE_FIELDS,
    DeviceState,
    GatewayStatus,
    offline_will,
)
from edugate.drivers import base
from edugate.gateway.config import parse_config
from edugate.gateway.runtime import pipeline
from edugate.gateway.runtime.gateway import Gateway


def test_drivers_use_the_contract_definitions() -> None:
    assert base.DeviceState is DeviceState
    assert base.ID_PATTERN is ID_PATTERN
    assert [s.value for s in DeviceState] == ["starting", "online", "offline", "stopped"]
    assert HEALTHY_DEVICE_STATES == {"online", "starting"}


def test_ids() -> None:
    assert is_id("thpt-le-quy-don") and is_id("gw_1") and is_id("0")
    assert not is_id("Gw") and not is_id("-gw") and not is_id("") and not is_id("a" * 64)


def test_central_parses_what_the_contract_defines() -> None:
    doc = {"status": GatewayStatus.ONLINE.value, "ts": 1_763_900_000_000, "version": "0.1.0",
           "started_at": 1_763_899_000_000, "school": "thpt-a", "gateway": "gw-1", "district": None,
           "clock_synced": True,
           "devices": {"probe": {"state": DeviceState.OFFLINE.value, "error_count": 3, "last_error": "timeout",
                                 "driver": "modbus", "room": "lab-1"}},
           "models": {"anomaly-fridge": {"version": "2026.12.0", "sha256": "ab" * 32, "loaded": True, "error": None,
                                         "calls": 12, "overruns": 0, "p99_ms": 0.4}},
           "card_rule": {"version": 1, "fingerprint": "32bb1b3f"}}
    assert set(doc) == set(STATE_FIELDS) - {"reason"}
    assert set(doc["models"]["anomaly-fridge"]) == set(MODEL_ENTRY_FIELDS)  # type: ignore[index]
    assert set(doc["devices"]["probe"]) == set(DEVICE_ENTRY_FIELDS)  # type: ignore[index]
    parsed, problems = parse_state(orjson.dumps(doc))
    assert problems == []
    assert parsed is not None and parsed.online
    assert (parsed.card_rule.version, parsed.card_rule.fingerprint) == (1, "32bb1b3f")  # type: ignore[union-attr]
    assert [(d.device, d.state, d.error_count, d.last_error) for d in parsed.devices] == \
        [("probe", "offline", 3, "timeout")]
    will, _ = parse_state(orjson.dumps(offline_will()))
    assert will is not None and not will.online and will.ts is None and will.reason == "connection lost"


def test_the_gateway_writes_the_contract_state_document(tmp_path: Path) -> None:
    cfg = parse_config(
        f"school: thpt-a\ngateway: gw-1\ndistrict: quan-1\nstorage: {{path: {tmp_path / 'outbox.sqlite'}}}\n"
        f"privacy: {{secret_file: {tmp_path / 'school.key'}}}\n"
        "devices:\n  - {id: probe-1, driver: synthetic, room: lab-1, interval_s: 1}\n")
    gw = Gateway(cfg)
    doc = gw.state_document() | {"status": GatewayStatus.ONLINE.value}
    assert set(doc) <= set(STATE_FIELDS)
    assert set(STATE_FIELDS) - set(doc) == {"reason"}  # offline documents only
    [entry] = doc["devices"].values()
    assert set(entry) == set(DEVICE_ENTRY_FIELDS)
    assert entry["state"] in {s.value for s in DeviceState}
    parsed, problems = parse_state(orjson.dumps(doc))
    assert problems == [] and parsed is not None and parsed.online and parsed.started_at == doc["started_at"]
    assert set(HEALTH_CORE_VALUES) <= set(gw.health_values())
    assert pipeline.GATEWAY_DEVICE == GATEWAY_DEVICE  # the health record's device id
