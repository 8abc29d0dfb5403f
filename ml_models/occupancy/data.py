"""Simulated classrooms that follow a timetable: CO2, temperature, humidity and light, one sample a minute.

A room (volume, ventilation, class sizes) is used in some of the day's periods; the people in it breathe CO2
into it (a well-mixed mass balance with the ventilation rate of the day, windows open or shut), warm it and
humidify it; the lights are usually on while a class is in, sometimes left on after it, and daylight comes
through the windows. The ground truth is the head count, minute by minute.

Seeded: the same seed gives the same rooms and days.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

MINUTES_PER_DAY: Final = 1440
CHANNELS: Final = ("co2", "temp", "humidity", "light")
OUTDOOR_CO2: Final = 420.0
CO2_PER_PERSON_M3_MIN: Final = 0.0003  # 5 mL/s: a seated teenager
PERIODS: Final = tuple(
    [(7 * 60 + 50 * i, 7 * 60 + 50 * i + 45) for i in range(5)]
    + [(13 * 60 + 30 + 50 * i, 13 * 60 + 30 + 50 * i + 45) for i in range(4)]
)


@dataclass(frozen=True)
class RoomSeries:
    """One room over some days: ``values`` [minutes, 4] (co2 ppm, °C, %RH, lux) and ``people`` [minutes]."""

    values: np.ndarray
    people: np.ndarray
    volume_m3: float


def _head_count(rng: np.random.Generator, days: int) -> np.ndarray:
    people = np.zeros(days * MINUTES_PER_DAY)
    for day in range(days):
        class_size = int(rng.integers(25, 43))
        for start, end in PERIODS:
            u = rng.random()
            if u < 0.25:
                continue  # a free period: the room stays empty
            n = rng.integers(3, 11) if u < 0.33 else round(class_size * rng.uniform(0.85, 1.0))
            a = day * MINUTES_PER_DAY + start + int(rng.integers(-2, 4))
            b = day * MINUTES_PER_DAY + end + int(rng.integers(-3, 2))
            ramp = np.clip((np.arange(a, b) - a + 1) / 3.0, 0.0, 1.0)  # people come in over three minutes
            people[a:b] = np.round(n * ramp)
    return people


def room(rng: np.random.Generator, days: int) -> RoomSeries:
    """One simulated classroom for ``days`` school days."""
    volume = rng.uniform(150.0, 240.0)
    people = _head_count(rng, days)
    minutes = len(people)
    co2, temp, rh = OUTDOOR_CO2 + 30.0, rng.uniform(26.0, 29.0), rng.uniform(60.0, 75.0)
    out = np.empty((minutes, 4))
    ach, lights = 1.0, False
    sky = 1.0
    for t in range(minutes):
        minute = t % MINUTES_PER_DAY
        if minute == 0:
            sky = rng.uniform(0.2, 1.0)  # cloudy or sunny day
        if t % 60 == 0 or rng.random() < 1 / 240:
            ach = float(rng.choice([rng.uniform(0.5, 1.5), rng.uniform(3.0, 6.0)]))  # windows shut / open
        n = people[t]
        outdoor = OUTDOOR_CO2 + 15.0 * np.sin(2 * np.pi * minute / MINUTES_PER_DAY)
        co2 += n * CO2_PER_PERSON_M3_MIN * 1e6 / volume - ach / 60.0 * (co2 - outdoor)
        ambient = 28.0 + 3.0 * np.sin(2 * np.pi * (minute - 540) / MINUTES_PER_DAY)
        temp += 0.0012 * n * 60.0 / volume + (ambient - temp) * (0.01 + ach / 600.0)
        rh += 0.002 * n * 60.0 / volume + (70.0 - rh) * (0.005 + ach / 800.0)
        entering, leaving = n > 0 and people[t - 1] == 0, n == 0 and people[t - 1] > 0
        if entering:
            lights = rng.random() < 0.9
        elif leaving:
            lights = lights and rng.random() < 0.2  # left on after the class
        elif minute == 18 * 60:
            lights = False
        daylight = max(0.0, np.sin(np.pi * (minute - 360) / 720)) * 350.0 * sky
        lux = daylight + (400.0 if lights else 0.0)
        out[t] = (
            round(co2 + rng.normal(0.0, 8.0)),
            round(temp + rng.normal(0.0, 0.05), 2),
            round(rh + rng.normal(0.0, 0.3), 1),
            max(0.0, round(lux * rng.uniform(0.97, 1.03))),
        )
    return RoomSeries(out, people, volume)


def rooms(seed: int, count: int, days: int) -> list[RoomSeries]:
    rng = np.random.default_rng([seed, 200])
    return [room(rng, days) for _ in range(count)]
