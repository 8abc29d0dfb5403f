"""The health record's values, their types and the docs' examples are one thing in the contract, the AsyncAPI
document and docs/mqtt-contract.md (issue 13: defect 3 and docs 7, 8, 9)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from edugate.common.privacy import Pseudonymizer
from edugate.contract.state import HEALTH_BOOLEAN_VALUES, HEALTH_CORE_VALUES, HEALTH_DOWNLINK_VALUES, HEALTH_VALUES
from tests.helpers import REPO

CONTRACT = (REPO / "docs" / "mqtt-contract.md").read_text(encoding="utf-8")
ASYNCAPI_TEXT = (REPO / "docs" / "asyncapi.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def health_schema() -> dict[str, Any]:
    return yaml.safe_load(ASYNCAPI_TEXT)["components"]["schemas"]["gatewayHealthValues"]


def documented_health_values() -> list[str]:
    """The names the contract's *Gateway health* paragraph lists."""
    start = CONTRACT.index("**Gateway health.**")
    paragraph = CONTRACT[start:CONTRACT.index("Consumers must accept new names", start)]
    return re.findall(r"`([a-z_]+)`", paragraph)


def test_the_contract_lists_what_asyncapi_defines(health_schema: dict[str, Any]) -> None:
    assert sorted(set(documented_health_values())) == sorted(health_schema["properties"]) == sorted(HEALTH_VALUES)
    assert set(health_schema["required"]) == set(HEALTH_CORE_VALUES)


def test_clock_synced_is_a_boolean_in_the_health_record_and_the_state(health_schema: dict[str, Any]) -> None:
    booleans = {name for name, prop in health_schema["properties"].items() if prop["type"] == "boolean"}
    assert booleans == set(HEALTH_BOOLEAN_VALUES)
    state = yaml.safe_load(ASYNCAPI_TEXT)["components"]["schemas"]["stateOnline"]["properties"]
    assert state["clock_synced"]["type"] == health_schema["properties"]["clock_synced"]["type"] == "boolean"
    assert {p["type"] for n, p in health_schema["properties"].items() if n not in booleans} <= {"integer", "number"}


def test_the_command_counters_are_in_the_contract() -> None:
    assert {"commands_received", "commands_ok", "commands_failed", "commands_rejected"} == \
        set(HEALTH_DOWNLINK_VALUES) <= set(documented_health_values())


def test_pseudonyms_in_the_examples_have_the_real_format() -> None:
    real = Pseudonymizer(b"k" * 32)(b"\x0a\x1b\x2c\x3d\x4e")
    form = re.compile(r"^p1-[0-9a-f]{32}$")
    assert form.match(real), real
    shown = re.findall(r'"card"\s*:\s*"([^"]*)"', CONTRACT) + re.findall(r'card:\s*"([^"]*)"', ASYNCAPI_TEXT)
    assert shown, "the examples show a card tap"
    assert [card for card in shown if not form.match(card)] == []


def test_per_device_counters_are_not_said_to_be_in_the_health_record() -> None:
    for path in [*(REPO / "docs").rglob("*.md"), *(REPO / "drivers").glob("*/README.md")]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"counters \(in the gateway health record\)", text), path
