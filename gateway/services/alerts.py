"""Alerts: threshold rules on the readings, raised and cleared as events on the uplink, without storms.

A rule watches one value (``temperature``, ``co2``...) of the devices it selects (one ``device``, every device
of a ``room``, every device of a ``driver``; none: every device) for one condition:

- ``above`` / ``below`` a limit, or outside the band ``[below, above]`` when both are given;
- ``rate_per_min``: the value changes faster than this (either way) between two readings;
- ``no_data_min``: no reading (of ``value``, or of anything when no value is named) for this many minutes.

Two things keep a value hovering at a limit from raising a storm: **hysteresis** (an alert raised above 8.0
with ``hysteresis: 0.5`` clears only at 7.5 or below) and a **minimum duration** (``for_s``: the condition
must hold on every reading for that long before the alert is raised). ``severity`` is info, warning or
critical; during a rule's **quiet hours** (the section's for every rule but critical ones, or the rule's own)
no new alert is raised by it (one already raised still clears).

Each change is one ``alert`` event from the device concerned, ``data``: ``state`` (raised, cleared,
acknowledged), ``rule``, ``severity``, ``condition``, ``name`` (the value), ``value`` and ``limit``,
``active`` (1 while raised, 0 once cleared), ``description``; central's fleet view lists the alerts whose last
event says ``active`` 1. A teacher acknowledges an alert on the status page (logged, and an event with
``by``); it stays listed until its value is back.

Rules come from three places, merged by ``id`` (later wins, ``enabled: false`` switches one off): the
``alerts.rules`` of the gateway config, the ``alerts.rules_file`` (re-read within ``check_interval_s`` of a
change, so rules change without a restart; a bad file is reported with its line and the rules in force
stay), and the signed command ``alerts.rules.set`` (versioned, kept on disk). Raised alerts and pushed
rules survive a restart (``state_file``), and so do alert events not yet in the outbox (a power cut or
``kill -9`` between raising and sending): they are sent after the restart with their own timestamps (one
that was in the outbox already may then be sent twice, same timestamp; never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edugate.common.yamlconfig import ConfigError, parse_mapping, validate
from edugate.contract.records import VALUE_NAME_PATTERN, Emit, Event, Rejected
from edugate.drivers.base import ID_PATTERN, CommandError, DeviceConfig
from edugate.gateway.services.base import Command, Section, Select, Service, ServiceSetup

log = logging.getLogger(__name__)

RULE_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,39}$"  # a label in the store: short, few values, no spaces
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
RECENT = 30  # alert events kept for the status page
MAX_QUEUED = 10_000  # alert events waiting for the outbox at most (a stalled disk): the oldest are dropped, counted


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuietHours(_Strict):
    start: dt.time = Field(description="Local time the quiet hours begin, e.g. '18:00'.")
    end: dt.time = Field(description="Local time they end, e.g. '06:30' (the next morning when before start).")

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours: start and end are the same time")
        return self

    def covers(self, when: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= when < self.end
        return when >= self.start or when < self.end  # over midnight


class AlertRule(_Strict):
    id: str = Field(pattern=RULE_ID_PATTERN, description="Short name of the rule, e.g. 'fridge-too-warm'.")
    description: str | None = Field(None, max_length=200, description="What it means, for the teacher.")
    enabled: bool = Field(True, description="false: the rule is off (e.g. to switch off a config rule by command).")
    device: str | None = Field(None, pattern=ID_PATTERN, description="Only this device.")
    room: str | None = Field(None, max_length=64, description="Every device of this room.")
    driver: str | None = Field(None, max_length=64, description="Every device of this driver (device type).")
    value: str | None = Field(None, pattern=VALUE_NAME_PATTERN, description="The value watched, e.g. 'co2'.")
    above: float | None = Field(None, description="Raised when the value is above this.")
    below: float | None = Field(None, description="Raised when the value is below this (both: outside the band).")
    rate_per_min: float | None = Field(None, gt=0, description="Raised when the value changes faster than this "
                                       "per minute, up or down.")
    no_data_min: float | None = Field(None, gt=0, le=7 * 24 * 60, description="Raised when no reading came for "
                                      "this many minutes.")
    hysteresis: float = Field(0.0, ge=0, description="A raised alert clears only this far back inside the limit.")
    for_s: float = Field(0.0, ge=0, le=86_400, description="The condition must hold this long before raising.")
    severity: Severity = "warning"
    quiet_hours: QuietHours | Literal["none"] | None = Field(
        None, description="No new alert from this rule in these hours (default: the section's quiet_hours, except "
        "for critical rules); 'none': this rule has no quiet hours.")

    @model_validator(mode="after")
    def _one_condition(self) -> AlertRule:
        if not self.enabled:  # switching a rule off (by id) needs no condition
            return self
        kinds = [k for k, given in (("above/below", self.above is not None or self.below is not None),
                                    ("rate_per_min", self.rate_per_min is not None),
                                    ("no_data_min", self.no_data_min is not None)) if given]
        if len(kinds) != 1:
            raise ValueError(f"rule {self.id}: give exactly one condition: above and/or below, rate_per_min or "
                             f"no_data_min (got {' and '.join(kinds) or 'none'})")
        if self.no_data_min is None and self.value is None:
            raise ValueError(f"rule {self.id}: 'value' names the value to watch (e.g. value: temperature)")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError(f"rule {self.id}: below ({self.below:g}) must be less than above ({self.above:g})")
        if self.above is not None and self.below is not None and 2 * self.hysteresis >= self.above - self.below:
            raise ValueError(f"rule {self.id}: hysteresis {self.hysteresis:g} is too wide for the band "
                             f"{self.below:g}..{self.above:g}")
        for name in ("above", "below", "rate_per_min"):
            number = getattr(self, name)
            if number is not None and not math.isfinite(number):
                raise ValueError(f"rule {self.id}: {name} must be a finite number")
        return self

    @property
    def condition(self) -> str:
        if self.no_data_min is not None:
            return "no_data"
        if self.rate_per_min is not None:
            return "rate"
        if self.above is not None and self.below is not None:
            return "outside"
        return "above" if self.above is not None else "below"

    def selects(self, device: str, room: str | None, driver: str | None) -> bool:
        return ((self.device is None or self.device == device) and (self.room is None or self.room == room)
                and (self.driver is None or self.driver == driver))

    def limit_text(self) -> str:
        unit = f" {self.value}" if self.value else ""
        if self.no_data_min is not None:
            return f"no {self.value or 'reading'} for {self.no_data_min:g} min"
        if self.rate_per_min is not None:
            return f"{self.value} changing faster than {self.rate_per_min:g}/min"
        if self.above is not None and self.below is not None:
            return f"{self.value} outside {self.below:g}..{self.above:g}"
        if self.above is not None:
            return f"{self.value} above {self.above:g}" if unit else f"above {self.above:g}"
        return f"{self.value} below {self.below:g}"


def _unique_ids(rules: list[AlertRule]) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise ValueError(f"rule id {rule.id!r} is used twice")
        seen.add(rule.id)


class RulesFile(_Strict):
    rules: list[AlertRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RulesFile:
        _unique_ids(self.rules)
        return self


class AlertsConfig(_Strict):  # the ``alerts:`` section (a docstring would enter the schema)
    rules: list[AlertRule] = Field(default_factory=list, description="Threshold rules (see docs/labs.md).")
    rules_file: Path | None = Field(None, description="A YAML file with more rules ('rules: [...]'), re-read when "
                                    "it changes: rules change without a restart. Use an absolute path.")
    quiet_hours: QuietHours | None = Field(None, description="No new alert in these hours, except from critical "
                                           "rules and rules with quiet hours of their own.")
    check_interval_s: float = Field(5.0, gt=0, le=300, description="How often the rules file and the "
                                    "no-data rules are checked.")
    state_file: Path | None = Field(None, description="Raised alerts and rules pushed by command, kept across "
                                    "restarts (default: alerts.json next to the outbox).")

    @model_validator(mode="after")
    def _unique(self) -> AlertsConfig:
        _unique_ids(self.rules)
        return self


class PushedRules(_Strict):
    """The args of ``alerts.rules.set``: rules that override (by id) those of the config and the rules file."""

    version: int = Field(ge=1, description="Increases with every push; older pushes are refused.")
    rules: list[AlertRule] = Field(default_factory=list, description="[] removes every pushed rule.")

    @model_validator(mode="after")
    def _unique(self) -> PushedRules:
        _unique_ids(self.rules)
        return self


class AckArgs(_Strict):
    rule: str = Field(pattern=RULE_ID_PATTERN)
    device: str = Field(pattern=ID_PATTERN)
    by: str = Field("central", min_length=1, max_length=64, description="Who acknowledged it.")


class RulesRejected(CommandError):
    """A push of rules older than those in force (the command's answer: failed, with this message)."""


class NoSuchAlert(CommandError):
    """An acknowledgement for an alert that is not raised (cleared meanwhile, or a wrong name)."""


@dataclass
class Alert:
    """One raised alert: a rule that fired for one device."""

    rule: str
    device: str
    room: str | None
    severity: str
    condition: str
    name: str | None  # the value watched
    value: float | None  # what was read when it was raised (the rate, for a rate rule)
    limit: float | None
    raised_at: int  # ms
    description: str = ""
    acked_by: str | None = None
    acked_at: int | None = None
    last_value: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.device)


@dataclass
class _Track:
    pending_since: int | None = None  # ms: the condition holds since (not raised yet)


class AlertsStatus(TypedDict):
    """What the status page's alerts panel draws (``gateway/web/alerts_panel.py``)."""

    active: list[dict[str, Any]]
    recent: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    raised: int
    cleared: int
    acknowledged: int
    rules_version: int
    rules_file: str | None
    rules_error: str | None
    reloads: int
    reload_errors: int
    dropped_events: int


class AlertsService(Service):
    name = "alerts"
    order = 30  # after access and attendance decided, before the bookkeeping services
    section = Section("alerts", AlertsConfig, "Threshold alerts on the readings (fridge, CO2, fume hood...).")
    observes = (Select(kinds=frozenset({"telemetry"})),)

    @classmethod
    def from_config(cls, setup: ServiceSetup) -> AlertsService | None:
        """On a gateway with an ``alerts:`` section."""
        section = setup.section
        if not isinstance(section, AlertsConfig):
            return None
        devices = {d.id: (d.room, d.driver) for d in setup.devices}
        return cls(section, devices, setup.timezone, section.state_file or setup.data_dir / "alerts.json")

    @classmethod
    def config_warnings(cls, section: BaseModel | None,
                        devices: Sequence[DeviceConfig]) -> list[tuple[tuple[str | int, ...], str]]:
        """A rule that selects no enabled device (a typo in ``device``, ``room`` or ``driver``), and a rules file
        that cannot be read or has mistakes (the gateway would keep the other rules and say so in its log)."""
        if not isinstance(section, AlertsConfig):
            return []
        enabled = [d for d in devices if d.enabled]
        found: list[tuple[tuple[str | int, ...], str]] = [
            (("alerts", "rules", i, *where), message)
            for i, rule in enumerate(section.rules) for where, message in _selects_nothing(rule, enabled)]
        path = section.rules_file
        if path is not None:
            try:
                rules = parse_rules(path.read_text(), str(path))
            except FileNotFoundError:
                found.append((("alerts", "rules_file"), f"{path} does not exist yet: no rules from it until it does"))
            except (OSError, UnicodeDecodeError) as exc:
                found.append((("alerts", "rules_file"), f"{path} cannot be read: {exc}"))
            except ConfigError as exc:
                found += [(("alerts", "rules_file"), f"{problem}") for problem in exc.problems]
            else:
                found += [(("alerts", "rules_file"), f"{path}: {message}")
                          for rule in rules for _, message in _selects_nothing(rule, enabled)]
        return found

    def __init__(self, config: AlertsConfig, devices: dict[str, tuple[str | None, str | None]], tz: str,
                 state_file: Path | None = None, now: float | None = None) -> None:
        """``devices``: device id -> (room, driver); ``now``: the service's start (Unix s) for no-data rules."""
        self.config = config
        self.devices = devices
        self.tz = ZoneInfo(tz)
        self.state_file = state_file
        self.file_rules: list[AlertRule] = []
        self.pushed: PushedRules | None = None
        self.rules_error: str | None = None
        self.reloads = 0
        self.reload_errors = 0
        self._file_stamp: tuple[float, int] | None = None
        self.active: dict[tuple[str, str], Alert] = {}
        self.tracks: dict[tuple[str, str], _Track] = {}
        self.previous: dict[tuple[str, str], tuple[int, float]] = {}  # (device, value) -> (ts ms, value)
        started = time.time() if now is None else now
        self.last_seen: dict[tuple[str, str], float] = {}  # (device, value or "*") -> Unix s of the last reading
        self._started = started
        self.counts = {"raised": 0, "cleared": 0, "acknowledged": 0}
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.dropped_events = 0
        self._queue: deque[Event] = deque()
        self._wakeup: asyncio.Event | None = None
        self._load_state()
        if config.rules_file is not None:
            self._read_rules_file(initial=True)
        self.rules: list[AlertRule] = []
        self._by_device: dict[str, list[AlertRule]] = {}
        self._apply_rules(started, reason="start")

    # ------------------------------------------------------------------ rules

    def merged_rules(self) -> list[tuple[AlertRule, str]]:
        """The rules in force and where each comes from (config < rules file < pushed), enabled ones only."""
        merged: dict[str, tuple[AlertRule, str]] = {}
        sources = [("config", self.config.rules), ("file", self.file_rules),
                   ("command", self.pushed.rules if self.pushed else [])]
        for source, rules in sources:
            for rule in rules:
                merged[rule.id] = (rule, source)
        return [(rule, source) for rule, source in merged.values() if rule.enabled]

    def _apply_rules(self, now: float, reason: str) -> None:
        merged = self.merged_rules()
        self.sources = {rule.id: source for rule, source in merged}
        old = {rule.id: rule for rule in getattr(self, "rules", [])}
        self.rules = [rule for rule, _ in merged]
        self._by_device = {device: [r for r in self.rules if r.selects(device, room, driver)]
                           for device, (room, driver) in self.devices.items()}
        for rule in self.rules:
            if not any(rule in rules for rules in self._by_device.values()):
                log.warning("alerts: rule %s selects no device of this gateway", rule.id)
        current = {rule.id: rule for rule in self.rules}
        for key in list(self.tracks):  # a changed rule starts counting its minimum duration again
            if old.get(key[0]) != current.get(key[0]):
                del self.tracks[key]
        for alert in list(self.active.values()):  # an alert whose rule is gone or no longer selects its device
            rule = current.get(alert.rule)  # clears now
            if rule is None or rule not in self._by_device.get(alert.device, []):
                self._clear(alert, int(now * 1000), None, why="rule removed" if rule is None else "rule changed")
        for rule in self.rules:  # no-data rules count from the start (or from when they appear)
            if rule.no_data_min is not None:
                for device, rules in self._by_device.items():
                    if rule in rules:
                        self.last_seen.setdefault((device, rule.value or "*"), now)
        if reason != "start":
            log.info("alerts: %d rule(s) in force after %s", len(self.rules), reason)

    def _read_rules_file(self, initial: bool = False) -> bool:
        """Re-read the rules file if it changed; True if the rules changed."""
        path = self.config.rules_file
        assert path is not None
        try:
            st = path.stat()
            stamp = (st.st_mtime, st.st_size)
        except OSError as exc:
            stamp = None
            problem = f"{path}: cannot be read: {exc.strerror or exc}"
        if stamp is not None and stamp == self._file_stamp:
            return False
        if stamp is not None:
            self._file_stamp = stamp
            try:
                rules = parse_rules(path.read_text(), str(path))
            except (ConfigError, OSError, UnicodeDecodeError) as exc:
                problem = str(exc)
            else:
                changed = rules != self.file_rules
                self.file_rules, self.rules_error = rules, None
                if not initial:
                    self.reloads += 1
                    log.info("alerts: rules file %s read: %d rule(s)", path, len(rules))
                return changed
        if problem != self.rules_error:  # report each new problem once, not every check
            self.reload_errors += 1
            log.error("alerts: %s; the rules in force stay", problem)
        self.rules_error = problem
        return False

    def replace_pushed(self, pushed: PushedRules) -> dict[str, Any]:
        """Rules pushed by the signed command ``alerts.rules.set`` (a newer version only)."""
        current = self.pushed.version if self.pushed else 0
        if pushed.version <= current:
            raise RulesRejected(f"alert rules version {pushed.version} is not newer than {current}")
        self.pushed = pushed
        self._apply_rules(time.time(), reason=f"rules version {pushed.version} pushed by command")
        self._save_state()
        return {"version": pushed.version, "pushed": len(pushed.rules), "in_force": len(self.rules)}

    # ------------------------------------------------------------------ readings

    def stage(self, record: dict[str, Any]) -> dict[str, Any] | None:
        device = record.get("device")
        values = record.get("values")
        if not isinstance(device, str) or not isinstance(values, dict):
            return record
        rules = self._by_device.get(device)
        if not rules:
            return record
        ts: int = record["ts"]
        now_s = ts / 1000
        for rule in rules:
            try:
                self._evaluate(rule, device, record.get("room"), values, ts)
            except Exception:  # a bug in one rule must not fail the reading
                log.exception("alerts: rule %s failed on a reading of %s", rule.id, device)
        for name, value in values.items():
            number = _number(value)
            if number is not None:
                self.previous[(device, name)] = (ts, number)
            self.last_seen[(device, name)] = now_s
        self.last_seen[(device, "*")] = now_s
        return record

    def _evaluate(self, rule: AlertRule, device: str, room: str | None, values: dict[str, Any], ts: int) -> None:
        key = (rule.id, device)
        alert = self.active.get(key)
        if rule.no_data_min is not None:
            if alert is not None and (rule.value is None or rule.value in values):
                value = _number(values.get(rule.value)) if rule.value else None
                self._clear(alert, ts, value, why="data again")
            return
        assert rule.value is not None
        x = _number(values.get(rule.value))
        if x is None:
            return
        limit: float | None
        if rule.rate_per_min is not None:
            prev = self.previous.get((device, rule.value))
            if prev is None or ts <= prev[0]:
                return
            measure = abs(x - prev[1]) / ((ts - prev[0]) / 60_000)
            limit = rule.rate_per_min
            bad = measure > limit
            good = measure <= limit - rule.hysteresis
        else:
            measure = x
            high = rule.above is not None and x > rule.above
            low = rule.below is not None and x < rule.below
            bad = high or low
            limit = rule.above if high else rule.below if low else None
            good = ((rule.above is None or x <= rule.above - rule.hysteresis)
                    and (rule.below is None or x >= rule.below + rule.hysteresis))
        if alert is not None:
            alert.last_value = measure
            if good:
                self._clear(alert, ts, measure, why="back within the limit")
            return
        track = self.tracks.setdefault(key, _Track())
        if not bad or self.quiet(rule, ts / 1000):
            track.pending_since = None
            return
        if track.pending_since is None:
            track.pending_since = ts
        if ts - track.pending_since >= rule.for_s * 1000:
            track.pending_since = None
            self._raise(rule, device, room, measure, limit, ts)

    def quiet(self, rule: AlertRule, when_s: float) -> bool:
        hours = rule.quiet_hours
        if hours == "none":
            return False
        if hours is None and rule.severity != "critical":
            hours = self.config.quiet_hours
        return isinstance(hours, QuietHours) and hours.covers(dt.datetime.fromtimestamp(when_s, self.tz).time())

    def check_no_data(self, now: float) -> int:
        """Raise the no-data alerts that are due at ``now`` (Unix s); return how many were raised."""
        raised = 0
        for device, rules in self._by_device.items():
            for rule in rules:
                if rule.no_data_min is None or (rule.id, device) in self.active:
                    continue
                seen = self.last_seen.get((device, rule.value or "*"), self._started)
                silent_min = (now - seen) / 60
                if silent_min >= rule.no_data_min and not self.quiet(rule, now):
                    self._raise(rule, device, self.devices.get(device, (None, None))[0], round(silent_min, 1),
                                rule.no_data_min, int(now * 1000))
                    raised += 1
        return raised

    # ------------------------------------------------------------------ raising, clearing, acknowledging

    def _raise(self, rule: AlertRule, device: str, room: str | None, value: float | None, limit: float | None,
               ts: int) -> None:
        alert = Alert(rule=rule.id, device=device, room=room, severity=rule.severity, condition=rule.condition,
                      name=rule.value, value=_rounded(value), limit=limit, raised_at=ts,
                      description=rule.description or rule.limit_text(), last_value=_rounded(value))
        self.active[alert.key] = alert
        self.counts["raised"] += 1
        what = {"rate": f"{rule.value} changing by {_text(value)}/min", "no_data": f"silent for {_text(value)} min"}
        log.warning("alert raised: %s at %s (%s, %s): %s", rule.id, device, rule.severity, rule.limit_text(),
                    what.get(rule.condition, f"{rule.value} = {_text(value)}"))
        self._event(alert, "raised", ts, value)
        self._save_state()

    def _clear(self, alert: Alert, ts: int, value: float | None, why: str) -> None:
        self.active.pop(alert.key, None)
        self.tracks.pop(alert.key, None)
        self.counts["cleared"] += 1
        log.info("alert cleared: %s at %s (%s): %s = %s", alert.rule, alert.device, why, alert.name or "value",
                 _text(value))
        self._event(alert, "cleared", ts, value, cause=why.replace(" ", "_"),
                    duration_s=round(max(0, ts - alert.raised_at) / 1000, 1))
        self._save_state()

    def acknowledge(self, rule: str, device: str, by: str) -> dict[str, Any]:
        """A teacher (page) or central (command) saw the alert; it stays raised until its value is back."""
        alert = self.active.get((rule, device))
        if alert is None:
            raise NoSuchAlert(f"no raised alert {rule} at {device} (cleared already?)")
        if alert.acked_by is not None:
            return {"rule": rule, "device": device, "acknowledged_by": alert.acked_by, "already": True}
        ts = int(time.time() * 1000)
        alert.acked_by, alert.acked_at = by, ts
        self.counts["acknowledged"] += 1
        log.info("alert acknowledged: %s at %s by %s", rule, device, by)
        self._event(alert, "acknowledged", ts, alert.last_value, by=by)
        self._save_state()
        return {"rule": rule, "device": device, "acknowledged_by": by, "already": False}

    def _event(self, alert: Alert, state: str, ts: int, value: float | None, **extra: Any) -> None:
        data: dict[str, Any] = {"state": state, "rule": alert.rule, "severity": alert.severity,
                                "condition": alert.condition, "active": 0 if state == "cleared" else 1,
                                "description": alert.description[:200]}
        if alert.name:
            data["name"] = alert.name
        if value is not None and math.isfinite(value):
            data["value"] = _rounded(value)
        if alert.limit is not None:
            data["limit"] = alert.limit
        data.update(extra)
        self.recent.appendleft({"ts": ts, "device": alert.device, "room": alert.room, **data})
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self.dropped_events += 1
        self._queue.append(Event(alert.device, "alert", data, ts=ts / 1000))
        if self._wakeup is not None:
            self._wakeup.set()

    # ------------------------------------------------------------------ background work

    async def run(self, emit: Emit) -> None:
        self._wakeup = asyncio.Event()
        interval = self.config.check_interval_s
        next_check = time.monotonic()
        while True:
            emitted = bool(self._queue)
            while self._queue:
                event = self._queue[0]
                try:
                    await emit(event)  # durable in the outbox before it leaves the queue
                except Rejected as exc:  # a bug: it would block every later alert; counted, logged, dropped
                    self.dropped_events += 1
                    log.error("alerts: event refused by the pipeline (%s): dropped", exc)
                self._queue.popleft()
            if emitted:
                self._save_state()  # the events are in the outbox now: no longer pending in the state file
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + interval
                self.check()
                continue
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that meets the wake-up
            # (gh-86296), and stopping the gateway would then wait for ever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_check - time.monotonic())):
                    await self._wakeup.wait()

    def check(self, now: float | None = None) -> None:
        """The periodic work: re-read a changed rules file, raise the no-data alerts that are due."""
        now = time.time() if now is None else now
        if self.config.rules_file is not None and self._read_rules_file():
            self._apply_rules(now, reason=f"a change of {self.config.rules_file}")
        self.check_no_data(now)

    def pending_events(self) -> list[Event]:
        """The alert events not handed to the outbox yet (tests that drive :meth:`stage` directly)."""
        return list(self._queue)

    def take_events(self) -> list[Event]:
        """Hand the pending alert events to the caller (tests that drive :meth:`stage` directly): no longer
        pending, on disk too."""
        events = list(self._queue)
        self._queue.clear()
        if events:
            self._save_state()
        return events

    # ------------------------------------------------------------------ the downlink and the pages

    def commands(self) -> dict[str, Command]:
        async def set_rules(args: PushedRules) -> dict[str, Any]:
            return self.replace_pushed(args)

        async def ack(args: AckArgs) -> dict[str, Any]:
            return self.acknowledge(args.rule, args.device, args.by)

        return {"alerts.rules.set": Command(PushedRules, set_rules), "alerts.ack": Command(AckArgs, ack)}

    def status(self) -> AlertsStatus:
        order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        active = sorted(self.active.values(), key=lambda a: (order.get(a.severity, 9), -a.raised_at))
        return {
            "active": [asdict(a) for a in active],
            "recent": list(self.recent),
            "rules": [{"id": r.id, "severity": r.severity, "condition": r.condition, "limit": r.limit_text(),
                       "source": self.sources.get(r.id, "?"), "for_s": r.for_s, "hysteresis": r.hysteresis,
                       "devices": sorted(d for d, rules in self._by_device.items() if r in rules),
                       "description": r.description or ""} for r in self.rules],
            "raised": self.counts["raised"], "cleared": self.counts["cleared"],
            "acknowledged": self.counts["acknowledged"],
            "rules_version": self.pushed.version if self.pushed else 0,
            "rules_file": str(self.config.rules_file) if self.config.rules_file else None,
            "rules_error": self.rules_error, "reloads": self.reloads, "reload_errors": self.reload_errors,
            "dropped_events": self.dropped_events,
        }

    def state_files(self) -> list[Path]:
        return [self.state_file] if self.state_file is not None else []

    # ------------------------------------------------------------------ state on disk

    def _load_state(self) -> None:
        if self.state_file is None:
            return
        try:
            doc = json.loads(self.state_file.read_text())
            pushed = PushedRules.model_validate(doc["pushed"]) if doc.get("pushed") else None
            active = [Alert(**a) for a in doc.get("active", [])]
            pending = [Event(e["device"], "alert", dict(e["data"]), e["ts"]) for e in doc.get("pending", [])]
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError) as exc:
            log.error("alerts: state %s unreadable (%s): starting with no raised alert and no pushed rules",
                      self.state_file, str(exc).splitlines()[0])
            return
        self.pushed = pushed
        self.active = {a.key: a for a in active if a.device in self.devices}
        if self.active:
            log.info("alerts: %d alert(s) still raised from before the restart", len(self.active))
        if pending:  # raised or cleared just before a crash, not yet in the outbox: sent now (same timestamps)
            self._queue.extend(pending)
            log.info("alerts: %d alert event(s) from before the restart not sent yet: sending them", len(pending))

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        doc = {"pushed": self.pushed.model_dump(mode="json") if self.pushed else None,
               "active": [asdict(a) for a in self.active.values()],
               "pending": [{"device": e.device, "data": dict(e.data), "ts": e.ts} for e in self._queue]}
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            with tmp.open("w") as fh:
                json.dump(doc, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_file)
        except OSError as exc:  # the events themselves are in the outbox; only a restart would forget
            log.error("alerts: state %s cannot be written: %s", self.state_file, exc)


def parse_rules(text: str, filename: str) -> list[AlertRule]:
    """A rules file (``rules: [...]``); :class:`ConfigError` with ``file:line: path: message`` per problem."""
    root, data, problems = parse_mapping(text, filename)
    return validate(RulesFile, data, root, filename, problems).rules


def _selects_nothing(rule: AlertRule, devices: Sequence[DeviceConfig]) -> list[tuple[tuple[str, ...], str]]:
    """[(where, message)] if an enabled ``rule`` selects none of ``devices``, naming the key at fault if one is."""
    if not rule.enabled or any(rule.selects(d.id, d.room, d.driver) for d in devices):
        return []
    known_of = {"device": sorted(d.id for d in devices), "room": sorted({d.room for d in devices if d.room}),
                "driver": sorted({d.driver for d in devices})}
    key = next((k for k in ("device", "room", "driver")  # the key whose value no device has, if one
                if getattr(rule, k) is not None and getattr(rule, k) not in known_of[k]), None)
    known = known_of[key] if key else []
    hint = f" (the config's {key}s: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''})" if known else ""
    return [((key,) if key else (), f"rule {rule.id} selects no enabled device of this gateway, so it never raises"
             f"{hint}")]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _text(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
