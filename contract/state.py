"""The state/health schema: the retained ``.../state`` document and the gateway's health record.

The gateway writes these (``gateway/runtime``); central parses them (``central/fleet.py``); the drivers report
their device's :class:`DeviceState`. ``docs/asyncapi.yaml`` is tested against the names defined here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, TypedDict


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


STATE_FIELDS: Final = tuple(StateDocument.__annotations__)
"""Every field a state document may have."""
DEVICE_ENTRY_FIELDS: Final = tuple(DeviceEntry.__annotations__)
"""Every field of one entry of ``devices``."""

GATEWAY_DEVICE: Final = "_gateway"
"""The device id of the gateway's own health record (a telemetry record on ``.../telemetry``)."""

HEALTH_CORE_VALUES: Final = ("uptime_s", "devices_online", "devices_offline", "cpu_percent", "rss_bytes",
                             "clock_synced", "skipped_polls")
"""Values every health record holds; the outbox, uplink, pipeline and downlink add their counters."""
HEALTH_BOOLEAN_VALUES: Final = ("clock_synced", "uplink_connected")
"""The health record's booleans: JSON ``true``/``false``, the same type as the state document's ``clock_synced``
(the store keeps them as 1/0). Every other health value is a number."""


def offline_will() -> StateDocument:
    """The last will a gateway leaves with the broker: published for it when its connection is lost."""
    return {"status": GatewayStatus.OFFLINE.value, "reason": OfflineReason.CONNECTION_LOST.value}
