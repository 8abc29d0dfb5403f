"""The event labels (which ``data`` keys, which value pattern, how values are encoded) are one thing in
``contract/records.py``, the ingest, docs/asyncapi.yaml and docs/mqtt-contract.md (issue 13, defect 2); and every
example of the AsyncAPI document is valid against its own schema (with ``jsonschema``)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
import yaml

from edugate.central.ingest import lineproto
from edugate.contract.records import EVENT_LABEL_KEYS, LABEL_VALUE_PATTERN
from tests.helpers import REPO

CONTRACT = (REPO / "docs" / "mqtt-contract.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def labels_section() -> str:
    start = CONTRACT.index("### Event labels and values")
    return CONTRACT[start:CONTRACT.index("| type | from | data | in the store |", start)]


def test_the_ingest_uses_the_contracts_labels() -> None:
    assert lineproto.EVENT_TAG_KEYS == EVENT_LABEL_KEYS
    assert lineproto.EVENT_TAG_VALUE_RE.pattern == LABEL_VALUE_PATTERN


def test_asyncapi_names_the_label_keys_and_pattern(doc: dict[str, Any]) -> None:
    event = doc["components"]["schemas"]["eventRecord"]["allOf"][1]["properties"]
    labels = event["data"]["x-edugate-labels"]
    assert tuple(labels["keys"]) == EVENT_LABEL_KEYS
    assert labels["valuePattern"] == LABEL_VALUE_PATTERN
    assert "no_allow-list" in event["data"]["description"]


def test_the_contract_document_says_the_same() -> None:
    section = labels_section()
    first = section[:section.index("Label values are")]
    assert tuple(re.findall(r"`([a-z_]+)`", first.split("when present", 1)[1].split(";")[0])) == EVENT_LABEL_KEYS
    assert f"`{LABEL_VALUE_PATTERN}`" in section
    # its worked examples are what the ingest does
    examples = re.findall(r'`(?:reason: )?"?([^`"]+)"?` is (?:the label )?`[a-z]+="([^"]+)"`', section)
    assert ("no allow-list", "no_allow-list") in examples and len(examples) >= 2, examples
    for raw, label in examples:
        assert lineproto.encode_label(raw) == label, (raw, label)


def test_every_example_is_valid_against_its_schema(doc: dict[str, Any]) -> None:
    checked = 0
    for name, message in doc["components"]["messages"].items():
        root = {"components": doc["components"], "allOf": [message["payload"]]}
        for example in message.get("examples", []):
            errors = [e.message for e in jsonschema.Draft7Validator(root).iter_errors(example["payload"])]
            assert not errors, (name, example.get("name"), errors)
            checked += 1
    assert checked >= 8
