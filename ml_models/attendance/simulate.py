"""Simulated school days with labelled attendance cases (the data the checks are tuned and evaluated on).

One school building (two wings, three floors, 36 rooms; :func:`campus`), 24 classes of 30–40 students, six
45-minute periods with 10-minute breaks. Every class spends each period in its home room or a specialist room
(lab, library); a teacher comes with it. What happens, per day (all random draws from the day's seed):

Injected, labelled cases
- **non-tappers**: in 15 % of room-periods, 3–8 students present do not tap (label: 3 or more students in the
  room without a tap);
- **shared cards**: a cloned card (two students, one UID) tapped by its two holders in their two rooms around a
  period's start, and a card handed over and carried at a run to another room (label: the two taps of a pair
  were made by different people).

Honest confounders (never labelled positive)
- a student now and then forgets to tap (1 %), absences (5 %), late arrivals (6 %, 5–25 min late), double taps;
- a student leaving the room and re-entering (taps again), a tap at the wrong door then the right one (a
  neighbouring room on the same floor, at a walk), a class moving to a lab mid-period (everyone taps again);
- the teacher (one more head; taps a staff card half the time);
- sensor noise: a camera misses a few seated/occluded students and misreads by about one; rooms without a
  camera have the occupancy model's estimate from CO2 (lagging, biased by a few people per room and period,
  reported only when it moves by 3, as the model stage does); a tenth of the rooms have neither.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from edugate.ml_models.attendance.checks import PAIR_WINDOW_S, Position, distance_m, into_period_min

DAY0: Final = 1_893_456_000  # a Monday 00:00 UTC (2030-01-07): day d starts at DAY0 + d * 86400
PERIODS: Final = tuple((7 * 3600 + i * 55 * 60, 7 * 3600 + i * 55 * 60 + 45 * 60) for i in range(6))
EARLY_S: Final = 15 * 60  # taps this long before a start count for the period (the service's early_min)
UNTAPPED_LABEL: Final = 3  # students present without a tap, from which a room-period is a case
CLASSES: Final = 24
WALK_MPS: Final = (0.8, 1.6)


@dataclass(frozen=True)
class Room:
    name: str
    pos: Position
    heads: str  # "camera", "estimate" or "none"


@dataclass
class RoomPeriod:
    """One room in one period: what the gateway sees and the truth."""

    day: int
    period: int
    room: str
    heads: str
    start_s: float
    end_s: float
    taps: int  # distinct cards tapped for the period in the room
    readings: list[tuple[float, float]]  # (unix s, people) as the head source reports them
    untapped: int  # truth: students in the room without a tap
    label: bool


@dataclass
class TapPair:
    """Two taps of one card in different rooms at most PAIR_WINDOW_S apart."""

    day: int
    card: str
    rooms: tuple[str, str]
    distance: float
    seconds: float
    floors: int
    into_period_min: tuple[float, float]
    kind: str  # "cloned", "handed" (shared) or the honest reason: "moved", "wrong_door", "next_period", ...
    label: bool


@dataclass
class Day:
    room_periods: list[RoomPeriod] = field(default_factory=list)
    pairs: list[TapPair] = field(default_factory=list)


def campus(seed: int = 0) -> list[Room]:
    """Two wings 40 m apart, three floors, six rooms 12 m apart per wing and floor."""
    rng = np.random.default_rng(seed)
    rooms = []
    for wing, x0 in (("a", 0.0), ("b", 100.0)):
        for floor in range(3):
            for i in range(6):
                draw = rng.random()
                heads = "camera" if draw < 0.35 else "estimate" if draw < 0.9 else "none"
                rooms.append(Room(f"{wing}{floor}{i}", Position(x0 + 12.0 * i, 0.0, floor), heads))
    return rooms


@dataclass(frozen=True)
class _Tap:
    t: float
    card: str
    person: str
    room: str
    kind: str


class _Builder:
    def __init__(self, seed: int, day: int, rooms: list[Room]) -> None:
        self.rng = np.random.default_rng(seed)
        self.day = day
        self.rooms = {r.name: r for r in rooms}
        self.taps: list[_Tap] = []
        self.heads: dict[tuple[int, str], list[tuple[float, float, int]]] = defaultdict(list)  # in, out, +people
        self.tappers: dict[tuple[int, str], set[str]] = defaultdict(set)  # (period, room) -> persons tapped
        self.present: dict[tuple[int, str], set[str]] = defaultdict(set)  # persons in the heads window

    def walk_s(self, a: str, b: str, speed: float | None = None) -> float:
        mps = speed if speed is not None else self.rng.uniform(*WALK_MPS)
        return distance_m(self.rooms[a].pos, self.rooms[b].pos) / mps

    def tap(self, t: float, card: str, person: str, room: str, kind: str, period: int) -> None:
        self.taps.append(_Tap(t, card, person, room, kind))
        self.tappers[(period, room)].add(person)

    def stay(self, period: int, room: str, person: str, t_in: float, t_out: float) -> None:
        self.heads[(period, room)].append((t_in, t_out, 1))
        lo, hi = self.start(period) + 10 * 60, self.end(period) - 5 * 60
        if t_in < hi and t_out > lo and (t_out - t_in) > 10 * 60:
            self.present[(period, room)].add(person)

    def start(self, p: int) -> float:
        return DAY0 + self.day * 86400 + PERIODS[p][0]

    def end(self, p: int) -> float:
        return DAY0 + self.day * 86400 + PERIODS[p][1]


def school_day(seed: int, day: int, rooms: list[Room] | None = None) -> Day:
    rooms = rooms or campus()
    b = _Builder(seed * 1000 + day, day, rooms)
    rng = b.rng
    names = [r.name for r in rooms]
    homes, special = names[:CLASSES], names[CLASSES:]
    sizes = np.random.default_rng(seed).integers(30, 41, CLASSES)
    absent = {f"s{c}-{i}" for c in range(CLASSES) for i in range(sizes[c]) if rng.random() < 0.05}
    teachers = [f"t{i}" for i in range(30)]
    for p in range(len(PERIODS)):
        start, end = b.start(p), b.end(p)
        free = list(rng.permutation(special))
        staff = list(rng.permutation(teachers))
        for c in range(CLASSES):
            room = homes[c] if rng.random() < 0.7 or not free else str(free.pop())
            moves_to = str(free.pop()) if free and rng.random() < 0.03 else None
            move_at = start + rng.uniform(5, 20) * 60
            students = [f"s{c}-{i}" for i in range(sizes[c]) if f"s{c}-{i}" not in absent]
            silent = set()
            if rng.random() < 0.15:
                silent = set(rng.choice(students, size=int(rng.integers(3, 9)), replace=False))
            teacher = staff.pop()
            t_in = start - rng.uniform(0, 5) * 60
            if rng.random() < 0.5:
                b.tap(t_in, teacher, teacher, room, "staff", p)
            _attend(b, p, room, teacher, t_in, end, moves_to, move_at, tapping=False)
            for s in students:
                forgets = s in silent or rng.random() < 0.01
                late = rng.random() < 0.06
                arrive = start + rng.uniform(5, 25) * 60 if late else start - rng.uniform(0, 12) * 60
                if not forgets and rng.random() < 0.02:  # the wrong door first, then the right one
                    floor_rooms = [n for n in names if n != room and n[:2] == room[:2]]
                    wrong = str(rng.choice(floor_rooms))
                    b.tap(arrive - b.walk_s(wrong, room) - rng.uniform(2, 10), s, s, wrong, "wrong_door", p)
                if not forgets:
                    b.tap(arrive, s, s, room, "late" if late else "arrive", p)
                    if rng.random() < 0.05:
                        b.tap(arrive + rng.uniform(1, 3), s, s, room, "double", p)
                leave = rng.random() < 0.04
                if leave and moves_to is None:  # out for 3-10 minutes, taps again on the way back in
                    out = start + rng.uniform(10, 30) * 60
                    back = out + rng.uniform(3, 10) * 60
                    b.stay(p, room, s, arrive, out)
                    b.stay(p, room, s, back, end)
                    if not forgets:
                        b.tap(back, s, s, room, "reenter", p)
                    if forgets:
                        b.present[(p, room)].add(s)
                    continue
                _attend(b, p, room, s, arrive, end, moves_to, move_at, tapping=not forgets)
    _share_cards(b, homes)
    return _collect(b, rooms)


def _attend(b: _Builder, p: int, room: str, person: str, t_in: float, end: float, moves_to: str | None,
            move_at: float, tapping: bool) -> None:
    if moves_to is None or t_in >= move_at:
        b.stay(p, room, person, t_in, end)
        return
    arrive = move_at + b.walk_s(room, moves_to)
    b.stay(p, room, person, t_in, move_at)
    b.stay(p, moves_to, person, arrive, end)
    if tapping:
        b.tap(arrive + b.rng.uniform(0, 30), person, person, moves_to, "moved", p)


def _share_cards(b: _Builder, homes: list[str]) -> None:
    """Cloned cards (both holders tap around a start) and cards handed over and run to another room."""
    rng = b.rng
    by_room: dict[tuple[int, str], list[_Tap]] = defaultdict(list)
    for tap in b.taps:
        if tap.kind in ("arrive", "late") and not tap.person.startswith("t"):
            for p in range(len(PERIODS)):
                if b.start(p) - 15 * 60 <= tap.t < b.end(p):
                    by_room[(p, tap.room)].append(tap)
    keys = sorted(by_room)
    for _ in range(int(rng.poisson(8))):  # Y taps X's clone in Y's room, as Y arrives
        p, room_x = keys[rng.integers(len(keys))]
        others = [k for k in keys if k[0] == p and k[1] != room_x]
        if not others:
            continue
        room_y = others[rng.integers(len(others))][1]
        xs, ys = by_room[(p, room_x)], by_room[(p, room_y)]
        x_tap, y_tap = xs[rng.integers(len(xs))], ys[rng.integers(len(ys))]
        b.taps.append(_Tap(y_tap.t + rng.uniform(1, 20), x_tap.card, y_tap.person, room_y, "cloned"))
    for _ in range(int(rng.poisson(3))):  # X taps in, hands the card out; it is run to another room
        p, room_x = keys[rng.integers(len(keys))]
        room_y = str(rng.choice([h for h in homes if h != room_x]))
        xs = by_room[(p, room_x)]
        x_tap = xs[rng.integers(len(xs))]
        t = x_tap.t + 20 + b.walk_s(room_x, room_y, speed=float(rng.uniform(2.5, 5.0)))
        b.taps.append(_Tap(t, x_tap.card, f"runner-{x_tap.person}", room_y, "handed"))


def _into_period_min(t: float, day: int) -> float:
    return into_period_min(t - DAY0 - day * 86400, PERIODS, EARLY_S)


def _period_of(t: float, day: int) -> int | None:
    base = DAY0 + day * 86400
    for i, (start, end) in enumerate(PERIODS):
        if base + start - EARLY_S <= t < base + end:
            return i
    return None


def _collect(b: _Builder, rooms: list[Room]) -> Day:
    day = Day()
    rng = b.rng
    # pairs: consecutive taps of one card in different rooms
    by_card: dict[str, list[_Tap]] = defaultdict(list)
    for tap in sorted(b.taps, key=lambda t: t.t):
        by_card[tap.card].append(tap)
    for card, taps in by_card.items():
        for a, c in itertools.pairwise(taps):
            if a.room == c.room or c.t - a.t > PAIR_WINDOW_S:
                continue
            pa, pc = b.rooms[a.room].pos, b.rooms[c.room].pos
            shared = a.person != c.person
            kinds = {a.kind, c.kind}
            kind = next((k for k in ("cloned", "handed", "wrong_door", "moved") if k in kinds), "next_period")
            day.pairs.append(TapPair(b.day, card, (a.room, c.room), distance_m(pa, pc), c.t - a.t,
                                     abs(pa.floor - pc.floor),
                                     (_into_period_min(a.t, b.day), _into_period_min(c.t, b.day)), kind, shared))
    # room-periods: distinct cards tapped for the period, and the heads the room's source reports
    cards: dict[tuple[int, str], set[str]] = defaultdict(set)
    for tap in b.taps:
        period = _period_of(tap.t, b.day)
        if period is not None:
            cards[(period, tap.room)].add(tap.card)
    for p in range(len(PERIODS)):
        start, end = b.start(p), b.end(p)
        for room in rooms:
            stays = b.heads.get((p, room.name), [])
            if room.heads == "none" or (not stays and not cards.get((p, room.name))):
                continue
            minutes = np.arange(start - 15 * 60, end + 60, 60.0)
            truth = np.array([sum(n for t_in, t_out, n in stays if t_in <= t < t_out) for t in minutes])
            readings = _camera(rng, minutes, truth) if room.heads == "camera" else _estimate(rng, minutes, truth)
            untapped = len(b.present[(p, room.name)] - b.tappers[(p, room.name)]
                           - {x for x in b.present[(p, room.name)] if x.startswith("t")})
            day.room_periods.append(RoomPeriod(b.day, p, room.name, room.heads, start, end,
                                               len(cards.get((p, room.name), ())), readings, untapped,
                                               untapped >= UNTAPPED_LABEL))
    return day


def _camera(rng: np.random.Generator, minutes: np.ndarray, truth: np.ndarray) -> list[tuple[float, float]]:
    """A people-counting camera: misses a few seated/occluded people, misreads by about one, drops readings."""
    missed = rng.uniform(0.0, 0.08)
    out = []
    for t, n in zip(minutes, truth, strict=True):
        if rng.random() < 0.05:
            continue
        out.append((float(t), float(max(0, round(n * (1 - missed) + rng.normal(0, 0.8))))))
    return out


def _estimate(rng: np.random.Generator, minutes: np.ndarray, truth: np.ndarray) -> list[tuple[float, float]]:
    """The occupancy model's head count from CO2: lags (about 5 min), biased per room and period, noisy;
    reported as the model stage does (median of the last 5, only when it moves by 3 or more, 5 min apart)."""
    bias = rng.normal(0, 3.0)
    level = 0.0
    recent: list[float] = []
    out: list[tuple[float, float]] = []
    last_people, last_t = None, -1e18
    for t, n in zip(minutes, truth, strict=True):
        level += (n - level) / 5.0
        estimate = max(0.0, round(level + bias + rng.normal(0, 3.0))) if level > 2 else 0.0
        recent = ([*recent, estimate])[-5:]
        people = float(np.median(recent))
        if last_people is None or ((people == 0) != (last_people == 0)) or \
                (abs(people - last_people) >= 3 and t - last_t >= 300):
            out.append((float(t), people))
            last_people, last_t = people, t
    return out


def school_days(seed: int, days: int) -> list[Day]:
    rooms = campus()
    return [school_day(seed, d, rooms) for d in range(days)]
