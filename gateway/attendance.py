"""Attendance from card taps: the timetable period of every tap, and a summary per room and period.

A tap at a reader with role ``attendance`` or ``lab`` (facing in, or both ways)
is annotated with the period it falls in (``period``, ``date``) and whether it
was late (``late``: later than ``late_after_min`` after the period's start).
Taps up to ``early_min`` before a period count for it. When a period ends, one
``attendance_summary`` event per room gives ``present`` (distinct cards) and
``late`` counts; rooms with a reader and nobody present report 0.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.records import Emit, Event
from gateway.services import Service, card_taps

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


@dataclass
class _Tally:
    cards: dict[str, bool]  # pseudonym -> late


class Attendance(Service):
    name = "attendance"

    def __init__(self, timetable: TimetableConfig, tz: str, readers: dict[str, str | None]) -> None:
        """``readers``: attendance reader device id -> room."""
        self.timetable = timetable
        self.tz = ZoneInfo(tz)
        self.room_reader: dict[str, str] = {}
        for device, room in readers.items():
            self.room_reader.setdefault(room or device, device)
        self.rooms = {device: room or device for device, room in readers.items()}
        self.tallies: dict[tuple[str, str, str], _Tally] = {}  # (date, period, room)
        self._summarised: set[tuple[str, str]] = set()  # (date, period)
        self.summaries = 0

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
        if data is None or data.get("direction") == "out" or record["device"] not in self.rooms:
            return record
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
        tally.cards.setdefault(data["card"], late)  # the first tap of a card in a period decides "late"
        return record

    def due(self, now: dt.datetime) -> list[Event]:
        """Summary events for every period that has ended by ``now`` and was not summarised yet."""
        if WEEKDAYS[now.weekday()] not in self.timetable.days:
            return []
        date = now.date().isoformat()
        events = []
        for p in self.timetable.periods:
            end = dt.datetime.combine(now.date(), p.end, now.tzinfo)
            if now < end or (date, p.name) in self._summarised:
                continue
            self._summarised.add((date, p.name))
            for room, reader in sorted(self.room_reader.items()):
                tally = self.tallies.pop((date, p.name, room), _Tally({}))
                events.append(Event(reader, "attendance_summary", {
                    "date": date, "period": p.name, "present": len(tally.cards),
                    "late": sum(tally.cards.values())}, ts=end.timestamp()))
        self._summarised = {k for k in self._summarised if k[0] == date}
        return events

    async def run(self, emit: Emit) -> None:
        # Periods already over when the gateway starts are not summarised (their taps were not seen).
        now = dt.datetime.now(self.tz)
        for p in self.timetable.periods:
            if dt.datetime.combine(now.date(), p.end, now.tzinfo) <= now:
                self._summarised.add((now.date().isoformat(), p.name))
        while True:
            await asyncio.sleep(15)
            for event in self.due(dt.datetime.now(self.tz)):
                await emit(event)
                self.summaries += 1

    def status(self) -> dict[str, Any]:
        return {"summaries": self.summaries, "open_tallies": len(self.tallies)}
