"""Attendance from card taps: the timetable period of every tap, and a summary per room and period.

A tap at a reader with role ``attendance`` or ``lab`` (facing in, or both ways)
is annotated with the period it falls in (``period``, ``date``) and whether it
was late (``late``: later than ``late_after_min`` after the period's start).
Taps up to ``early_min`` before a period count for it. When a period ends, one
``attendance_summary`` event per room gives ``present`` (distinct cards) and
``late`` counts; rooms with a reader and nobody present report 0.

With ``checks:`` in the timetable, the attendance checks run too (``attendance_checks.py``): rooms whose head
count (a camera, or the occupancy model) is clearly above the cards tapped in a period
(``attendance.untapped_heads``), and a card tapped in two rooms too far apart too quickly
(``attendance.card_shared``).

The open tallies live in a small state file, written when a card is first
counted in a period, so a gateway restarted mid-period (power cut, update) still
sends that period's summary with the taps seen before the restart; a period that
ended while the gateway was down is summarised when it comes back, also when
that was on an earlier day. The file is written off the event loop
(``state_writer.StateWriter``: atomic rename, fsync, in a thread, coalesced: at
most one write under way and one pending), so a tap never waits for it (with
1,000 cards in a period, rewriting and fsyncing the file on the loop cost every
new card's tap milliseconds, ten or more on an SD card). It is flushed when the
service stops; a crash can lose the cards of the last write in flight from the
file (never from the outbox, which has every tap).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edugate.contract.records import Emit, Event
from edugate.drivers.base import DeviceConfig
from edugate.gateway.services.attendance_checks import AttendanceChecks, ChecksConfig, ChecksStatus
from edugate.gateway.services.base import Section, Select, Service, ServiceSetup, card_taps, card_taps_at
from edugate.gateway.services.state_writer import StateWriter

log = logging.getLogger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Period(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="e.g. 'P1' or 'morning-1'.")
    start: dt.time
    end: dt.time

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end <= self.start:
            raise ValueError(f"period {self.name}: end {self.end} must be after start {self.start}")
        return self


class TimetableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[str] = Field(["mon", "tue", "wed", "thu", "fri", "sat"], description="School days.")
    periods: list[Period] = Field(min_length=1)
    late_after_min: float = Field(5, ge=0, le=120, description="A tap later than this after the start is late.")
    early_min: float = Field(15, ge=0, le=120, description="Taps this long before a start count for it.")
    state_file: Path | None = Field(None, description="Open tallies, kept across restarts (default: "
                                    "attendance-tallies.json next to the outbox).")
    checks: ChecksConfig | None = Field(None, description="Attendance checks: heads above taps, shared cards "
                                        "(docs/models.md); none = off.")

    @model_validator(mode="after")
    def _check(self) -> TimetableConfig:
        bad = [d for d in self.days if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"unknown day(s) {bad}: use {', '.join(WEEKDAYS)}")
        names = [p.name for p in self.periods]
        if len(names) != len(set(names)):
            raise ValueError("period names must be unique")
        ordered = sorted(self.periods, key=lambda p: p.start)
        for a, b in itertools.pairwise(ordered):
            if b.start < a.end:
                raise ValueError(f"periods {a.name} and {b.name} overlap")
        return self


class AttendanceStatus(TypedDict, total=False):
    summaries: int
    open_tallies: int
    checks: ChecksStatus  # with ``checks:`` only
    models: dict[str, Any]  # the checks' classifiers (RunnerStatus), as the models service reports its own


@dataclass
class _Tally:
    cards: dict[str, bool]  # pseudonym -> late


class Attendance(Service):
    name = "attendance"
    order = 20
    section = Section("timetable", TimetableConfig, "Periods for attendance; none = no attendance.")
    observes: tuple[Select, ...] = (card_taps_at("attendance", "lab"),)

    @classmethod
    def from_config(cls, setup: ServiceSetup) -> Attendance | None:
        """On a gateway with a ``timetable:``; its readers are those with role attendance or lab."""
        timetable = setup.section
        if not isinstance(timetable, TimetableConfig):
            return None
        readers = setup.readers("attendance", "lab")
        rooms = {room or device for device, room in readers.items()}
        return cls(timetable, setup.timezone, readers,
                   state_file=timetable.state_file or setup.data_dir / "attendance-tallies.json",
                   head_devices={d.id: d.room for d in setup.devices if d.room in rooms and d.id not in readers})

    @classmethod
    def config_warnings(cls, section: BaseModel | None,
                        devices: Sequence[DeviceConfig]) -> list[tuple[tuple[str | int, ...], str]]:
        """An enabled ``attendance`` reader without a ``timetable:`` (taps only: no period, lateness, summary)."""
        if section is not None:
            return []
        return [(("devices", i, "role"),
                 f"attendance reader {dev.id!r} on a gateway without a 'timetable:': its taps are sent without "
                 "period or lateness and no attendance summaries are made (add a timetable, or give the reader "
                 "another role)")
                for i, dev in enumerate(devices) if dev.enabled and getattr(dev, "role", None) == "attendance"]

    def __init__(self, timetable: TimetableConfig, tz: str, readers: dict[str, str | None],
                 state_file: Path | None = None, head_devices: dict[str, str | None] | None = None) -> None:
        """``readers``: attendance reader device id -> room. ``state_file``: where open tallies are kept.
        ``head_devices``: other devices in the readers' rooms (their ``people`` readings count heads)."""
        self.timetable = timetable
        self.tz = ZoneInfo(tz)
        self.room_reader: dict[str, str] = {}
        for device, room in readers.items():
            self.room_reader.setdefault(room or device, device)
        self.rooms = {device: room or device for device, room in readers.items()}
        self.tallies: dict[tuple[str, str, str], _Tally] = {}  # (date, period, room)
        self._summarised: set[tuple[str, str]] = set()  # (date, period)
        self.summaries = 0
        self.state_file = state_file
        self.writer = StateWriter(state_file, self._document, "attendance state") if state_file else None
        self.checks: AttendanceChecks | None = None
        self._pairs: asyncio.Queue[tuple[str, str, tuple[str, str], list[float], float]] = asyncio.Queue(1000)
        if timetable.checks is not None:
            self.checks = AttendanceChecks(timetable.checks, self.tz, [(p.start, p.end) for p in timetable.periods],
                                          timetable.early_min)
            self.observes = (*self.observes, Select(kinds=frozenset({"event"}), event_types=frozenset({"occupancy"})),
                             Select(kinds=frozenset({"telemetry"}), devices=frozenset(head_devices or {})))
        self._load()

    # ------------------------------------------------------------------ state on disk

    def _load(self) -> None:
        if self.state_file is None:
            return
        try:
            data = json.loads(self.state_file.read_text())
            tallies = {(d, p, r): _Tally({str(c): bool(late) for c, late in cards.items()})
                       for d, p, r, cards in data["tallies"]}
        except FileNotFoundError:
            return
        except OSError as exc:  # e.g. a file where its folder should be, or no permission
            log.error("attendance state %s cannot be read (%s): open periods start with no taps", self.state_file,
                      exc)
            return
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("attendance state %s unreadable (%s): open periods start with no taps", self.state_file, exc)
            return
        self.tallies = tallies
        if tallies:
            log.info("attendance: %d cards in %d open tallies kept from before the restart",
                     sum(len(t.cards) for t in tallies.values()), len(tallies))

    def _document(self) -> dict[str, Any]:
        """The open tallies as the state file holds them (copies: the writer's thread serialises them)."""
        return {"tallies": [[d, p, r, dict(t.cards)] for (d, p, r), t in sorted(self.tallies.items())]}

    def _save(self) -> None:
        """Have the state file rewritten (off the event loop, coalesced; see the module's docstring)."""
        if self.writer is not None:
            self.writer.request()

    async def flush(self) -> None:
        """Wait until the state file holds the tallies as they are now."""
        if self.writer is not None:
            await self.writer.flush()

    # ------------------------------------------------------------------ taps and summaries

    def period_at(self, when: dt.datetime) -> tuple[Period, bool] | None:
        """The period a tap at local time ``when`` counts for, and whether it is late."""
        if WEEKDAYS[when.weekday()] not in self.timetable.days:
            return None
        early = dt.timedelta(minutes=self.timetable.early_min)
        for p in self.timetable.periods:
            start = dt.datetime.combine(when.date(), p.start, when.tzinfo)
            end = dt.datetime.combine(when.date(), p.end, when.tzinfo)
            if start - early <= when < end:
                late = when > start + dt.timedelta(minutes=self.timetable.late_after_min)
                return p, late
        return None

    def stage(self, record: dict[str, Any]) -> dict[str, Any] | None:
        data = card_taps(record, "attendance", "lab")
        if data is None and self.checks is not None:
            self._head_count(record)
        if data is None or data.get("direction") == "out" or record["device"] not in self.rooms:
            return record
        if self.checks is not None and isinstance(data.get("card"), str):
            pair = self.checks.tap(data["card"], self.rooms[record["device"]], record["ts"] / 1000)
            if pair is not None:
                try:
                    self._pairs.put_nowait((record["device"], data["card"], (pair[0], self.rooms[record["device"]]),
                                            pair[1], record["ts"] / 1000))
                except asyncio.QueueFull:
                    log.warning("attendance checks: 1000 tap pairs waiting; this one is not checked")
        when = dt.datetime.fromtimestamp(record["ts"] / 1000, self.tz)
        found = self.period_at(when)
        if found is None:
            data["period"] = None
            return record
        period, late = found
        date = when.date().isoformat()
        data.update(period=period.name, date=date, late=late)
        room = self.rooms[record["device"]]
        tally = self.tallies.setdefault((date, period.name, room), _Tally({}))
        if data["card"] not in tally.cards:  # the first tap of a card in a period decides "late"
            tally.cards[data["card"]] = late
            self._save()
        return record

    def _head_count(self, record: dict[str, Any]) -> None:
        """A camera's ``people`` reading, or the occupancy model's ``occupancy`` event, in a reader's room."""
        assert self.checks is not None
        room = record.get("room") or record.get("device")
        if record.get("type") == "occupancy":
            people, camera = (record.get("data") or {}).get("people"), False
        else:
            people, camera = (record.get("values") or {}).get("people"), True
        if isinstance(people, int | float) and not isinstance(people, bool) and isinstance(room, str):
            self.checks.head_count(room, record["ts"] / 1000, float(people), camera)

    async def check(self, summaries: list[Event]) -> list[Event]:
        """The untapped-heads check of each room summarised (its ``present`` are the cards tapped)."""
        if self.checks is None:
            return []
        found = []
        ends = {p.name: (p.start, p.end) for p in self.timetable.periods}
        for summary in summaries:
            if summary.type != "attendance_summary" or summary.data["period"] not in ends:
                continue
            day = dt.date.fromisoformat(summary.data["date"])
            start, end = (dt.datetime.combine(day, t, self.tz).timestamp() for t in ends[summary.data["period"]])
            event = await self.checks.check_room(summary.device, self.rooms[summary.device], summary.data["date"],
                                                 summary.data["period"], start, end, summary.data["present"])
            if event is not None:
                found.append(event)
        return found

    async def _check_pairs(self, emit: Emit) -> None:
        assert self.checks is not None
        while True:
            reader, card, rooms, row, ts = await self._pairs.get()
            event = await self.checks.check_pair(reader, card, rooms, row, ts)
            if event is not None:
                await emit(event)

    def due(self, now: dt.datetime) -> list[Event]:
        """Summary events for every period that has ended by ``now`` and was not summarised yet.

        Today's periods by the timetable; earlier days' only if taps were counted in them (a gateway
        that was down when they ended).
        """
        date = now.date().isoformat()
        events: list[Event] = []
        for day, period in sorted({(d, p) for d, p, _ in self.tallies if d < date}):
            events += self._summary(day, period)
        if WEEKDAYS[now.weekday()] in self.timetable.days:
            for p in self.timetable.periods:
                end = dt.datetime.combine(now.date(), p.end, now.tzinfo)
                if now >= end and (date, p.name) not in self._summarised:
                    events += self._summary(date, p.name)
        self._summarised = {k for k in self._summarised if k[0] == date}
        if events:
            self._save()
        return events

    def _summary(self, date: str, period: str) -> list[Event]:
        """One summary per room with a reader, and the period's tallies forgotten."""
        self._summarised.add((date, period))
        day = dt.date.fromisoformat(date)
        times = {p.name: p.end for p in self.timetable.periods}
        end = dt.datetime.combine(day, times.get(period, dt.time(23, 59)), self.tz)
        events = []
        rooms = sorted(set(self.room_reader) | {r for d, p, r in self.tallies if (d, p) == (date, period)})
        for room in rooms:
            tally = self.tallies.pop((date, period, room), _Tally({}))
            reader = self.room_reader.get(room)
            if reader is None:  # the reader of that room left the config since; its tally goes nowhere
                continue
            events.append(Event(reader, "attendance_summary", {
                "date": date, "period": period, "present": len(tally.cards),
                "late": sum(tally.cards.values())}, ts=end.timestamp()))
        return events

    async def run(self, emit: Emit) -> None:
        # Periods already over when the gateway starts are summarised only if taps were counted in them
        # before the restart (kept in the state file); the others' taps were not seen.
        now = dt.datetime.now(self.tz)
        today = now.date().isoformat()
        counted = {(d, p) for d, p, _ in self.tallies}
        for p in self.timetable.periods:
            if dt.datetime.combine(now.date(), p.end, now.tzinfo) <= now and (today, p.name) not in counted:
                self._summarised.add((today, p.name))
        pairs: asyncio.Task[None] | None = None
        if self.checks is not None:
            await self.checks.load_models()
            pairs = asyncio.create_task(self._check_pairs(emit), name="attendance-card-sharing")
        try:
            while True:
                await asyncio.sleep(15)
                summaries = self.due(dt.datetime.now(self.tz))
                for event in summaries:
                    await emit(event)
                    self.summaries += 1
                for event in await self.check(summaries):
                    await emit(event)
                if self.checks is not None:  # last taps older than the pair window are not needed
                    self.checks.forget_before(dt.datetime.now(self.tz).timestamp())
        finally:
            if pairs is not None:
                pairs.cancel()
            await self.flush()  # the gateway stops: the tallies of this period survive the restart

    def status(self) -> AttendanceStatus:
        status: AttendanceStatus = {"summaries": self.summaries, "open_tallies": len(self.tallies)}
        if self.checks is not None:
            status["checks"] = self.checks.status()
            status["models"] = dict(status["checks"]["models"])
        return status

    def state_files(self) -> list[Path]:
        return [self.state_file] if self.state_file is not None else []
