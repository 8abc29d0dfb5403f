"""The state/health schema: the retained ``.../state`` document and the gateway's health record.

The gateway writes these (``gateway/runtime``); central parses them (``central/fleet.py``); the drivers report
their device's :class:`DeviceState`. ``docs/asyncapi.yaml`` is tested against the names defined here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Final, TypedDict


class DeviceState(StrEnum):
    """What a driver says about its device."""

    STARTING = "starting"
    ONLINE = "online"
    OFFLINE = "offline"  # unreachable or failing; the driver retries with back-off
    STOPPED = "stopped"


HEALTHY_DEVICE_STATES: Final = frozenset({DeviceState.ONLINE, DeviceState.STARTING})
"""Device states not listed as "in error" on central's pages."""


class GatewayStatus(StrEnum):
    """``status`` of a state document."""

    ONLINE = "online"
    OFFLINE = "offline"


class OfflineReason(StrEnum):
    """``reason`` of an offline state document."""

    SHUTDOWN = "shutdown"  # a clean stop, published by the gateway (with ts)
    CONNECTION_LOST = "connection lost"  # the last will, published by the broker (no ts)


class DeviceEntry(TypedDict, total=False):
    """One device in a state document's ``devices`` object (keyed by device id)."""

    state: str  # a DeviceState value
    error_count: int
    last_error: str | None
    driver: str
    room: str | None


class ModelEntry(TypedDict, total=False):
    """One on-device ONNX model in a state document's ``models`` object (keyed by model name)."""

    version: str | None  # None: no version could be loaded
    sha256: str | None  # of the file running
    loaded: bool  # False: failed (see error) or not loaded (the rule runs instead)
    error: str | None  # why the last load or swap failed
    calls: int
    overruns: int  # calls slower than their time budget
    p99_ms: float | None  # over the last 2,000 calls; None before the first


class CardRuleEntry(TypedDict):
    """The state document's ``card_rule``: which card identity rule the gateway pseudonymises under (issue 22).

    Never a key or a card number: the rule's version and a short fingerprint of its settings, so that central
    can flag a school whose gateways do not give one card one pseudonym."""

    version: int  # privacy.card_identity.version; 0: no rule (cards pseudonymised as read)
    fingerprint: str  # CARD_RULE_FINGERPRINT_CHARS hex characters: card_rule_fingerprint(settings)


class StateDocument(TypedDict, total=False):
    """The retained ``edu/v1/{school}/{gateway}/state`` payload (a JSON object)."""

    status: str  # a GatewayStatus value; the only field every document has
    ts: int  # ms since the epoch, gateway time; absent in the last will
    reason: str  # offline only: an OfflineReason value
    version: str  # the gateway's software version
    started_at: int  # ms since the epoch
    school: str
    gateway: str
    district: str | None
    clock_synced: bool
    devices: dict[str, DeviceEntry]
    models: dict[str, ModelEntry]  # the on-device models (issue 14); {} on a gateway without any
    card_rule: CardRuleEntry  # the card identity rule (issue 22); absent from gateways before it


STATE_FIELDS: Final = tuple(StateDocument.__annotations__)
"""Every field a state document may have."""
DEVICE_ENTRY_FIELDS: Final = tuple(DeviceEntry.__annotations__)
"""Every field of one entry of ``devices``."""
MODEL_ENTRY_FIELDS: Final = tuple(ModelEntry.__annotations__)
"""Every field of one entry of ``models``."""
CARD_RULE_FIELDS: Final = tuple(CardRuleEntry.__annotations__)
"""Every field of ``card_rule``."""
CARD_RULE_FINGERPRINT_CHARS: Final = 8


def card_rule_fingerprint(settings: Mapping[str, Any]) -> str:
    """The first :data:`CARD_RULE_FINGERPRINT_CHARS` hex digits of the SHA-256 of ``settings`` (the rule's
    settings that decide pseudonyms, without its version) as canonical JSON: sorted keys, no spaces."""
    text = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:CARD_RULE_FINGERPRINT_CHARS]


def card_rule_entry(version: int, settings: Mapping[str, Any]) -> CardRuleEntry:
    """The state document's ``card_rule`` for a rule of ``version`` with ``settings``."""
    return {"version": version, "fingerprint": card_rule_fingerprint(settings)}

GATEWAY_DEVICE: Final = "_gateway"
"""The device id of the gateway's own health record (a telemetry record on ``.../telemetry``)."""

HEALTH_CORE_VALUES: Final = ("uptime_s", "devices_online", "devices_offline", "cpu_percent", "rss_bytes",
                             "clock_synced", "skipped_polls")
"""Values every health record holds; the outbox, uplink, pipeline and downlink add their counters."""
HEALTH_BOOLEAN_VALUES: Final = ("clock_synced", "uplink_connected")
"""The health record's booleans: JSON ``true``/``false``, the same type as the state document's ``clock_synced``
(the store keeps them as 1/0). Every other health value is a number."""
HEALTH_DOWNLINK_VALUES: Final = ("commands_received", "commands_ok", "commands_failed", "commands_rejected")
"""Only on a gateway with ``downlink.enabled``: the commands it handled, by outcome."""
HEALTH_VALUES: Final = (
    "uptime_s", "cpu_percent", "clock_synced", "uplink_connected", "devices_online", "devices_offline", "rss_bytes",
    "outbox_records", "outbox_events", "outbox_telemetry", "outbox_bytes", "outbox_disk_bytes", "outbox_budget_bytes",
    "outbox_committed", "outbox_commits", "outbox_acked", "telemetry_thinned", "events_over_budget",
    "outbox_thin_passes", "outbox_confirmed", "telemetry_thinned_unconfirmed", "uplink_end_to_end_ack",
    "uplink_confirmations", "uplink_confirm_resends", "uplink_unconfirmed_age_s", "uplink_reconnects",
    "published_messages", "published_records", "pipeline_accepted", "pipeline_rejected", "pipeline_dropped",
    "skipped_polls", *HEALTH_DOWNLINK_VALUES)
"""Every value a health record holds besides the per-model ones (:data:`HEALTH_MODEL_VALUES`); the AsyncAPI
document's ``gatewayHealthValues`` and docs/mqtt-contract.md list exactly these."""


HEALTH_MODEL_VALUES: Final = ("loaded", "calls", "overruns", "p99_ms")
"""Per on-device model, the health record holds ``model_<name>_<value>`` (:func:`model_health_key`; ``loaded``
as 1/0, ``p99_ms`` once the model has been called); its version and SHA-256 are in the state document."""


def model_health_key(model: str, value: str) -> str:
    """The health record's value name for ``value`` of ``model``: (``anomaly-fridge``, ``calls``) ->
    ``model_anomaly_fridge_calls``; the name is cut to 40 characters so that the key stays a valid value name."""
    return "model_" + re.sub(r"[^a-z0-9]", "_", model.lower())[:40] + "_" + value


def model_entries(statuses: Iterable[Mapping[str, Any]]) -> dict[str, ModelEntry]:
    """The ``models`` of a state document from the services' status documents: each one's ``models`` (model name
    -> the model engine's ``RunnerStatus``: the model stage's, the attendance checks')."""
    entries: dict[str, ModelEntry] = {}
    for status in statuses:
        models = status.get("models")
        for name, m in models.items() if isinstance(models, Mapping) else ():
            if isinstance(m, Mapping):
                # a comprehension over the TypedDict's own keys: mypy types it dict[str, Any], not ModelEntry
                entries[str(name)] = {k: m.get(k) for k in MODEL_ENTRY_FIELDS}  # type: ignore[assignment]  # see above
    return entries


def model_health_values(entries: Mapping[str, ModelEntry]) -> dict[str, float | int]:
    """The health record's numeric values of ``entries`` (see :data:`HEALTH_MODEL_VALUES`)."""
    values: dict[str, float | int] = {}
    for name, entry in sorted(entries.items()):
        values[model_health_key(name, "loaded")] = int(bool(entry.get("loaded")))
        for key in ("calls", "overruns", "p99_ms"):
            number = entry.get(key)
            if isinstance(number, int | float) and not isinstance(number, bool):
                values[model_health_key(name, key)] = number
    return values


def offline_will() -> StateDocument:
    """The last will a gateway leaves with the broker: published for it when its connection is lost."""
    return {"status": GatewayStatus.OFFLINE.value, "reason": OfflineReason.CONNECTION_LOST.value}
