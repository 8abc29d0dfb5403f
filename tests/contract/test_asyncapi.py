"""docs/asyncapi.yaml says exactly what edugate.contract defines: topics, ids, record fields, states, envelope."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from edugate.contract import commands, ids, records, state, topics
from tests.helpers import REPO

PARAMS = ("{school}", "{gateway}")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = doc["components"]["schemas"][name]
    assert isinstance(found, dict)
    return found


def all_properties(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The properties of a schema, through ``allOf`` and ``$ref``."""
    node = schema(doc, name)
    props: dict[str, Any] = dict(node.get("properties", {}))
    for part in node.get("allOf", []):
        if "$ref" in part:
            props |= all_properties(doc, part["$ref"].rsplit("/", 1)[-1])
        props |= part.get("properties", {})
    return props


def test_channels_are_the_contract_topics(doc: dict[str, Any]) -> None:
    expected = {topics.topic(*PARAMS, kind) for kind in topics.TopicKind if kind != topics.TopicKind.CMD}
    expected.add(topics.cmd_topic(*PARAMS, "{command}"))
    assert set(doc["channels"]) == expected


def test_ids(doc: dict[str, Any]) -> None:
    assert schema(doc, "id")["pattern"] == ids.ID_PATTERN
    for name in ("school", "gateway"):
        assert doc["components"]["parameters"][name]["schema"]["$ref"] == "#/components/schemas/id"


def test_record_fields(doc: dict[str, Any]) -> None:
    base = schema(doc, "recordBase")
    assert set(base["properties"]) | {"kind"} == set(records.BASE_FIELDS)  # kind: a const in each record type
    assert set(base["required"]) == set(records.REQUIRED_BASE_FIELDS)
    assert base["properties"]["device"]["pattern"] == records.DEVICE_PATTERN
    assert base["properties"]["room"]["maxLength"] == records.MAX_ROOM_CHARS
    telemetry, event = all_properties(doc, "telemetryRecord"), all_properties(doc, "eventRecord")
    assert set(telemetry) == set(records.TELEMETRY_FIELDS)
    assert set(event) == set(records.EVENT_FIELDS)
    assert set(telemetry) | set(event) == set(records.RECORD_FIELDS)
    assert telemetry["kind"] == {"const": records.Kind.TELEMETRY.value}
    assert event["kind"] == {"const": records.Kind.EVENT.value}
    assert telemetry["values"]["propertyNames"]["pattern"] == records.VALUE_NAME_PATTERN
    assert event["type"]["pattern"] == records.EVENT_TYPE_PATTERN


def test_device_states(doc: dict[str, Any]) -> None:
    device = schema(doc, "deviceState")
    assert device["properties"]["state"]["enum"] == [s.value for s in state.DeviceState]
    assert set(device["properties"]) == set(state.DEVICE_ENTRY_FIELDS)


def test_state_document(doc: dict[str, Any]) -> None:
    online, offline = schema(doc, "stateOnline"), schema(doc, "stateOffline")
    assert set(online["properties"]) | set(offline["properties"]) == set(state.STATE_FIELDS)
    assert online["properties"]["status"] == {"const": state.GatewayStatus.ONLINE.value}
    assert offline["properties"]["status"] == {"const": state.GatewayStatus.OFFLINE.value}
    assert offline["properties"]["reason"]["enum"] == [r.value for r in state.OfflineReason]
    assert doc["components"]["messages"]["stateOffline"]["examples"][1]["payload"] == state.offline_will()


def test_command_envelope(doc: dict[str, Any]) -> None:
    envelope = schema(doc, "commandEnvelope")
    assert tuple(envelope["required"]) == commands.ENVELOPE_FIELDS
    assert set(envelope["properties"]) == set(commands.ENVELOPE_FIELDS) == set(commands.Envelope.model_fields)
    assert envelope["properties"]["id"]["pattern"] == commands.COMMAND_ID_PATTERN
    assert schema(doc, "commandName")["pattern"] == commands.NAME_PATTERN
    for field in ("issued_at", "expires_at"):
        assert envelope["properties"][field]["maximum"] == commands.MAX_TIMESTAMP_MS
    assert set(envelope["properties"]["target"]["properties"]) == set(commands.Target.model_fields)


def test_the_examples_are_valid_records_and_envelopes(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    for record in messages["telemetryBatch"]["examples"][0]["payload"] + messages["eventBatch"]["examples"][0][
            "payload"]:
        assert set(record) <= set(records.RECORD_FIELDS)
        assert ids.is_id(record["device"]) or record["device"] == state.GATEWAY_DEVICE
    example = messages["commandEnvelope"]["examples"][0]["payload"]
    assert commands.check_shape(example).target.school == example["target"]["school"]
    online = messages["stateOnline"]["examples"][0]["payload"]
    assert set(online) <= set(state.STATE_FIELDS)
    assert {entry["state"] for entry in online["devices"].values()} <= {s.value for s in state.DeviceState}
