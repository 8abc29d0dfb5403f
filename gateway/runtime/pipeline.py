"""The one path every item takes: validate -> enrich -> privacy -> models -> rules -> outbox.

Stages are plain callables on the record being built; the privacy, model and
rule stages are hook lists that later capabilities fill. ``submit`` returns
once the record is durable, so a driver may acknowledge its device (beep, LED)
only after it returns.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edugate.contract.records import Event, Item, Kind, Reading, Rejected
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox

log = logging.getLogger(__name__)

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TYPE_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
MAX_STR = 256
MAX_VALUES = 256

GATEWAY_DEVICE = "_gateway"
"""Device name of the gateway's own health records (device ids cannot start with '_')."""

Stage = Callable[[dict[str, Any]], dict[str, Any] | None]
"""A hook stage takes the record being built and returns it (possibly changed), or None to drop it."""


@dataclass
class PipelineStats:
    accepted: int = 0
    rejected: int = 0
    dropped_by_stage: int = 0
    last_rejection: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"pipeline_accepted": self.accepted, "pipeline_rejected": self.rejected,
                "pipeline_dropped": self.dropped_by_stage}


@dataclass
class Pipeline:
    outbox: Outbox
    clock: Clock
    rooms: Mapping[str, str | None]  # device id -> room
    privacy: list[Stage] = field(default_factory=list)
    models: list[Stage] = field(default_factory=list)
    rules: list[Stage] = field(default_factory=list)
    stats: PipelineStats = field(default_factory=PipelineStats)
    observers: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    """Called with every committed record, on the event loop (the web pages' live data); must not block."""

    async def submit(self, item: Item) -> dict[str, Any] | None:
        """Run ``item`` through every stage and commit it; return the committed record (None if dropped)."""
        try:
            kind, record = self._validate_and_enrich(item)
        except Rejected as exc:
            self.stats.rejected += 1
            self.stats.last_rejection = str(exc)
            raise
        for stage in (*self.privacy, *self.models, *self.rules):
            record = stage(record)  # type: ignore[assignment]  # None drops the record: checked just below
            if record is None:
                self.stats.dropped_by_stage += 1
                return None
        await self.outbox.put(kind, record)  # sets record["seq"]
        self.stats.accepted += 1
        for observer in self.observers:
            try:
                observer(record)
            except Exception:  # an observer's bug must not fail a record that is already durable
                log.exception("record observer %r failed", observer)
        return record

    def _validate_and_enrich(self, item: Item) -> tuple[Kind, dict[str, Any]]:
        device = item.device
        if device not in self.rooms and device != GATEWAY_DEVICE:
            raise Rejected(f"{device!r}: not a configured device")
        ts = _timestamp_ms(item.ts, device) if item.ts is not None else self.clock.now_ms()
        record: dict[str, Any]
        if isinstance(item, Reading):
            kind = Kind.TELEMETRY
            record = {"kind": kind.value, "device": device, "ts": ts, "synced": self.clock.synced(),
                      "values": _checked_values(item.values, device)}
        elif isinstance(item, Event):
            kind = Kind.EVENT
            if not TYPE_RE.match(item.type):
                raise Rejected(f"{device!r}: event type {item.type!r} must match {TYPE_RE.pattern}")
            if not isinstance(item.data, Mapping):
                raise Rejected(f"{device!r}: event data must be a mapping, not {type(item.data).__name__}")
            record = {"kind": kind.value, "device": device, "ts": ts, "synced": self.clock.synced(),
                      "type": item.type, "data": dict(item.data)}
        else:
            raise Rejected(f"{device!r}: cannot submit a {type(item).__name__}")
        room = self.rooms.get(device)
        if room:
            record["room"] = room
        return kind, record


def _timestamp_ms(ts: float, device: str) -> int:
    if not math.isfinite(ts) or ts <= 0:
        raise Rejected(f"{device!r}: timestamp {ts!r} is not a positive Unix time")
    return int(ts * 1000)


def _checked_values(values: Mapping[str, Any], device: str) -> dict[str, Any]:
    if not values:
        raise Rejected(f"{device!r}: a reading needs at least one value")
    if len(values) > MAX_VALUES:
        raise Rejected(f"{device!r}: {len(values)} values in one reading (at most {MAX_VALUES})")
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise Rejected(f"{device!r}: value name {key!r} must match {KEY_RE.pattern}")
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                raise Rejected(f"{device!r}: {key} = {value!r} is not a finite number")
            out[key] = value
        elif isinstance(value, str):
            if len(value) > MAX_STR:
                raise Rejected(f"{device!r}: {key} is a string of {len(value)} characters (at most {MAX_STR})")
            out[key] = value
        else:
            raise Rejected(f"{device!r}: {key} has unsupported type {type(value).__name__}")
    return out
