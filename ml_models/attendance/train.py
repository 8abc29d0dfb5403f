"""Tune the attendance-check rules, train the competing classifiers, and score both on held-out school days.

    python -m edugate.ml_models.attendance.train      # writes evaluation.json, untapped_heads.onnx,
                                                      # card_shared.onnx, manifest.json, MODEL.sha256 here

Data: :mod:`simulate` school days, :data:`TRAIN_DAYS` with seed :data:`TRAIN_SEED` (tuning and training) and
:data:`HELD_OUT_DAYS` with seed :data:`HELD_OUT_SEED` (scoring only). Both contenders see exactly what the
gateway sees (``checks.py``):

- untapped heads, per room and period with a head source: the rule (median heads - staff - taps >= a limit
  per source; limits tuned for F1 on the training days) against a gradient-boosted classifier on
  ``UNTAPPED_FEATURES``;
- card sharing, per pair of taps of one card in two rooms within 30 minutes: the rule (speed > limit, rooms at
  least a distance apart; tuned) against a gradient-boosted classifier on ``SHARING_FEATURES``.

A classifier's decision threshold is chosen on the training days (best F1), like the rule's limits. Both
classifiers are exported; the manifest marks each ``"ships": true`` only if it beat its rule on the held-out
days (the gateway then runs it; otherwise, and whenever it cannot load it, the rule with the tuned limits,
which the manifest carries as ``rule``). Deterministic (fixed seeds and ``random_state``).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Final

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier
from threadpoolctl import threadpool_limits

from edugate.ml_models.attendance.checks import (
    SHARING_FEATURES,
    UNTAPPED_FEATURES,
    head_samples,
    sharing_features,
    sharing_rule,
    untapped_excess,
    untapped_features,
)
from edugate.ml_models.attendance.simulate import UNTAPPED_LABEL, Day, school_days
from edugate.ml_models.metrics import prf
from edugate.ml_models.packaging import stable_bytes, write_manifest

HERE: Final = Path(__file__).resolve().parent
VERSION: Final = "2026.12.0"
TRAIN_SEED, TRAIN_DAYS = 1, 20
HELD_OUT_SEED, HELD_OUT_DAYS = 2, 10
STAFF: Final = 1.0  # heads expected besides the students: the teacher
INPUT: Final = "features"


def untapped_rows(days: list[Day]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels, excess and camera flag of the room-periods with at least one head sample."""
    feats, labels, excess, camera = [], [], [], []
    for day in days:
        for rp in day.room_periods:
            cam = rp.heads == "camera"
            samples = head_samples(rp.readings, rp.start_s, rp.end_s, camera=cam)
            value = untapped_excess(rp.taps, samples, STAFF)
            if value is None:
                continue
            feats.append(untapped_features(rp.taps, samples, cam, STAFF))
            labels.append(rp.label)
            excess.append(value)
            camera.append(cam)
    return np.array(feats, dtype=np.float32), np.array(labels), np.array(excess), np.array(camera)


def sharing_rows(days: list[Day]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    feats, labels, kinds = [], [], []
    for day in days:
        for pair in day.pairs:
            feats.append(sharing_features(pair.distance, pair.seconds, pair.floors, *pair.into_period_min))
            labels.append(pair.label)
            kinds.append(pair.kind)
    return np.array(feats, dtype=np.float32), np.array(labels), kinds


def best_threshold(truth: np.ndarray, scores: np.ndarray) -> float:
    candidates = np.unique(np.round(scores, 3))
    return float(max(candidates, key=lambda t: (prf(truth, scores >= t)["f1"], -t)))


def tune_untapped(excess: np.ndarray, camera: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    grid = np.arange(1.0, 15.5, 0.5)
    cam, est = max(itertools.product(grid, grid), key=lambda lim: (
        prf(truth, np.where(camera, excess >= lim[0], excess >= lim[1]))["f1"], -lim[0], -lim[1]))
    return {"min_excess_camera": float(cam), "min_excess_estimate": float(est)}


def untapped_rule_predict(excess: np.ndarray, camera: np.ndarray, limits: dict[str, float]) -> np.ndarray:
    return np.where(camera, excess >= limits["min_excess_camera"], excess >= limits["min_excess_estimate"])


def tune_sharing(x: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    speeds = np.arange(0.5, 6.01, 0.25)
    distances = np.arange(0.0, 101.0, 10.0)
    best = max(itertools.product(speeds, distances), key=lambda sd: (
        prf(truth, _sharing_predict(x, sd[0], sd[1]))["f1"], sd[0], sd[1]))
    return {"max_speed_mps": float(best[0]), "min_distance_m": float(best[1])}


def _sharing_predict(x: np.ndarray, speed: float, distance: float) -> np.ndarray:
    return np.array([sharing_rule(float(r[0]), float(r[1]), speed, distance) for r in x], dtype=bool)


def _classifier(x: np.ndarray, y: np.ndarray) -> GradientBoostingClassifier:
    clf = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=0)
    with threadpool_limits(1):
        clf.fit(x, y.astype(np.int64))
    return clf


def _by(groups: np.ndarray | list[str], truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    g = np.asarray(groups)
    return {str(k): {"cases": int((g == k).sum()), "flagged": int(predicted[g == k].sum()),
                     "positives": int(truth[g == k].sum())} for k in sorted(set(g.tolist()))}


def export(model: GradientBoostingClassifier, name: str, width: int) -> bytes:
    onx = to_onnx(model, initial_types=[(INPUT, FloatTensorType([None, width]))],
                  target_opset={"": 17, "ai.onnx.ml": 3}, options={id(model): {"zipmap": False}})
    onx.producer_name, onx.producer_version, onx.doc_string = "edugate", VERSION, f"edugate {name}"
    return stable_bytes(onx)


def entry(file: str, features: tuple[str, ...], threshold: float, rule: dict[str, float],
          ships: bool) -> dict[str, Any]:
    return {"file": file, "version": VERSION, "task": "attendance",
            "inputs": [{"name": INPUT, "dtype": "float32", "shape": [None, len(features)]}],
            "score_output": "probabilities", "positive_class": 1, "threshold": threshold,
            "feature_names": list(features), "rule": rule, "ships": ships}


def evaluate(out: Path | None = None) -> dict[str, Any]:
    """Tune, train and score; with ``out``, also write the two models and their manifest there."""
    train, held = school_days(TRAIN_SEED, TRAIN_DAYS), school_days(HELD_OUT_SEED, HELD_OUT_DAYS)
    result: dict[str, Any] = {"version": VERSION, "train": {"seed": TRAIN_SEED, "days": TRAIN_DAYS},
                              "held_out": {"seed": HELD_OUT_SEED, "days": HELD_OUT_DAYS},
                              "untapped_label": f"{UNTAPPED_LABEL} or more students in the room without a tap",
                              "staff": STAFF}
    # untapped heads
    x, y, excess, camera = untapped_rows(train)
    hx, hy, hexcess, hcamera = untapped_rows(held)
    limits = tune_untapped(excess, camera, y)
    clf = _classifier(x, y)
    threshold = best_threshold(y, clf.predict_proba(x)[:, 1])
    rule_pred = untapped_rule_predict(hexcess, hcamera, limits)
    model_pred = clf.predict_proba(hx)[:, 1] >= threshold
    source = np.where(hcamera, "camera", "estimate")
    result["untapped_heads"] = {
        "cases": {"train": len(y), "train_positive": int(y.sum()), "held_out": len(hy),
                  "held_out_positive": int(hy.sum())},
        "rule": {"params": limits, **prf(hy, rule_pred), "by_source": {
            s: prf(hy[source == s], rule_pred[source == s]) for s in ("camera", "estimate")}},
        "model": {"kind": "GradientBoostingClassifier(60 trees, depth 3)", "features": list(UNTAPPED_FEATURES),
                  "threshold": round(threshold, 3), **prf(hy, model_pred), "by_source": {
                      s: prf(hy[source == s], model_pred[source == s]) for s in ("camera", "estimate")}},
    }
    # card sharing
    sx, sy, _ = sharing_rows(train)
    hsx, hsy, kinds = sharing_rows(held)
    params = tune_sharing(sx, sy)
    sclf = _classifier(sx, sy)
    sthreshold = best_threshold(sy, sclf.predict_proba(sx)[:, 1])
    srule = _sharing_predict(hsx, params["max_speed_mps"], params["min_distance_m"])
    smodel = sclf.predict_proba(hsx)[:, 1] >= sthreshold
    result["card_shared"] = {
        "cases": {"train_pairs": len(sy), "train_shared": int(sy.sum()), "held_out_pairs": len(hsy),
                  "held_out_shared": int(hsy.sum())},
        "rule": {"params": params, **prf(hsy, srule), "by_kind": _by(kinds, hsy, srule)},
        "model": {"kind": "GradientBoostingClassifier(60 trees, depth 3)", "features": list(SHARING_FEATURES),
                  "threshold": round(sthreshold, 3), **prf(hsy, smodel), "by_kind": _by(kinds, hsy, smodel)},
    }
    result["winner"] = {check: ("model" if result[check]["model"]["f1"] > result[check]["rule"]["f1"] else "rule")
                        for check in ("untapped_heads", "card_shared")}
    result["ships"] = {f"attendance-{check.replace('_', '-')}": result["winner"][check] == "model"
                       for check in ("untapped_heads", "card_shared")}
    if out is not None:
        (out / "untapped_heads.onnx").write_bytes(export(clf, "attendance-untapped-heads", len(UNTAPPED_FEATURES)))
        (out / "card_shared.onnx").write_bytes(export(sclf, "attendance-card-shared", len(SHARING_FEATURES)))
        write_manifest(out, {
            "attendance-untapped-heads": entry("untapped_heads.onnx", UNTAPPED_FEATURES, round(threshold, 3),
                                               {**limits, "staff": STAFF},
                                               result["ships"]["attendance-untapped-heads"]),
            "attendance-card-shared": entry("card_shared.onnx", SHARING_FEATURES, round(sthreshold, 3), params,
                                            result["ships"]["attendance-card-shared"])})
    return result


def main() -> None:
    result = evaluate(HERE)
    (HERE / "evaluation.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    for check in ("untapped_heads", "card_shared"):
        r = result[check]
        print(f"{check}: rule F1 {r['rule']['f1']} (P {r['rule']['precision']}, R {r['rule']['recall']}) "
              f"model F1 {r['model']['f1']} (P {r['model']['precision']}, R {r['model']['recall']}) "
              f"-> the gateway runs the {result['winner'][check]}")


if __name__ == "__main__":
    main()
