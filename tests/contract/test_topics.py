"""Topic builders and the parser of the wire contract (``edugate.contract.topics``)."""

from __future__ import annotations

import pytest

from edugate.contract.topics import (
    TOPIC_ROOT,
    InvalidTopic,
    TopicKind,
    cmd_topic,
    gateway_prefix,
    parse_topic,
    subscription,
    topic,
)


def test_builders() -> None:
    assert TOPIC_ROOT == "edu/v1"
    assert gateway_prefix("thpt-a", "gw-1") == "edu/v1/thpt-a/gw-1"
    assert topic("thpt-a", "gw-1", TopicKind.STATE) == "edu/v1/thpt-a/gw-1/state"
    assert topic("thpt-a", "gw-1", "cmd-result") == "edu/v1/thpt-a/gw-1/cmd-result"
    assert cmd_topic("thpt-a", "gw-1", "device.command") == "edu/v1/thpt-a/gw-1/cmd/device.command"
    assert subscription(TopicKind.STATE) == "edu/v1/+/+/state"
    assert subscription(TopicKind.EVENT, school="thpt-a") == "edu/v1/thpt-a/+/event"


@pytest.mark.parametrize("good", ["edu/v1/thpt-le-quy-don/gw-1/telemetry", "edu/v1/s/g_2/event", "edu/v1/s/g/state"])
def test_parse_topic(good: str) -> None:
    parsed = parse_topic(good)
    assert f"edu/v1/{parsed.school}/{parsed.gateway}/{parsed.kind}" == good
    assert topic(parsed.school, parsed.gateway, parsed.kind) == good


@pytest.mark.parametrize(("bad", "reason"), [
    ("edu/v1/School/gw/telemetry", "school id 'School'"),
    ("edu/v1/s/-gw/telemetry", "gateway id '-gw'"),
    ("edu/v1/s/gw/cmd", "kind 'cmd'"),
    ("edu/v2/s/gw/telemetry", "is not edu/v1/"),
    ("edu/v1/s/gw/telemetry/x", "is not edu/v1/"),
])
def test_parse_topic_rejects(bad: str, reason: str) -> None:
    with pytest.raises(InvalidTopic, match=reason):
        parse_topic(bad)


def test_the_unknown_kind_message_lists_the_kinds_central_reads() -> None:
    with pytest.raises(InvalidTopic, match=r"^kind 'cmd-result' is not one of telemetry, event, state$"):
        parse_topic("edu/v1/s/gw/cmd-result")
