"""Evaluate the shipped anomaly models (the ``.onnx`` files, through onnxruntime) against the baseline.

    python -m edugate.ml_models.anomaly.evaluate          # re-evaluates the folder's models, rewrites
                                                           # evaluation.json and the manifest's ``ships``

Held-out data: new simulated devices (seed :data:`EVAL_SEED`, never used in training or calibration), per
device kind :data:`PER_FAULT` one-day episodes of every fault it can have and as many normal ones. A window is
positive when a fault acts on one of its readings. Per fault type: window precision/recall/F1 over that fault's
episodes (their normal hours give the false alarms), and the detection delay (minutes from the fault's start to
the first alarm). A kind's model ships (``ships`` in the manifest) only when its mean F1 over the faults beats
the baseline's; ``evaluation.json`` says per fault which one wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from edugate.ml_models.anomaly import baseline
from edugate.ml_models.anomaly.data import KINDS, MINUTES_PER_DAY, Episode, faulty_fleet
from edugate.ml_models.anomaly.features import WINDOW, sliding_windows, window_features
from edugate.ml_models.metrics import delay_summary, prf
from edugate.ml_models.packaging import write_manifest

HERE: Final = Path(__file__).resolve().parent
EVAL_SEED: Final = 7
PER_FAULT: Final = 30

Scorer = Callable[[Episode], tuple[np.ndarray, np.ndarray, np.ndarray]]  # -> (alarms, truth, ends)


def onnx_scorer(path: Path, entry: dict[str, Any]) -> Scorer:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name, out, threshold = entry["inputs"][0]["name"], entry["score_output"], entry["threshold"]

    def score(e: Episode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        windows, ends = sliding_windows(e.values)
        scores = session.run([out], {name: window_features(windows)})[0].reshape(-1)
        return scores < threshold, _truth(e, ends), ends

    return score


def baseline_scorer(entry: dict[str, Any]) -> Scorer:
    params = entry["baseline"]
    floors = np.asarray(params["std_floors"])

    def score(e: Episode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, ends = sliding_windows(e.values)
        return baseline.window_scores(e.values, ends, WINDOW, floors) > params["z_threshold"], _truth(e, ends), ends

    return score


def _truth(e: Episode, ends: np.ndarray) -> np.ndarray:
    active = np.concatenate([[0], np.cumsum(e.active)])
    return (active[ends + 1] - active[ends + 1 - WINDOW]) > 0


def _delay(e: Episode, alarms: np.ndarray, ends: np.ndarray) -> float | None:
    assert e.start is not None
    hits = ends[(ends >= e.start) & alarms]
    return float(hits[0] - e.start) if len(hits) else None


def score_fault(episodes: list[Episode], scorer: Scorer) -> dict[str, Any]:
    alarms, truth, delays = [], [], []
    for e in episodes:
        a, t, ends = scorer(e)
        alarms.append(a)
        truth.append(t)
        delays.append(_delay(e, a, ends))
    return {**prf(np.concatenate(truth), np.concatenate(alarms)), **delay_summary(delays)}


def false_alarms_per_day(episodes: list[Episode], scorer: Scorer) -> float:
    alarms = sum(int(scorer(e)[0].sum()) for e in episodes)
    days = sum(len(e.values) for e in episodes) / MINUTES_PER_DAY
    return round(alarms / days, 3)


def winner(model: dict[str, Any], base: dict[str, Any]) -> str:
    if abs(model["f1"] - base["f1"]) < 0.02:
        return "tie"
    return "model" if model["f1"] > base["f1"] else "baseline"


def evaluate_kind(folder: Path, entry: dict[str, Any], seed: int, per_fault: int) -> dict[str, Any]:
    kind = entry["device_kind"]
    episodes = faulty_fleet(seed, kind, per_fault)
    model, base = onnx_scorer(folder / entry["file"], entry), baseline_scorer(entry)
    faults: dict[str, Any] = {}
    for fault in KINDS[kind].faults:
        chosen = [e for e in episodes if e.fault == fault]
        m, b = score_fault(chosen, model), score_fault(chosen, base)
        faults[fault] = {"model": m, "baseline": b, "winner": winner(m, b)}
    normal = [e for e in episodes if e.fault is None]
    mean_f1 = {who: round(float(np.mean([f[who]["f1"] for f in faults.values()])), 4) for who in ("model", "baseline")}
    return {
        "faults": faults,
        "mean_f1": mean_f1,
        "false_alarms_per_device_day": {"model": false_alarms_per_day(normal, model),
                                        "baseline": false_alarms_per_day(normal, base)},
        "ships": mean_f1["model"] > mean_f1["baseline"],
    }


def evaluate(folder: Path, entries: dict[str, dict[str, Any]], seed: int = EVAL_SEED,
             per_fault: int = PER_FAULT) -> dict[str, Any]:
    return {
        "held_out_seed": seed,
        "episodes_per_fault": per_fault,
        "episode_days": 1,
        "models": {name: evaluate_kind(folder, entry, seed, per_fault) for name, entry in entries.items()},
    }


def evaluate_folder(folder: Path, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Evaluate, then write ``evaluation.json`` and the manifest (with ``ships``) into ``folder``."""
    result = evaluate(folder, entries)
    for name, entry in entries.items():
        entry["ships"] = result["models"][name]["ships"]
    (folder / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    write_manifest(folder, entries)
    return result


def main() -> None:
    manifest = json.loads((HERE / "manifest.json").read_text())
    evaluate_folder(HERE, manifest["models"])


if __name__ == "__main__":
    main()
