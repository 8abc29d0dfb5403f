"""The energy rule: a board or projector left on outside school hours, or in a room that is empty.

Two triggers, one episode per device at a time:

* **outside school hours**: on outside ``days``/``start``-``end`` for ``grace_min`` minutes (counted from the
  first reading that said on outside school hours);
* **room empty** (``empty_min`` set): on for ``empty_min`` minutes in a room that the enabled signals
  (``empty_from``) say is empty: the occupancy model's ``occupancy`` events, a ``people`` reading of a device
  in the room (a camera, a people counter), or no ``card_tap`` at a reader of the room. Counted from the latest
  of: the room turning empty, the last tap, the device being switched on. A signal saying someone is there ends
  it; a room no enabled signal watches is never judged empty.

The rule raises ``energy_left_on`` once per episode; switched off after it, ``energy_switched_off`` says for
how long. Times are those of the records, so the rule gives the same answer when records are replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edugate.gateway.services.assets.config import EnergyConfig

OUTSIDE_HOURS = "outside school hours"
ROOM_EMPTY = "room empty"
SENSOR_SIGNALS = ("occupancy", "people")

LocalTime = Callable[[int], tuple[str, int, float]]
"""ms -> (local day, weekday with 0 = Monday, seconds since local midnight)."""


@dataclass
class _Episode:
    on_since: int | None = None  # ms: switched on (the first reading saying on)
    reason: str | None = None
    since: int | None = None  # ms: the reason holds since
    raised: bool = False


@dataclass
class _Signal:
    present: bool
    since: int  # ms: the reading that said so first (for "present": the latest one)


class EnergyRule:
    def __init__(self, config: EnergyConfig, local: LocalTime, reader_rooms: set[str]) -> None:
        self.config = config
        self.local = local
        self.reader_rooms = reader_rooms  # rooms with a card reader: "no taps" can judge only those
        self.episodes: dict[str, _Episode] = {}
        self.signals: dict[tuple[str, str], _Signal] = {}  # (room, signal) -> its latest word
        self.taps: dict[str, int] = {}  # room -> ms of the latest tap

    # ------------------------------------------------------------------ occupancy signals

    def observe(self, record: Mapping[str, Any]) -> None:
        """Take what a record says about a room's occupancy (any record; most say nothing)."""
        room, ts = record.get("room"), record.get("ts")
        if not isinstance(room, str) or not isinstance(ts, int):
            return
        data = record.get("data")
        if record.get("kind") == "event" and isinstance(data, Mapping):
            if record.get("type") == "occupancy" and isinstance(data.get("occupied"), bool):
                self._signal(room, "occupancy", data["occupied"], ts)
            elif record.get("type") == "card_tap":
                self.taps[room] = max(self.taps.get(room, 0), ts)
            return
        values = record.get("values")
        if isinstance(values, Mapping):
            people = values.get("people")
            if isinstance(people, int | float) and not isinstance(people, bool):
                self._signal(room, "people", people > 0, ts)

    def _signal(self, room: str, kind: str, present: bool, ts: int) -> None:
        known = self.signals.get((room, kind))
        if present or known is None or known.present:
            self.signals[(room, kind)] = _Signal(present, ts)

    def empty_since(self, room: str | None, on_since: int) -> tuple[int, str] | None:
        """(ms since when, the signals that say so) if the enabled signals say ``room`` is empty, else None."""
        if room is None:
            return None
        enabled = self.config.empty_from
        words = [(kind, self.signals[(room, kind)]) for kind in SENSOR_SIGNALS
                 if kind in enabled and (room, kind) in self.signals]
        if any(signal.present for _kind, signal in words):
            return None
        since, said = [on_since], [kind for kind, _signal in words]
        since += [signal.since for _kind, signal in words]
        if "taps" in enabled and room in self.reader_rooms:
            since.append(self.taps.get(room, 0))
            said.append("taps")
        return (max(since), "+".join(said)) if said else None

    # ------------------------------------------------------------------ power readings

    def power(self, asset: str, room: str | None, ts: int, on: bool) -> list[tuple[str, dict[str, Any]]]:
        """A power reading of a board or projector: the events it raises (usually none)."""
        ep = self.episodes.setdefault(asset, _Episode())
        if not on:
            out: list[tuple[str, dict[str, Any]]] = []
            if ep.raised:
                out.append(("energy_switched_off", {"asset": asset, "reason": ep.reason,
                                                    "minutes_on": round((ts - (ep.since or ts)) / 60000, 1)}))
            self.episodes[asset] = _Episode()
            return out
        if ep.on_since is None:
            ep.on_since = ts
        rule = self.config
        _day, weekday, seconds = self.local(ts)
        details: dict[str, Any] = {}
        if not rule.school_hours(weekday, seconds):
            reason, since, threshold = OUTSIDE_HOURS, (ep.since if ep.reason == OUTSIDE_HOURS else None), \
                rule.grace_min
            since = ts if since is None else since
        else:
            empty = self.empty_since(room, ep.on_since) if rule.empty_min is not None else None
            if empty is None:
                ep.reason, ep.since, ep.raised = None, None, False  # in use, in school hours: nothing to say
                return []
            reason, (since, signal), threshold = ROOM_EMPTY, empty, float(rule.empty_min or 0)
            details = {"room": room, "signal": signal, "empty_min": rule.empty_min}
        if ep.raised:
            return []
        ep.reason, ep.since = reason, since
        minutes = (ts - since) / 60000
        if minutes < threshold:
            return []
        ep.raised = True
        return [("energy_left_on", {"asset": asset, "since": since, "minutes": round(minutes, 1), "reason": reason,
                                    "school_hours": rule.describe_hours(), **details})]

    def left_on(self, asset: str) -> bool:
        ep = self.episodes.get(asset)
        return bool(ep and ep.raised)
