"""MQTT topics: ``edu/v1/{school}/{gateway}/{kind}[/...]`` (docs/mqtt-contract.md, docs/asyncapi.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from edugate.contract.ids import ID_RE

TOPIC_ROOT: Final = "edu/v1"


class TopicKind(StrEnum):
    """The level after ``{school}/{gateway}``."""

    TELEMETRY = "telemetry"  # gateway -> central: a JSON array of telemetry records
    EVENT = "event"  # gateway -> central: a JSON array of event records
    STATE = "state"  # gateway -> central: the retained state document (birth, last will)
    CMD = "cmd"  # central -> gateway: .../cmd/{name}, a signed command envelope
    CMD_RESULT = "cmd-result"  # gateway -> central: the outcome of a command
    STORED = "stored"  # central -> gateway: the seq ranges central has stored (contract/stored.py)


DATA_KINDS: Final = (TopicKind.TELEMETRY, TopicKind.EVENT)
INGESTED_KINDS: Final = (*DATA_KINDS, TopicKind.STATE)
"""The kinds central's ingest reads (``parse_topic`` accepts only these)."""


class InvalidTopic(ValueError):
    """A topic outside ``edu/v1/{school}/{gateway}/{telemetry|event|state}``."""


@dataclass(frozen=True, slots=True)
class Topic:
    school: str
    gateway: str
    kind: str  # "telemetry" | "event" | "state"


def gateway_prefix(school: str, gateway: str) -> str:
    """``edu/v1/{school}/{gateway}``: everything one gateway publishes or receives is below it."""
    return f"{TOPIC_ROOT}/{school}/{gateway}"


def topic(school: str, gateway: str, kind: TopicKind | str) -> str:
    """``edu/v1/{school}/{gateway}/{kind}``."""
    return f"{gateway_prefix(school, gateway)}/{kind}"


def cmd_topic(school: str, gateway: str, name: str) -> str:
    """``edu/v1/{school}/{gateway}/cmd/{name}``: where a signed command is published."""
    return f"{topic(school, gateway, TopicKind.CMD)}/{name}"


def stored_topic(school: str, gateway: str) -> str:
    """``edu/v1/{school}/{gateway}/stored``: where central's ingest confirms what it stored of this gateway."""
    return topic(school, gateway, TopicKind.STORED)


def subscription(kind: TopicKind | str, school: str = "+", gateway: str = "+") -> str:
    """A subscription filter, e.g. ``edu/v1/+/+/state`` (every gateway's state)."""
    return topic(school, gateway, kind)


def parse_topic(name: str) -> Topic:
    """Split ``edu/v1/{school}/{gateway}/{kind}``; raise :class:`InvalidTopic` saying what is wrong."""
    parts = name.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise InvalidTopic(f"topic {name!r} is not {TOPIC_ROOT}/{{school}}/{{gateway}}/{{kind}}")
    _, _, school, gateway, kind = parts
    if not ID_RE.fullmatch(school):
        raise InvalidTopic(f"school id {school!r} must match {ID_RE.pattern}")
    if not ID_RE.fullmatch(gateway):
        raise InvalidTopic(f"gateway id {gateway!r} must match {ID_RE.pattern}")
    if kind not in INGESTED_KINDS:
        raise InvalidTopic(f"kind {kind!r} is not one of {', '.join(INGESTED_KINDS)}")
    return Topic(school, gateway, kind)
