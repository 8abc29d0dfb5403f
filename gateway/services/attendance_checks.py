"""Attendance checks on the gateway: heads clearly above taps, and one card in two rooms too quickly.

Part of the attendance service (``timetable.checks`` in the config). It keeps, per room, the head counts seen
there (a camera's ``people`` readings; the model stage's ``occupancy`` events), and per card its last tap.

- When a period ends, each room with a reader and a head source is checked: ``attendance.untapped_heads``
  (device = the room's reader) when the heads are clearly above the cards tapped;
- on a tap, the card's previous tap in another room within 30 minutes is checked: ``attendance.card_shared``
  (device = the reader of the second tap; ``card`` = the pseudonym, never a raw UID).

Each check runs the shipped classifier where its evaluation beat the rule (``ml_models/attendance``:
``"ships": true`` in its manifest), on the model engine's worker thread (never on the event loop), else the
rule with the limits tuned on the same simulated days. ``method: rule`` forces the rules; without the ``[ml]``
extra, or if a model cannot be loaded, the rules run and the status says why. The features and the rules are
the ones the evaluation scored (``edugate.ml_models.attendance.checks``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

import edugate.ml_models
from edugate.contract.records import Event
from edugate.ml_models.attendance import checks

if TYPE_CHECKING:
    from edugate.gateway.inference import ModelRunner, ModelSpec, RunnerStatus

log = logging.getLogger(__name__)

MANIFEST = Path(edugate.ml_models.__file__).resolve().parent / "attendance" / "manifest.json"
UNTAPPED, SHARED = "attendance-untapped-heads", "attendance-card-shared"
KEEP_S = 4 * 3600  # head counts kept per room


def _tuned() -> dict[str, dict[str, float]]:
    try:
        models = json.loads(MANIFEST.read_text())["models"]
        return {name: dict(models[name]["rule"]) for name in (UNTAPPED, SHARED)}
    except (OSError, ValueError, KeyError, TypeError):
        return {UNTAPPED: {"min_excess_camera": 3.5, "min_excess_estimate": 4.5}, SHARED: {
            "max_speed_mps": 0.5, "min_distance_m": 70.0}}


TUNED = _tuned()


class RoomPlace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    x: float = Field(description="Metres east on the site plan.")
    y: float = Field(0.0, description="Metres north on the site plan.")
    floor: int = Field(0, ge=-5, le=50, description="0 = ground floor.")


class ChecksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    untapped_heads: bool = Field(True, description="Flag rooms whose head count is clearly above the taps.")
    card_sharing: bool = Field(True, description="Flag a card tapped in two rooms too far apart too quickly.")
    method: Literal["auto", "rule"] = Field("auto", description="auto: the shipped classifier where its "
                                            "evaluation beat the rule (needs the [ml] extra), else the rule.")
    staff: float = Field(1.0, ge=0, description="Heads expected besides the students (the teacher).")
    min_excess_camera: float = Field(TUNED[UNTAPPED]["min_excess_camera"], gt=0,
                                     description="Rule: heads - staff - taps from which a camera room is flagged.")
    min_excess_estimate: float = Field(TUNED[UNTAPPED]["min_excess_estimate"], gt=0,
                                       description="Rule: the same for a head count estimated from CO2.")
    max_speed_mps: float = Field(TUNED[SHARED]["max_speed_mps"], gt=0,
                                 description="Rule: a card 'moving' faster than this between rooms is flagged.")
    min_distance_m: float = Field(TUNED[SHARED]["min_distance_m"], ge=0,
                                  description="Rule: rooms closer than this are never flagged.")
    rooms: dict[str, RoomPlace] = Field(default_factory=dict, description="Where each room is (card sharing "
                                        "compares only rooms listed here).")
    budget_ms: float = Field(5.0, gt=0, description="A model call slower than this is counted as an overrun.")


class CheckStatus(TypedDict):
    method: str  # "model" or "rule"
    why_rule: str | None  # why the rule runs when the method is auto
    checked: int
    flagged: int


class ChecksStatus(TypedDict):
    untapped_heads: CheckStatus
    card_shared: CheckStatus
    models: dict[str, RunnerStatus]


@dataclass
class _Check:
    name: str
    enabled: bool
    runner: ModelRunner | None = None
    spec: ModelSpec | None = None
    why_rule: str | None = None
    checked: int = 0
    flagged: int = 0

    def status(self) -> CheckStatus:
        on_model = self.runner is not None and self.runner.current is not None
        return {"method": "model" if on_model else "rule", "why_rule": None if on_model else self.why_rule,
                "checked": self.checked, "flagged": self.flagged}


class AttendanceChecks:
    """Head counts and last taps; see the module docstring."""

    def __init__(self, cfg: ChecksConfig, tz: dt.tzinfo, periods: list[tuple[dt.time, dt.time]],
                 early_min: float) -> None:
        """``periods``: the timetable's (start, end); ``early_min``: taps this long before a start count for it."""
        self.cfg = cfg
        self.tz = tz
        self.periods = sorted((a.hour * 3600 + a.minute * 60.0, b.hour * 3600 + b.minute * 60.0) for a, b in periods)
        self.early_s = early_min * 60
        self._loaded = False
        self.heads: dict[tuple[str, bool], deque[tuple[float, float]]] = {}  # (room, camera) -> (unix s, people)
        self.last_tap: dict[str, tuple[float, str]] = {}  # card pseudonym -> (unix s, room)
        self.untapped = _Check("untapped_heads", cfg.untapped_heads, why_rule="method: rule")
        self.shared = _Check("card_shared", cfg.card_sharing, why_rule="method: rule")

    # -- models ----------------------------------------------------------------------------------------------

    async def load_models(self) -> None:
        """Load the shipped classifiers that beat their rule (method auto); the rules stay otherwise."""
        if self.cfg.method == "rule" or self._loaded:
            return
        self._loaded = True
        try:
            from edugate.gateway.inference import ManifestError, ModelRunner, load_spec
        except ImportError as exc:
            for check in (self.untapped, self.shared):
                check.why_rule = f"the [ml] extra is not installed ({exc.name})"
            return
        for check, name in ((self.untapped, UNTAPPED), (self.shared, SHARED)):
            if not check.enabled:
                continue
            try:
                spec = load_spec(MANIFEST, name)
            except ManifestError as exc:
                check.why_rule = str(exc)
                continue
            if spec.meta.get("ships") is not True:
                check.why_rule = f"{name} {spec.version} did not beat the rule in its evaluation"
                continue
            runner = ModelRunner(name, budget_ms=self.cfg.budget_ms, max_pending=64)
            if await runner.try_swap(spec):
                check.runner, check.spec, check.why_rule = runner, spec, None
            else:
                check.why_rule = f"{name} not loaded: {runner.status()['error']}"
                runner.close()

    async def _model_says(self, check: _Check, row: list[float]) -> float | None:
        """The classifier's probability for one feature row; None if it gave none (counted by its runner)."""
        if check.runner is None or check.spec is None:
            return None
        import numpy as np  # present: the model engine loaded (the [ml] extra)

        x = np.asarray([row], dtype=np.float32)
        out = await check.runner.infer({check.spec.inputs[0].name: x},
                                       [check.spec.meta["score_output"]])
        if out is None:
            return None
        return float(out[0][0, int(check.spec.meta.get("positive_class", 1))])

    # -- what the service feeds ------------------------------------------------------------------------------

    def head_count(self, room: str, ts_s: float, people: float, camera: bool) -> None:
        readings = self.heads.setdefault((room, camera), deque())
        readings.append((ts_s, float(people)))
        while len(readings) > 1 and readings[1][0] < ts_s - KEEP_S:  # keep the last one before the window
            readings.popleft()

    def _into_period_min(self, ts_s: float) -> float:
        when = dt.datetime.fromtimestamp(ts_s, self.tz)
        of_day = when.hour * 3600 + when.minute * 60 + when.second + when.microsecond / 1e6
        return checks.into_period_min(of_day, self.periods, self.early_s)

    def tap(self, card: str, room: str, ts_s: float) -> tuple[str, list[float]] | None:
        """Remember the tap; the room of the card's last tap and the features of the pair, if one to check."""
        last = self.last_tap.get(card)
        self.last_tap[card] = (ts_s, room)
        if not self.shared.enabled or last is None or last[1] == room:
            return None
        seconds = ts_s - last[0]
        a, b = self.cfg.rooms.get(last[1]), self.cfg.rooms.get(room)
        if a is None or b is None or not 0 <= seconds <= checks.PAIR_WINDOW_S:
            return None
        pa, pb = checks.Position(a.x, a.y, a.floor), checks.Position(b.x, b.y, b.floor)
        return last[1], checks.sharing_features(checks.distance_m(pa, pb), seconds, abs(a.floor - b.floor),
                                                self._into_period_min(last[0]), self._into_period_min(ts_s))

    def forget_before(self, ts_s: float) -> None:
        """Drop last taps older than the pair window (called now and then)."""
        self.last_tap = {c: v for c, v in self.last_tap.items() if v[0] >= ts_s - checks.PAIR_WINDOW_S}

    # -- the checks ------------------------------------------------------------------------------------------

    async def check_pair(self, reader: str, card: str, rooms: tuple[str, str], row: list[float],
                         ts_s: float) -> Event | None:
        distance, seconds = float(row[0]), float(row[1])
        data: dict[str, Any] = {"card": card, "from_room": rooms[0], "to_room": rooms[1],
                                "distance_m": round(distance, 1), "seconds": round(seconds, 1),
                                "speed_mps": round(checks.speed_mps(distance, seconds), 2)}
        flagged = await self._decide(self.shared, row, data, lambda: checks.sharing_rule(
            distance, seconds, self.cfg.max_speed_mps, self.cfg.min_distance_m))
        return Event(reader, "attendance.card_shared", data, ts_s) if flagged else None

    async def check_room(self, reader: str, room: str, date: str, period: str, start_s: float, end_s: float,
                         taps: int) -> Event | None:
        if not self.untapped.enabled:
            return None
        samples: list[float] = []
        camera = True
        for camera in (True, False):  # a camera's counts where the room has one (and it reported), else the estimate
            samples = checks.head_samples(list(self.heads.get((room, camera), ())), start_s, end_s, camera=camera)
            if samples:
                break
        excess = checks.untapped_excess(taps, samples, self.cfg.staff)
        if excess is None:
            return None
        row = checks.untapped_features(taps, samples, camera, self.cfg.staff)
        data: dict[str, Any] = {"date": date, "period": period, "heads": round(row[1], 1), "taps": taps,
                                "excess": round(excess, 1), "source": "camera" if camera else "estimate"}
        flagged = await self._decide(self.untapped, row, data, lambda: checks.untapped_rule(
            taps, samples, camera, self.cfg.staff, self.cfg.min_excess_camera, self.cfg.min_excess_estimate))
        return Event(reader, "attendance.untapped_heads", data, end_s) if flagged else None

    async def _decide(self, check: _Check, row: list[float], data: dict[str, Any], rule: Callable[[], bool]) -> bool:
        check.checked += 1
        score = await self._model_says(check, row)
        if score is not None and check.spec is not None:
            threshold = float(check.spec.meta["threshold"])
            flagged = score >= threshold
            data.update(method="model", model=check.spec.name, version=check.spec.version, score=round(score, 3),
                        threshold=threshold)
        else:
            flagged = bool(rule())
            data["method"] = "rule"
        check.flagged += flagged
        return flagged

    def status(self) -> ChecksStatus:
        runners = {c.runner.name: c.runner.status() for c in (self.untapped, self.shared) if c.runner is not None}
        return {"untapped_heads": self.untapped.status(), "card_shared": self.shared.status(), "models": runners}

    def close(self) -> None:
        for check in (self.untapped, self.shared):
            if check.runner is not None:
                check.runner.close()
