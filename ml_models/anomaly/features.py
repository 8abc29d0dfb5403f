"""Window features of a device's readings: what the anomaly model sees (numpy only: the gateway imports it).

A window is the last :data:`WINDOW` readings of one device, one column per channel (oldest first). Each channel
gives :data:`PER_CHANNEL` numbers; the feature vector is those numbers channel after channel. The order is part of
the model's contract (``feature_names`` in the manifest).
"""

from __future__ import annotations

from typing import Final

import numpy as np

WINDOW: Final = 30  # readings (minutes at one reading a minute)
STRIDE: Final = 5  # readings between two windows the model scores
PER_CHANNEL: Final = ("mean", "std", "min", "max", "slope", "mean_abs_diff", "max_abs_diff", "flat_share", "last_dev")


def feature_names(channels: tuple[str, ...] | list[str]) -> list[str]:
    return [f"{ch}.{f}" for ch in channels for f in PER_CHANNEL]


def window_features(windows: np.ndarray) -> np.ndarray:
    """``windows`` [N, W, C] (or one window [W, C]) -> features [N, C * len(PER_CHANNEL)] as float32."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    n, length, channels = w.shape
    diff = np.diff(w, axis=1)
    t = np.arange(length, dtype=np.float64) - (length - 1) / 2.0
    mean = w.mean(axis=1)
    slope = np.einsum("t,ntc->nc", t, w - mean[:, None, :]) / float((t * t).sum())
    feats = np.stack(
        [
            mean,
            w.std(axis=1),
            w.min(axis=1),
            w.max(axis=1),
            slope,
            np.abs(diff).mean(axis=1),
            np.abs(diff).max(axis=1),
            (diff == 0.0).mean(axis=1),
            w[:, -1, :] - mean,
        ],
        axis=2,
    )  # [N, C, F]
    return feats.reshape(n, channels * len(PER_CHANNEL)).astype(np.float32)


def sliding_windows(values: np.ndarray, window: int = WINDOW, stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """All windows of a series [T, C] every ``stride`` readings: (windows [N, W, C], index of each window's end)."""
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # [T-W+1, C, W]
    ends = np.arange(window - 1, len(values), stride)
    return np.transpose(view[ends - window + 1], (0, 2, 1)), ends
