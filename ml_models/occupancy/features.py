"""Features of a room's recent readings for the occupancy models (numpy only: the gateway imports it).

A window is the last :data:`WINDOW` one-minute readings of a room's sensors, channels in
:data:`~edugate.ml_models.occupancy.data.CHANNELS` order (co2, temp, humidity, light), oldest first.
"""

from __future__ import annotations

from typing import Final

import numpy as np

WINDOW: Final = 15
FEATURES: Final = (
    "co2", "co2_rise_5", "co2_rise_15", "co2_above_min", "co2_curvature",
    "temp_rise_15", "humidity_rise_15", "light", "light_change_15", "light_min",
)


def _slope(w: np.ndarray) -> np.ndarray:
    """Least-squares slope per minute along axis 1 of [N, L]."""
    t = np.arange(w.shape[1], dtype=np.float64) - (w.shape[1] - 1) / 2.0
    return (w - w.mean(axis=1, keepdims=True)) @ t / float((t * t).sum())


def window_features(windows: np.ndarray) -> np.ndarray:
    """``windows`` [N, WINDOW, 4] (or one [WINDOW, 4]) -> [N, len(FEATURES)] float32."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    co2, temp, rh, light = (w[:, :, i] for i in range(4))
    feats = np.stack([
        co2[:, -1],
        _slope(co2[:, -5:]),
        _slope(co2),
        co2[:, -1] - co2.min(axis=1),
        _slope(co2[:, -5:]) - _slope(co2[:, :5]),
        _slope(temp) * 60.0,
        _slope(rh) * 60.0,
        light[:, -1],
        light[:, -1] - light[:, 0],
        light.min(axis=1),
    ], axis=1)
    return feats.astype(np.float32)


def every_minute(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The windows ending at every minute from the ``WINDOW``-th: (windows [N, WINDOW, 4], end index)."""
    view = np.lib.stride_tricks.sliding_window_view(values, WINDOW, axis=0)
    return np.transpose(view, (0, 2, 1)), np.arange(WINDOW - 1, len(values))
