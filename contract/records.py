"""What drivers produce, and what leaves the gateway.

Drivers emit :class:`Reading` (telemetry: named values sampled from a device)
and :class:`Event` (something happened: a card tap, an alarm, a door decision).
The pipeline turns each into a :data:`WireRecord`, the JSON object that is
stored in the outbox and published over MQTT (see ``docs/mqtt-contract.md``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypedDict

Value = float | int | bool | str

DEVICE_PATTERN: Final = r"^[a-z0-9_][a-z0-9_-]{0,62}$"
"""A record's ``device``: a configured device id (``ids.ID_PATTERN``), or the gateway's own ``_gateway``."""
VALUE_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
"""The names in a telemetry record's ``values``."""
EVENT_TYPE_PATTERN: Final = r"^[a-z][a-z0-9_.]{0,63}$"
"""An event record's ``type``, e.g. ``card_tap``, ``bus_left_onboard``."""
MAX_ROOM_CHARS: Final = 64
SESSION_PATTERN: Final = r"^s-[0-9a-z][0-9a-z-]{0,37}$"
"""A telemetry record's ``session``: the experiment session a lab teacher runs on its device (issue 15)."""
MAX_TS_MS: Final = 2**53
"""Beyond this a JSON number is no longer an exact integer in most consumers."""
EVENT_LABEL_KEYS: Final = ("role", "direction", "decision", "action", "period", "late", "reason", "alert", "rule",
                           "severity", "session")
"""The event ``data`` keys central stores as labels of the event's series: few values each, never personal (a
pseudonym is never a label)."""
LABEL_CHARS: Final = "A-Za-z0-9_.:-"
"""The characters of a stored label value; every other character of a value becomes ``_``, one for one."""
MAX_LABEL_CHARS: Final = 40
LABEL_VALUE_PATTERN: Final = rf"^[{LABEL_CHARS}]{{1,{MAX_LABEL_CHARS}}}$"
"""A stored label value (after that encoding); a value that still does not match is not a label (counted)."""


class Kind(StrEnum):
    """The two record kinds; they differ in how the outbox treats them under pressure."""

    TELEMETRY = "telemetry"  # may be thinned or dropped when the disk budget is reached (counted)
    EVENT = "event"  # never dropped: card taps, alarms, access decisions


@dataclass(frozen=True, slots=True)
class Reading:
    """Values sampled from one device at one moment."""

    device: str
    values: Mapping[str, Value]
    ts: float | None = None  # Unix seconds; None = "now" when the pipeline sees it


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at one device. ``data`` must not hold personal data."""

    device: str
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    ts: float | None = None


Item = Reading | Event
Emit = Callable[[Item], Awaitable["dict[str, Any] | None"]]
"""A driver awaits ``emit(item)``; it returns the committed record (with its ``seq``, and for a card tap
the pipeline's ``decision``) once it is durable in the outbox, None if a pipeline stage dropped it, or
raises :class:`Rejected` when the pipeline refused it."""


class Rejected(ValueError):
    """The pipeline refused an item (invalid value, unknown device...). The message says why."""


class WireRecord(TypedDict, total=False):
    """One record as stored in the outbox and published (a JSON object)."""

    seq: int  # per-gateway sequence number, persisted, strictly increasing
    kind: str  # "telemetry" | "event"
    device: str
    room: str
    ts: int  # milliseconds since the Unix epoch, stamped once, never changed
    synced: bool  # was the gateway clock NTP-synchronised when ts was stamped
    values: dict[str, Value]  # telemetry only
    session: str  # telemetry only, optional: the experiment session the device is in (SESSION_PATTERN)
    type: str  # event only
    data: dict[str, Any]  # event only


RECORD_FIELDS: Final = tuple(WireRecord.__annotations__)
"""Every field a wire record may have (telemetry: the base fields and ``values``; event: ``type`` and ``data``)."""
BASE_FIELDS: Final = ("seq", "kind", "device", "room", "ts", "synced")
REQUIRED_BASE_FIELDS: Final = ("seq", "kind", "device", "ts", "synced")
TELEMETRY_FIELDS: Final = (*BASE_FIELDS, "values", "session")
EVENT_FIELDS: Final = (*BASE_FIELDS, "type", "data")
