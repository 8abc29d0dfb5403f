"""The plain baseline the model must beat: a rolling z-score per channel.

Each reading is compared with the mean and standard deviation of the :data:`HISTORY` readings before it; a
window's score is the largest ``|z|`` of its readings over all channels. Its alarm threshold is calibrated on
normal data exactly as the model's is (same target false-alarm rate), so the two are compared fairly.
"""

from __future__ import annotations

from typing import Final

import numpy as np

HISTORY: Final = 60  # readings (one hour)
FLOOR_SHARE: Final = 0.1  # a channel's rolling std is never taken below this share of its normal std


def std_floors(normal_values: list[np.ndarray]) -> np.ndarray:
    """Per channel, the smallest std the z-score divides by (a flat hour must not make every change infinite)."""
    return FLOOR_SHARE * np.concatenate(normal_values).std(axis=0)


def rolling_z(values: np.ndarray, floors: np.ndarray, history: int = HISTORY) -> np.ndarray:
    """|z| of every reading [T, C] against the ``history`` readings before it (0 for the first ``history``)."""
    x = np.asarray(values, dtype=np.float64)
    out = np.zeros_like(x)
    if len(x) <= history:
        return out
    past = np.lib.stride_tricks.sliding_window_view(x[:-1], history, axis=0)  # [T-H, C, H]
    mean = past.mean(axis=2)
    std = np.maximum(past.std(axis=2), floors)
    out[history:] = np.abs(x[history:] - mean) / std
    return out


def window_scores(values: np.ndarray, ends: np.ndarray, window: int, floors: np.ndarray) -> np.ndarray:
    """The baseline's score of each window ending at ``ends``: the largest |z| inside it."""
    z = rolling_z(values, floors).max(axis=1)
    return np.array([z[e - window + 1:e + 1].max() for e in ends])
