"""The two attendance checks, as the gateway runs them and as the evaluation scores them (numpy only).

**Untapped heads** (students in a room who did not tap): per room and period, the head counts seen in the room
(a camera's ``people`` readings, or the occupancy model's ``people`` estimate) are sampled once a minute from
:data:`SKIP_START_MIN` after the start to :data:`SKIP_END_MIN` before the end (each value holds until the next
one, at most :data:`HOLD_MAX_MIN`); their median, less the expected staff (the teacher), less the distinct cards
tapped, is the *excess*. The rule flags it when the excess reaches ``min_excess`` (per head source: an estimate
from CO2 is far noisier than a camera).

**Card sharing** (one card tapped in two rooms too far apart too quickly): for two taps of one card in
different rooms at most :data:`PAIR_WINDOW_S` apart, the walking distance between the rooms
(:func:`distance_m`) over the time between the taps is the speed the holder would have needed; the rule flags
it above ``max_speed_mps`` when the rooms are at least ``min_distance_m`` apart.

The same functions build the features of the evaluated classifiers (``train.py``), so what is evaluated is
what runs. Plain Python (no numpy): the attendance service runs the rules on gateways without the ``[ml]``
extra.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

SKIP_START_MIN: Final = 10  # heads settle after the start (late arrivals, the occupancy model's lag)
SKIP_END_MIN: Final = 5  # and leave before the end
HOLD_MAX_MIN: Final = 10  # a camera's head count older than this is not used
FLOOR_M: Final = 20.0  # walking distance of one floor up or down (stairs)
PAIR_WINDOW_S: Final = 30 * 60  # taps of one card further apart than this are never compared
MIN_SECONDS: Final = 5.0  # taps closer than this are timed as this far apart (reader timing)

UNTAPPED_FEATURES: Final = ("taps", "heads_median", "heads_p25", "heads_p75", "heads_std", "samples", "excess",
                            "excess_ratio", "camera")
SHARING_FEATURES: Final = ("distance_m", "seconds", "log_speed", "floors", "first_into_period_min",
                           "second_into_period_min")


@dataclass(frozen=True)
class Position:
    """Where a room is: metres on the site plan and the floor (0 = ground)."""

    x: float
    y: float
    floor: int = 0


def distance_m(a: Position, b: Position) -> float:
    """Walking distance between two rooms: along the corridors (Manhattan) plus the stairs."""
    return abs(a.x - b.x) + abs(a.y - b.y) + FLOOR_M * abs(a.floor - b.floor)


# ---------------------------------------------------------------------------------------------- untapped heads

def head_samples(readings: Sequence[tuple[float, float]], start_s: float, end_s: float,
                 camera: bool = True) -> list[float]:
    """Once-a-minute samples of the head counts ``readings`` ((unix seconds, people), in time order) within
    the part of a period that is used. Each reading holds until the next: a camera's at most
    :data:`HOLD_MAX_MIN` (it reports all the time; older means it stopped), the occupancy model's estimate
    for as long as it is not replaced (the model stage reports it only when it moves)."""
    hold_s = HOLD_MAX_MIN * 60 if camera else math.inf
    samples: list[float] = []
    t = start_s + SKIP_START_MIN * 60
    stop = end_s - SKIP_END_MIN * 60
    i, last = 0, None
    while t <= stop:
        while i < len(readings) and readings[i][0] <= t:
            last = readings[i]
            i += 1
        if last is not None and t - last[0] <= hold_s:
            samples.append(float(last[1]))
        t += 60
    return samples


def untapped_excess(taps: int, samples: Sequence[float], staff: float) -> float | None:
    """Heads (median of the samples) less the staff less the cards tapped; None without samples."""
    if not samples:
        return None
    return float(statistics.median(samples)) - staff - taps


def untapped_rule(taps: int, samples: Sequence[float], camera: bool, staff: float, min_excess_camera: float,
                  min_excess_estimate: float) -> bool:
    excess = untapped_excess(taps, samples, staff)
    if excess is None:
        return False
    return excess >= (min_excess_camera if camera else min_excess_estimate)


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def untapped_features(taps: int, samples: Sequence[float], camera: bool, staff: float) -> list[float]:
    """One row of :data:`UNTAPPED_FEATURES` (needs at least one sample)."""
    median = float(statistics.median(samples))
    excess = median - staff - taps
    return [float(taps), median, _quantile(samples, 0.25), _quantile(samples, 0.75),
            float(statistics.pstdev(samples)), float(len(samples)), excess, excess / max(taps, 1.0),
            1.0 if camera else 0.0]


# ------------------------------------------------------------------------------------------------ card sharing

def speed_mps(distance: float, seconds: float) -> float:
    return distance / max(seconds, MIN_SECONDS)


def sharing_rule(distance: float, seconds: float, max_speed_mps: float, min_distance_m: float) -> bool:
    return distance >= min_distance_m and speed_mps(distance, seconds) > max_speed_mps


def into_period_min(seconds_of_day: float, periods: Sequence[tuple[float, float]], early_s: float) -> float:
    """Minutes from the start of the period a tap at ``seconds_of_day`` counts for (``early_s`` before a start
    counts for it; negative = before the start); outside every period, from the nearest start."""
    for start, end in periods:
        if start - early_s <= seconds_of_day < end:
            return (seconds_of_day - start) / 60
    if not periods:
        return 0.0
    return min(((seconds_of_day - s) / 60 for s, _ in periods), key=abs)


def sharing_features(distance: float, seconds: float, floors: int, first_into_period_min: float,
                     second_into_period_min: float) -> list[float]:
    """One row of :data:`SHARING_FEATURES`; ``*_into_period_min``: minutes after the start of the period the
    tap counted for (negative before it)."""
    return [distance, seconds, math.log10(speed_mps(distance, seconds) + 0.01), float(floors),
            first_into_period_min, second_into_period_min]
