"""Simulated school equipment: normal behaviour and injected, labelled faults (one sample a minute).

Three device kinds, each with its own physics and its own channels:

- ``fridge`` (lab fridge): ``temp`` (°C, a DS18B20-like sensor, 0.0625 °C steps) and ``power`` (W). A thermostat
  runs the compressor between setpoint ± 1 °C; the door is opened now and then in school hours.
- ``fume_hood`` (variable-air-volume hood): ``face_velocity`` (m/s) held near 0.5 by the fan, ``fan_power`` (W),
  which follows the sash opening; sash closed (set-back) outside lab hours.
- ``projector``: ``lamp_temp`` (°C), ``power`` (W), ``fan_rpm``; on in some timetable periods, off otherwise.

Faults (:data:`FAULTS`) start at a known minute and are labelled sample by sample:
``drift`` (the monitoring sensor drifts), ``stuck`` (it repeats one value), ``spikes`` (single-sample outliers),
``compressor_failure`` (fridge: cooling fades, the compressor runs on and the temperature climbs) and
``door_open`` (fridge: the door is left open). The first three apply to every kind (on its primary channel),
the last two to fridges only.

Everything is seeded: the same seed gives the same devices and the same series.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

MINUTES_PER_DAY: Final = 1440
FAULTS: Final = ("drift", "stuck", "spikes", "compressor_failure", "door_open")
FRIDGE_ONLY: Final = frozenset({"compressor_failure", "door_open"})


@dataclass(frozen=True)
class Kind:
    """A device kind: its channels (the first is the primary, monitored one) and the faults it can have."""

    name: str
    channels: tuple[str, ...]
    faults: tuple[str, ...]


KINDS: Final = {
    "fridge": Kind("fridge", ("temp", "power"), FAULTS),
    "fume_hood": Kind("fume_hood", ("face_velocity", "fan_power"), ("drift", "stuck", "spikes")),
    "projector": Kind("projector", ("lamp_temp", "power", "fan_rpm"), ("drift", "stuck", "spikes")),
}


@dataclass(frozen=True)
class Episode:
    """One device's series: ``values`` [minutes, channels]; ``active`` marks the samples where a fault acts."""

    kind: str
    fault: str | None
    start: int | None  # minute the fault begins (None: a normal episode)
    values: np.ndarray  # float64 [T, C]
    active: np.ndarray  # bool [T]


def _school_hours(minute: int) -> bool:
    return 7 * 60 <= minute % MINUTES_PER_DAY < 17 * 60


def _fridge(rng: np.random.Generator, minutes: int, fault: str | None, start: int) -> np.ndarray:
    setpoint = rng.uniform(3.5, 5.0)
    leak = rng.uniform(0.0035, 0.0045)  # per minute, towards ambient
    cooling = rng.uniform(0.22, 0.28)  # °C per minute with the compressor on
    rated = rng.uniform(90.0, 150.0)
    ambient0 = rng.uniform(23.0, 27.0)
    temp, on = setpoint, False
    door_left = 0
    out = np.empty((minutes, 2))
    for t in range(minutes):
        ambient = ambient0 + 2.0 * np.sin(2 * np.pi * (t % MINUTES_PER_DAY - 540) / MINUTES_PER_DAY)
        failing = fault == "compressor_failure" and t >= start
        open_now = fault == "door_open" and t >= start
        if door_left == 0 and _school_hours(t) and rng.random() < 1 / 120:
            door_left = int(rng.integers(1, 3))  # a normal opening: one or two minutes
        door = open_now or door_left > 0
        door_left = max(0, door_left - 1)
        capacity = cooling * (max(0.3, 1.0 - 0.7 * (t - start) / 60.0) if failing else 1.0)
        if temp > setpoint + 1.0:
            on = True
        elif temp < setpoint - 1.0:
            on = False
        k = leak * (8.0 if door else 1.0)
        temp += k * (ambient - temp) - (capacity if on else 0.0)
        measured = temp + rng.normal(0.0, 0.05)
        power = (rated * (1.1 if failing else 1.0) + rng.normal(0.0, 2.0)) if on else 1.5 + rng.normal(0.0, 0.2)
        out[t] = (measured, power)
    out[:, 0] = np.round(out[:, 0] / 0.0625) * 0.0625
    return out


def _fume_hood(rng: np.random.Generator, minutes: int, fault: str | None, start: int) -> np.ndarray:
    target = rng.uniform(0.45, 0.55)
    p_full = rng.uniform(250.0, 400.0)
    sash, lag = 0.1, 0.0
    out = np.empty((minutes, 2))
    for t in range(minutes):
        if _school_hours(t):
            if rng.random() < 1 / 40:
                new = float(rng.choice([0.1, 0.3, 0.5, 0.8, 1.0]))
                lag = (new - sash) * rng.uniform(0.1, 0.3)  # the fan catches up within a minute or two
                sash = new
        elif sash != 0.1:
            lag, sash = (0.1 - sash) * 0.2, 0.1
        velocity = target * (1.0 - lag) + rng.normal(0.0, 0.01)
        lag *= 0.3
        power = p_full * (0.25 + 0.75 * sash) + rng.normal(0.0, 3.0)
        out[t] = (velocity, power)
    return out


def _projector(rng: np.random.Generator, minutes: int, fault: str | None, start: int) -> np.ndarray:
    ambient = rng.uniform(26.0, 31.0)
    hot = rng.uniform(65.0, 75.0)
    rated = rng.uniform(200.0, 280.0)
    rpm = rng.uniform(2200.0, 2600.0)
    periods = [(7 * 60 + 50 * i, 7 * 60 + 50 * i + 45) for i in range(10)]  # 45-minute lessons
    days = minutes // MINUTES_PER_DAY + 1
    used = {(d, p) for d in range(days) for p in range(len(periods)) if rng.random() < 0.6}
    temp, cooldown = ambient, 0
    out = np.empty((minutes, 3))
    for t in range(minutes):
        day, minute = divmod(t, MINUTES_PER_DAY)
        on = any((day, i) in used and a <= minute < b for i, (a, b) in enumerate(periods))
        if on:
            cooldown = 3
        target = hot if on else ambient
        temp += (target - temp) / (5.0 if on else 8.0)
        fan = rpm if on or cooldown > 0 else 0.0
        if not on:
            cooldown = max(0, cooldown - 1)
        power = rated + rng.normal(0.0, 4.0) if on else 0.5 + rng.normal(0.0, 0.05)
        out[t] = (temp + rng.normal(0.0, 0.2), power, fan + (rng.normal(0.0, 30.0) if fan else 0.0))
    return out


SIMULATORS: Final[dict[str, Callable[[np.random.Generator, int, str | None, int], np.ndarray]]] = {
    "fridge": _fridge,
    "fume_hood": _fume_hood,
    "projector": _projector,
}
_DRIFT_PER_MINUTE: Final = {"fridge": (0.003, 0.01), "fume_hood": (-0.0008, -0.0003), "projector": (0.01, 0.03)}
_SPIKE: Final = {"fridge": (3.0, 8.0), "fume_hood": (0.3, 0.6), "projector": (15.0, 30.0)}


def _sensor_fault(rng: np.random.Generator, kind: str, values: np.ndarray, fault: str, start: int) -> np.ndarray:
    """Faults of the monitoring sensor (primary channel); the device itself behaves normally."""
    out = values.copy()
    n = len(out)
    active = np.zeros(n, dtype=bool)
    if fault == "drift":
        rate = rng.uniform(*_DRIFT_PER_MINUTE[kind])
        out[start:, 0] += rate * np.arange(n - start)
        active[start:] = True
    elif fault == "stuck":
        out[start:, 0] = out[start, 0]
        active[start:] = True
    elif fault == "spikes":
        hits = start + np.flatnonzero(rng.random(n - start) < 1 / 30)
        sign = rng.choice([-1.0, 1.0], size=len(hits))
        out[hits, 0] += sign * rng.uniform(*_SPIKE[kind], size=len(hits))
        active[hits] = True
    return np.concatenate([out, active[:, None]], axis=1)


def episode(rng: np.random.Generator, kind: str, fault: str | None = None, days: float = 1.0,
            start: int | None = None) -> Episode:
    """One simulated device of ``kind`` for ``days``; with ``fault``, it begins at ``start`` (default: random
    between 08:00 and 16:00 of the last day)."""
    if fault is not None and fault not in KINDS[kind].faults:
        raise ValueError(f"fault {fault!r} does not apply to {kind!r} (it has {KINDS[kind].faults})")
    minutes = int(days * MINUTES_PER_DAY)
    if fault is not None and start is None:
        start = minutes - MINUTES_PER_DAY + int(rng.integers(8 * 60, 16 * 60))
    first = start if start is not None else minutes
    values = SIMULATORS[kind](rng, minutes, fault, first)
    active = np.zeros(minutes, dtype=bool)
    if fault in FRIDGE_ONLY:
        active[first:] = True
    elif fault is not None:
        both = _sensor_fault(rng, kind, values, fault, first)
        values, active = both[:, :-1], both[:, -1].astype(bool)
    return Episode(kind, fault, start if fault else None, values, active)


def normal_fleet(seed: int, kind: str, devices: int, days: float) -> list[Episode]:
    """Normal behaviour of ``devices`` devices of ``kind`` (training data: no faults)."""
    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    return [episode(rng, kind, None, days) for _ in range(devices)]


def faulty_fleet(seed: int, kind: str, per_fault: int, days: float = 1.0) -> list[Episode]:
    """``per_fault`` episodes of every fault the kind can have, plus as many normal ones (evaluation data)."""
    rng = np.random.default_rng([seed, 100 + list(KINDS).index(kind)])
    out: list[Episode] = []
    for fault in (None, *KINDS[kind].faults):
        out += [episode(rng, kind, fault, days) for _ in range(per_fault)]
    return out
