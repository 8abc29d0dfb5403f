"""Pure conversion of gateway MQTT payloads into InfluxDB line protocol.

No I/O here: :class:`LineEncoder` takes a payload (bytes) and the ids parsed
from its topic and returns the lines to write plus a list of problems, one per
skipped record or value. The mapping (documented in ``docs/mqtt-contract.md``):

* telemetry record -> one line, measurement ``edugate``, tags ``school``,
  ``gateway``, ``device`` and ``room`` (only when present), one field per
  number or boolean (booleans as 1/0; strings are not stored), timestamp = the
  record's ``ts`` in ms. VictoriaMetrics names the series ``edugate_<field>``.
* event record -> measurement ``edugate_event``, tags ``school, gateway,
  device, room, type`` plus the few low-cardinality data keys in
  ``EVENT_TAG_KEYS`` (role, direction, decision, action, period, late...; a
  value's characters outside ``[A-Za-z0-9_.:-]`` become ``_``, and a value
  that still cannot be a label is counted in ``dropped_labels``),
  field ``count=1`` (series ``edugate_event_count``) plus every numeric data
  value (e.g. ``present`` of an ``attendance_summary`` -> ``edugate_event_present``).
  Pseudonyms are never labels.
* gateway state -> measurement ``edugate_gateway``, field ``online`` 1/0
  (series ``edugate_gateway_online``), see :func:`state_line`.

Every number is written without the ``i`` suffix, i.e. as a float: a value
that is sometimes 21 and sometimes 21.5 then never causes a field type
conflict in InfluxDB, and VictoriaMetrics stores float64 anyway.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from edugate.contract.records import (
    DEVICE_PATTERN,
    EVENT_LABEL_KEYS,
    EVENT_TYPE_PATTERN,
    LABEL_CHARS,
    LABEL_VALUE_PATTERN,
    MAX_LABEL_CHARS,
    MAX_ROOM_CHARS,
    MAX_TS_MS,
    VALUE_NAME_PATTERN,
)
from edugate.contract.topics import (  # noqa: F401 - the topic contract, re-exported for the ingest's callers
    TOPIC_ROOT,
    InvalidTopic,
    Topic,
    parse_topic,
)

MEASUREMENT = "edugate"
EVENT_MEASUREMENT = "edugate_event"
GATEWAY_MEASUREMENT = "edugate_gateway"

DEVICE_RE = re.compile(DEVICE_PATTERN)
"""Device ids: the config's id pattern, plus the gateway's own ``_gateway``."""
VALUE_NAME_RE = re.compile(VALUE_NAME_PATTERN)
"""Value names, as the gateway pipeline accepts them."""
EVENT_TYPE_RE = re.compile(EVENT_TYPE_PATTERN)
MAX_ROOM = MAX_ROOM_CHARS
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_VALUES = 256
"""Values in one telemetry record: the gateway pipeline's own limit (``MAX_VALUES`` there)."""
MAX_LINE_CHARS = 64 * 1024
"""A longer line is skipped as its record: VictoriaMetrics refuses a line over 256 KiB (``-influx.maxLineSize``)
with HTTP 400, and with it every good record of the same message."""


_TAG_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a payload, a record or a single value was not stored."""

    index: int | None  # record index in the batch; None = the whole payload
    reason: str
    value: str | None = None  # the value name, when only one value was skipped

    def __str__(self) -> str:
        where = "payload" if self.index is None else f"record [{self.index}]"
        if self.value is not None:
            where += f" value {self.value!r}"
        return f"{where}: {self.reason}"


@dataclass(slots=True)
class Converted:
    """The result of converting one MQTT payload."""

    lines: list[str] = field(default_factory=list)
    records: int = 0  # records in the payload (0 if it was not a JSON array)
    invalid_records: int = 0  # records skipped whole
    invalid_values: int = 0  # single values skipped (the rest of the record is stored)
    ignored_values: int = 0  # string values: allowed, but not a time series
    dropped_labels: int = 0  # event data that should have been a label and cannot be one (the event is stored)
    points: int = 0  # field values written (one per line for events)
    unsynced: int = 0  # records stamped while the gateway clock was not synchronised
    min_seq: int | None = None  # the lowest and highest seq of the payload's records (a record skipped for another
    max_seq: int | None = None  # reason than its seq counts: central confirms it as handled, contract/stored.py)
    problems: list[Problem] = field(default_factory=list)

    @property
    def payload_invalid(self) -> bool:
        return bool(self.problems) and self.problems[0].index is None


def escape_tag(text: str) -> str:
    """Escape a tag key or value (and a field key): backslash, comma, equals sign, space."""
    return text.translate(_TAG_ESCAPES)


def state_line(school: str, gateway: str, online: bool, ts_ms: int) -> str:
    """``edugate_gateway,school=..,gateway=.. online=1|0 <ts>`` (series ``edugate_gateway_online``)."""
    return f"{GATEWAY_MEASUREMENT},school={escape_tag(school)},gateway={escape_tag(gateway)} " \
           f"online={1 if online else 0} {ts_ms}"


class LineEncoder:
    """Turns payloads into lines; caches tag prefixes and field keys between calls.

    ``max_future_ms``: records stamped further than this ahead of ``now_ms``
    are skipped (VictoriaMetrics silently drops samples more than two days in
    the future; here they are counted and logged instead).
    """

    CACHE_MAX = 200_000

    def __init__(self, max_future_ms: int = 86_400_000) -> None:
        self.max_future_ms = max_future_ms
        self._prefixes: dict[tuple[str, str, str, str, str | None, str | None], str] = {}
        self._keys: dict[str, str | None] = {}

    def convert(self, payload: bytes, topic: Topic, now_ms: int) -> Converted:
        """Convert one telemetry or event payload (a JSON array of records)."""
        out = Converted()
        try:
            batch = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            out.problems.append(Problem(None, f"not JSON: {exc}"))
            return out
        if not isinstance(batch, list):
            out.problems.append(Problem(None, f"expected a JSON array of records, got {_json_type(batch)}"))
            return out
        out.records = len(batch)
        if topic.kind == "telemetry":
            self._telemetry(batch, topic, now_ms + self.max_future_ms, out)
        elif topic.kind == "event":
            self._events(batch, topic, now_ms + self.max_future_ms, out)
        else:
            raise ValueError(f"LineEncoder.convert handles telemetry and event, not {topic.kind!r}")
        return out

    # ------------------------------------------------------------------ records

    def _telemetry(self, batch: list[Any], topic: Topic, max_ts: int, out: Converted) -> None:
        lines = out.lines
        keys = self._keys
        for index, record in enumerate(batch):
            head = self._head(record, index, "telemetry", max_ts, out)
            if head is None:
                continue
            device, room, ts = head
            values = record.get("values")
            if not isinstance(values, dict) or not values:
                self._skip(out, index, f"'values' must be a non-empty object, got {_json_type(values)}")
                continue
            if len(values) > MAX_VALUES:
                self._skip(out, index, f"{len(values)} values in one record (at most {MAX_VALUES})")
                continue
            fields: list[str] = []
            for name, value in values.items():
                key = keys.get(name, "")
                if key == "":
                    key = keys[name] = self._field_key(name)
                if key is None:
                    out.invalid_values += 1
                    out.problems.append(Problem(index, f"value name must match {VALUE_NAME_RE.pattern}", name))
                    continue
                kind = type(value)
                if kind is float:
                    if value - value != 0.0:  # inf or nan: orjson refuses them, a defence all the same
                        out.invalid_values += 1
                        out.problems.append(Problem(index, f"{value!r} is not a finite number", name))
                        continue
                    fields.append(key + repr(value))
                elif kind is int:
                    fields.append(key + str(value))
                elif kind is bool:
                    fields.append(key + ("1" if value else "0"))
                elif kind is str:
                    out.ignored_values += 1
                else:
                    out.invalid_values += 1
                    out.problems.append(Problem(index, f"expected a number or boolean, got {_json_type(value)}", name))
            if fields:
                prefix = self._prefix(MEASUREMENT, topic, device, room, None)
                lines.append(f"{prefix} {','.join(fields)} {ts}")
                out.points += len(fields)

    def _events(self, batch: list[Any], topic: Topic, max_ts: int, out: Converted) -> None:
        for index, record in enumerate(batch):
            head = self._head(record, index, "event", max_ts, out)
            if head is None:
                continue
            device, room, ts = head
            event_type = record.get("type")
            if not isinstance(event_type, str) or not EVENT_TYPE_RE.fullmatch(event_type):
                self._skip(out, index, f"'type' must be a string matching {EVENT_TYPE_RE.pattern}, "
                                       f"got {_short(event_type)}")
                continue
            data = record.get("data", {})
            if not isinstance(data, dict):
                self._skip(out, index, f"'data' must be an object, got {_json_type(data)}")
                continue
            tags, fields, dropped = _event_tags_and_fields(data)
            for key, why in dropped:
                out.dropped_labels += 1
                out.problems.append(Problem(index, why, key))
            prefix = self._prefix(EVENT_MEASUREMENT, topic, device, room, event_type)
            line = f"{prefix}{tags} count=1{fields} {ts}"
            if len(line) > MAX_LINE_CHARS:
                self._skip(out, index, f"'data' too big to store: a line of {len(line)} characters (at most "
                                       f"{MAX_LINE_CHARS})")
                continue
            out.lines.append(line)
            out.points += 1 + fields.count("=")

    def _head(self, record: Any, index: int, kind: str, max_ts: int,
              out: Converted) -> tuple[str, str | None, int] | None:
        """Check the fields every record has; return (device, room, ts) or None (problem recorded)."""
        if not isinstance(record, dict):
            return self._skip(out, index, f"a record must be an object, got {_json_type(record)}")
        seq = record.get("seq")
        if type(seq) is not int or seq < 0:
            return self._skip(out, index, f"'seq' must be a non-negative integer, got {_short(seq)}")
        if out.max_seq is None or seq > out.max_seq:
            out.max_seq = seq
        if out.min_seq is None or seq < out.min_seq:
            out.min_seq = seq
        record_kind = record.get("kind")
        if record_kind != kind:
            return self._skip(out, index, f"'kind' must be {kind!r} on a {kind} topic, got {_short(record_kind)}")
        ts = record.get("ts")
        if type(ts) is not int or not 0 < ts < MAX_TS_MS:
            return self._skip(out, index, f"'ts' must be a positive integer (ms since the epoch), got {_short(ts)}")
        if ts > max_ts:
            return self._skip(out, index, f"'ts' {ts} is more than {self.max_future_ms // 1000} s in the future")
        device = record.get("device")
        if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
            return self._skip(out, index, f"'device' must match {DEVICE_RE.pattern}, got {_short(device)}")
        room = record.get("room")
        if room is not None:
            if not isinstance(room, str) or len(room) > MAX_ROOM or CONTROL_RE.search(room):
                return self._skip(out, index, f"'room' must be a string of at most {MAX_ROOM} printable "
                                              f"characters, got {_short(room)}")
            room = room or None
        synced = record.get("synced")
        if synced is not True:
            if synced is not None and synced is not False:
                return self._skip(out, index, f"'synced' must be true or false, got {_short(synced)}")
            out.unsynced += 1
        return device, room, ts

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _skip(out: Converted, index: int, reason: str) -> None:
        out.invalid_records += 1
        out.problems.append(Problem(index, reason))
        return None

    def _prefix(self, measurement: str, topic: Topic, device: str, room: str | None, event_type: str | None) -> str:
        cache_key = (measurement, topic.school, topic.gateway, device, room, event_type)
        prefix = self._prefixes.get(cache_key)
        if prefix is None:
            if len(self._prefixes) >= self.CACHE_MAX:
                self._prefixes.clear()
            # ids, device and type match restrictive patterns: only the room can need escaping
            prefix = f"{measurement},school={topic.school},gateway={topic.gateway},device={device}"
            if room is not None:
                prefix += f",room={escape_tag(room)}"
            if event_type is not None:
                prefix += f",type={event_type}"
            self._prefixes[cache_key] = prefix
        return prefix

    def _field_key(self, name: Any) -> str | None:
        if len(self._keys) >= self.CACHE_MAX:
            self._keys.clear()
        if not isinstance(name, str) or not VALUE_NAME_RE.fullmatch(name):
            return None
        return escape_tag(name) + "="


EVENT_TAG_KEYS = EVENT_LABEL_KEYS
"""Event data keys stored as labels (the contract's): few values each, never personal (a pseudonym is never one)."""
EVENT_TAG_VALUE_RE = re.compile(LABEL_VALUE_PATTERN)
"""What a label value is made of: after :func:`encode_label`, 1 to 40 of these characters."""
_OUTSIDE_LABEL_RE = re.compile(f"[^{LABEL_CHARS}]")
EVENT_FIELD_SKIP = frozenset({"seq", "ts", "boarded_at"})


def encode_label(value: str) -> str:
    """A label value in the label alphabet: every character outside ``[A-Za-z0-9_.:-]`` becomes ``_``
    (``no allow-list`` -> ``no_allow-list``), one for one, so a value that fits stays as it is."""
    return _OUTSIDE_LABEL_RE.sub("_", value)


def _event_tags_and_fields(data: dict[str, Any]) -> tuple[str, str, list[tuple[str, str]]]:
    """Line-protocol tag and field suffixes for an event's data: whitelisted labels (encoded), numeric values as
    fields; and the labels dropped, as (key, why)."""
    tags = ""
    dropped: list[tuple[str, str]] = []
    for key in EVENT_TAG_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif key == "late" and type(value) in (int, float):
            continue  # minutes late (an attendance summary's count): a field, below
        if not isinstance(value, str):
            dropped.append((key, f"label dropped: {_json_type(value)}, not a string or boolean"))
        elif not value:
            dropped.append((key, "label dropped: an empty string"))
        elif len(value) > MAX_LABEL_CHARS:
            dropped.append((key, f"label dropped: longer than {MAX_LABEL_CHARS} characters ({len(value)})"))
        else:
            tags += f",{key}={encode_label(value)}"
    fields = ""
    for key, value in data.items():
        if (type(value) in (int, float) and key not in EVENT_FIELD_SKIP and key not in EVENT_TAG_KEYS
                and key != "count" and VALUE_NAME_RE.fullmatch(key) and math.isfinite(value)):
            fields += f",{key}={float(value)!r}"
    if isinstance(data.get("late"), int) and not isinstance(data.get("late"), bool):
        fields += f",late={float(data['late'])!r}"
    return tags, fields, dropped


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 40) -> str:
    text = "nothing" if value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
