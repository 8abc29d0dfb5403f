"""Train the equipment-anomaly models (one per device kind) on normal behaviour only, and export them to ONNX.

    python -m edugate.ml_models.anomaly.train            # writes <kind>.onnx, manifest.json, MODEL.sha256,
                                                          # evaluation.json next to this file
    python -m edugate.ml_models.anomaly.train --out DIR  # somewhere else

Method: window features (``features.py``) -> StandardScaler -> a Gaussian mixture (:data:`COMPONENTS` full
covariances; the score is the log-likelihood of a window), fitted on simulated normal devices (seed
:data:`TRAIN_SEED`); the alarm threshold is the score that flags :data:`FALSE_ALARM_RATE` of the windows of other
normal devices (seed :data:`CALIBRATION_SEED`). The baseline is calibrated on the same windows.
Deterministic: fixed seeds, ``random_state``; the same library versions give the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Final

import numpy as np
from onnx import ModelProto
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from edugate.ml_models.anomaly import baseline
from edugate.ml_models.anomaly.data import KINDS, Episode, normal_fleet
from edugate.ml_models.anomaly.evaluate import evaluate_folder
from edugate.ml_models.anomaly.features import STRIDE, WINDOW, feature_names, sliding_windows, window_features
from edugate.ml_models.metrics import threshold_for
from edugate.ml_models.packaging import stable_bytes

HERE: Final = Path(__file__).resolve().parent
VERSION: Final = "2026.12.0"
TRAIN_SEED: Final = 1
CALIBRATION_SEED: Final = 2
FALSE_ALARM_RATE: Final = 0.002  # of normal windows
TRAIN_DEVICES, TRAIN_DAYS = 16, 3.0
CALIBRATION_DEVICES, CALIBRATION_DAYS = 12, 3.0
INPUT: Final = "features"
SCORE_OUTPUT: Final = "score_samples"  # GaussianMixture.score_samples (log-likelihood): lower = more anomalous
COMPONENTS: Final = 6


def fleet_features(episodes: list[Episode]) -> np.ndarray:
    return np.concatenate([window_features(sliding_windows(e.values)[0]) for e in episodes])


def fit(kind: str) -> Pipeline:
    x = fleet_features(normal_fleet(TRAIN_SEED, kind, TRAIN_DEVICES, TRAIN_DAYS))
    model = Pipeline([
        ("scale", StandardScaler()),
        ("mixture", GaussianMixture(COMPONENTS, covariance_type="full", reg_covar=1e-2, random_state=0)),
    ])
    with threadpool_limits(1):  # one BLAS thread: the same sums in the same order, and no spinning on a busy box
        return model.fit(x)


def export(model: Pipeline, n_features: int) -> ModelProto:
    onx = to_onnx(model, initial_types=[(INPUT, FloatTensorType([None, n_features]))],
                  target_opset={"": 17, "ai.onnx.ml": 3}, options={GaussianMixture: {"score_samples": True}})
    onx.producer_name, onx.producer_version, onx.doc_string = "edugate", VERSION, "edugate equipment anomaly"
    return onx


def calibration(kind: str, score: Any) -> dict[str, Any]:
    """Both alarm thresholds, from the same normal windows. ``score``: features -> model scores."""
    model_scores, base_scores = [], []
    episodes = normal_fleet(CALIBRATION_SEED, kind, CALIBRATION_DEVICES, CALIBRATION_DAYS)
    floors = baseline.std_floors([e.values for e in episodes])
    for e in episodes:
        windows, ends = sliding_windows(e.values)
        model_scores.append(-score(window_features(windows)))
        base_scores.append(baseline.window_scores(e.values, ends, WINDOW, floors))
    return {
        "baseline_std_floors": [round(float(f), 6) for f in floors],
        "model_threshold": -threshold_for(np.concatenate(model_scores), FALSE_ALARM_RATE),
        "baseline_threshold": threshold_for(np.concatenate(base_scores), FALSE_ALARM_RATE),
    }


def manifest_entry(kind: str, file: str, thresholds: dict[str, Any]) -> dict[str, Any]:
    channels = list(KINDS[kind].channels)
    names = feature_names(channels)
    return {
        "file": file,
        "version": VERSION,
        "task": "anomaly",
        "device_kind": kind,
        "inputs": [{"name": INPUT, "dtype": "float32", "shape": [None, len(names)]}],
        "score_output": SCORE_OUTPUT,
        "alarm_when": "below",
        "threshold": round(thresholds["model_threshold"], 6),
        "baseline": {"z_threshold": round(thresholds["baseline_threshold"], 4), "history": baseline.HISTORY,
                     "std_floors": thresholds["baseline_std_floors"]},
        "channels": channels,
        "feature_names": names,
        "window": WINDOW,
        "stride": STRIDE,
    }


def train(out: Path) -> dict[str, dict[str, Any]]:
    """Train, export and calibrate every kind into ``out``; returns the manifest entries (without checksums)."""
    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for kind in KINDS:
        model = fit(kind)
        n_features = len(feature_names(list(KINDS[kind].channels)))
        file = f"{kind}.onnx"
        (out / file).write_bytes(stable_bytes(export(model, n_features)))
        thresholds = calibration(kind, lambda x, m=model: m.score_samples(x))
        entries[f"anomaly-{kind}"] = manifest_entry(kind, file, thresholds)
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    evaluate_folder(args.out, train(args.out))


if __name__ == "__main__":
    main()
