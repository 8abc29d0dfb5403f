"""Scoring helpers shared by the models' evaluations (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def threshold_for(normal_scores: np.ndarray, false_alarm_rate: float) -> float:
    """The alarm threshold that flags ``false_alarm_rate`` of normal windows (higher score = more anomalous)."""
    return float(np.quantile(np.asarray(normal_scores, dtype=np.float64), 1.0 - false_alarm_rate))


def prf(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float | int]:
    """Precision, recall and F1 of boolean predictions, with the counts they come from."""
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "tp": tp, "fp": fp, "fn": fn}


def delay_summary(delays: list[float | None]) -> dict[str, Any]:
    """Detection delays (minutes from fault start to the first alarm; None = never detected)."""
    found = [d for d in delays if d is not None]
    return {
        "detected": f"{len(found)}/{len(delays)}",
        "detection_rate": round(len(found) / len(delays), 4) if delays else 0.0,
        "median_delay_min": round(float(np.median(found)), 1) if found else None,
        "p90_delay_min": round(float(np.quantile(found, 0.9)), 1) if found else None,
    }
