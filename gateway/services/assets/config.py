"""The ``assets:`` section of a gateway's config: the registry, usage evidence and the energy rule."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EmptySignal = Literal["occupancy", "people", "taps"]


class EnergyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[str] = Field(["mon", "tue", "wed", "thu", "fri", "sat"], description="School days.")
    start: dt.time = Field(dt.time(6, 30), description="School hours begin (local time).")
    end: dt.time = Field(dt.time(17, 30), description="School hours end (local time).")
    grace_min: float = Field(15, ge=0, le=24 * 60, description="On this long outside school hours raises the event.")
    empty_min: float | None = Field(None, ge=0, le=24 * 60, description="On this long in a room that is empty "
                                    "(see empty_from) also raises the event, within school hours too. Leave out: "
                                    "only school hours count.")
    empty_from: list[EmptySignal] = Field(["occupancy", "people"], min_length=1, description="What says a room is "
                                          "empty: 'occupancy' (the occupancy model's events), 'people' (a camera's "
                                          "or counter's people reading of the room), 'taps' (no card tap at a "
                                          "reader in the room since the device was switched on).")
    switch_off: bool = Field(False, description="The school's opt-in: switch a board or projector off (PJLink or "
                             "RS-232 'power off') when the rule raises energy_left_on; the result is recorded as "
                             "an energy_auto_off event.")

    @field_validator("days")
    @classmethod
    def _known_days(cls, days: list[str]) -> list[str]:
        bad = [d for d in days if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"unknown day(s) {bad}: use {', '.join(WEEKDAYS)}")
        return days

    def school_hours(self, weekday: int, seconds: float) -> bool:
        """Is this local time (weekday 0 = Monday, seconds since midnight) within school hours?"""
        start = self.start.hour * 3600 + self.start.minute * 60 + self.start.second
        end = self.end.hour * 3600 + self.end.minute * 60 + self.end.second
        return WEEKDAYS[weekday] in self.days and start <= seconds < end

    def describe_hours(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {','.join(self.days)}"


class AssetsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inventory_csv: Path | None = Field(None, description="The school's inventory of equipment without electronics "
                                       "(CSV with the columns asset_id,name,category,make,model,serial,room,tag,"
                                       "acquired; asset_id and name required). Re-read when it changes.")
    state_file: Path | None = Field(None, description="The registry and usage, kept across restarts (default: "
                                    "assets.json next to the outbox).")
    report_every_s: float = Field(3600, ge=1, le=86400, description="How often the day's usage is sent as "
                                  "asset_usage records (only what changed).")
    max_gap_s: float = Field(600, ge=1, le=86400, description="Two 'on' readings further apart than this do not "
                             "count the time between them as power-on time (the gateway was off, the device "
                             "unreachable).")
    missing_after_days: int = Field(14, ge=1, le=365, description="A device not seen for this many days is shown "
                                    "as missing.")
    energy: EnergyConfig | None = Field(None, description="The energy rule: a board or projector on outside "
                                        "school hours (or in an empty room) raises energy_left_on. Leave out: no "
                                        "rule.")
