"""Train the room-occupancy models and export them to ONNX.

    python -m edugate.ml_models.occupancy.train            # writes occupied.onnx, head_count.onnx,
                                                            # manifest.json, MODEL.sha256, evaluation.json here

Two gradient-boosted tree models on the window features (``features.py``) of simulated classrooms (seed
:data:`TRAIN_SEED`): ``occupancy-occupied`` (classifier: is anyone in) and ``occupancy-head-count`` (regressor).
The stage reports ``people = round(head count)`` when the classifier says occupied, else 0. The baseline's two
limits are tuned on the same rooms. Deterministic (fixed seeds and ``random_state``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Final

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from threadpoolctl import threadpool_limits

from edugate.ml_models.occupancy import baseline
from edugate.ml_models.occupancy.data import CHANNELS, rooms
from edugate.ml_models.occupancy.evaluate import evaluate_folder
from edugate.ml_models.occupancy.features import FEATURES, WINDOW
from edugate.ml_models.occupancy.samples import dataset
from edugate.ml_models.packaging import stable_bytes

HERE: Final = Path(__file__).resolve().parent
VERSION: Final = "2026.12.0"
TRAIN_SEED: Final = 1
TRAIN_ROOMS, TRAIN_DAYS = 24, 3
INPUT: Final = "features"


def export(model: Any, name: str) -> bytes:
    options = {id(model): {"zipmap": False}} if hasattr(model, "classes_") else None
    onx = to_onnx(model, initial_types=[(INPUT, FloatTensorType([None, len(FEATURES)]))],
                  target_opset={"": 17, "ai.onnx.ml": 3}, options=options)
    onx.producer_name, onx.producer_version, onx.doc_string = "edugate", VERSION, f"edugate {name}"
    return stable_bytes(onx)


def entry(file: str, output: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "file": file,
        "version": VERSION,
        "task": "occupancy",
        "inputs": [{"name": INPUT, "dtype": "float32", "shape": [None, len(FEATURES)]}],
        "score_output": output,
        "channels": list(CHANNELS),
        "feature_names": list(FEATURES),
        "window": WINDOW,
        "stride": 1,
        **extra,
    }


def train(out: Path) -> dict[str, dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    x, people = dataset(rooms(TRAIN_SEED, TRAIN_ROOMS, TRAIN_DAYS))
    occupied = people > 0
    clf = GradientBoostingClassifier(n_estimators=80, max_depth=3, random_state=0)
    reg = GradientBoostingRegressor(n_estimators=80, max_depth=4, random_state=0)
    with threadpool_limits(1):
        clf.fit(x, occupied.astype(np.int64))  # integer classes: skl2onnx cannot export boolean ones
        reg.fit(x, people)
    (out / "occupied.onnx").write_bytes(export(clf, "occupancy-occupied"))
    (out / "head_count.onnx").write_bytes(export(reg, "occupancy-head-count"))
    co2_limit, rise_limit = baseline.tune(x, occupied)
    base = {"co2_limit": co2_limit, "rise_limit": rise_limit, "nominal_volume_m3": baseline.NOMINAL_VOLUME_M3,
            "nominal_ach": baseline.NOMINAL_ACH}
    return {
        "occupancy-occupied": entry("occupied.onnx", "probabilities", {"positive_class": 1, "threshold": 0.5,
                                                                        "baseline": base}),
        "occupancy-head-count": entry("head_count.onnx", "variable", {"baseline": base}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    evaluate_folder(args.out, train(args.out))


if __name__ == "__main__":
    main()
