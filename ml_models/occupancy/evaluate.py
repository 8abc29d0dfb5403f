"""Evaluate the shipped occupancy models (through onnxruntime) against the threshold baseline.

    python -m edugate.ml_models.occupancy.evaluate   # rewrites evaluation.json and the manifest's ``ships``

Held-out data: new simulated rooms (seed :data:`EVAL_SEED`), every school-day minute (06:30-17:30). Occupied:
precision, recall, F1, accuracy, and the delay from a class's arrival to the first "occupied" minute. Head count:
mean absolute error over all minutes and over occupied ones, and the share of minutes within ±3 people.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from edugate.ml_models.metrics import prf
from edugate.ml_models.occupancy import baseline
from edugate.ml_models.occupancy.data import rooms
from edugate.ml_models.occupancy.samples import dataset
from edugate.ml_models.packaging import write_manifest

HERE: Final = Path(__file__).resolve().parent
EVAL_SEED: Final = 7
EVAL_ROOMS, EVAL_DAYS = 12, 3


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict(folder: Path, entries: dict[str, dict[str, Any]], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(occupied, people) as the gateway's stage computes them from the two models."""
    occ, cnt = entries["occupancy-occupied"], entries["occupancy-head-count"]
    proba = _session(folder / occ["file"]).run([occ["score_output"]], {occ["inputs"][0]["name"]: x})[0]
    is_occupied = proba[:, occ["positive_class"]] >= occ["threshold"]
    count = _session(folder / cnt["file"]).run([cnt["score_output"]], {cnt["inputs"][0]["name"]: x})[0].reshape(-1)
    return is_occupied, np.where(is_occupied, np.clip(np.round(count), 0, None), 0)


def _arrival_delays(truth: np.ndarray, predicted: np.ndarray) -> list[float]:
    """Minutes from each arrival (empty -> occupied in the truth) to the first predicted occupied minute."""
    arrivals = np.flatnonzero(truth[1:] & ~truth[:-1]) + 1
    delays = []
    for a in arrivals:
        hits = np.flatnonzero(predicted[a:a + 45])
        delays.append(float(hits[0]) if len(hits) else 45.0)
    return delays


def scores(truth_people: np.ndarray, is_occupied: np.ndarray, people: np.ndarray) -> dict[str, Any]:
    truth = truth_people > 0
    err = np.abs(people - truth_people)
    delays = _arrival_delays(truth, is_occupied)
    return {
        "occupied": {**prf(truth, is_occupied), "accuracy": round(float((truth == is_occupied).mean()), 4),
                     "median_arrival_delay_min": float(np.median(delays))},
        "head_count": {"mae": round(float(err.mean()), 3), "mae_when_occupied": round(float(err[truth].mean()), 3),
                       "within_3": round(float((err <= 3).mean()), 4)},
    }


def evaluate(folder: Path, entries: dict[str, dict[str, Any]], seed: int = EVAL_SEED,
             count: int = EVAL_ROOMS, days: int = EVAL_DAYS) -> dict[str, Any]:
    x, people = dataset(rooms(seed, count, days))
    model = scores(people, *predict(folder, entries, x))
    base_params = entries["occupancy-occupied"]["baseline"]
    base_occ = baseline.occupied(x, base_params["co2_limit"], base_params["rise_limit"])
    base = scores(people, base_occ, baseline.head_count(x, base_occ))
    ships = (model["occupied"]["f1"] > base["occupied"]["f1"], model["head_count"]["mae"] < base["head_count"]["mae"])
    return {"held_out_seed": seed, "rooms": count, "days": days, "minutes": len(people),
            "model": model, "baseline": base,
            "ships": {"occupancy-occupied": ships[0], "occupancy-head-count": ships[1]}}


def evaluate_folder(folder: Path, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    result = evaluate(folder, entries)
    for name, entry in entries.items():
        entry["ships"] = result["ships"][name]
    (folder / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    write_manifest(folder, entries)
    return result


def main() -> None:
    evaluate_folder(HERE, json.loads((HERE / "manifest.json").read_text())["models"])


if __name__ == "__main__":
    main()
