"""The minutes a model is trained and scored on: every school-day minute of some simulated rooms."""

from __future__ import annotations

from typing import Final

import numpy as np

from edugate.ml_models.occupancy.data import MINUTES_PER_DAY, RoomSeries
from edugate.ml_models.occupancy.features import every_minute, window_features

DAY_START: Final = 6 * 60 + 30  # 06:30
DAY_END: Final = 17 * 60 + 30  # 17:30


def dataset(series: list[RoomSeries]) -> tuple[np.ndarray, np.ndarray]:
    """Features and head counts of every school-day minute of the rooms."""
    xs, ys = [], []
    for s in series:
        windows, ends = every_minute(s.values)
        minute = ends % MINUTES_PER_DAY
        keep = (minute >= DAY_START) & (minute < DAY_END)
        xs.append(window_features(windows[keep]))
        ys.append(s.people[ends[keep]])
    return np.concatenate(xs), np.concatenate(ys)
