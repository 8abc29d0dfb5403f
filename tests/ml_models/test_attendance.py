"""The attendance checks' models: shipped files and checksums, the evaluation's verdict on a fresh seed, the
simulator's labels, and (slow) byte-identical retraining."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edugate.gateway.inference import load, load_manifest
from edugate.ml_models.attendance import train
from edugate.ml_models.attendance.checks import head_samples, into_period_min, untapped_excess
from edugate.ml_models.attendance.simulate import PERIODS, school_day
from edugate.ml_models.metrics import prf
from tests.helpers import REPO

FOLDER = REPO / "ml_models" / "attendance"
FRESH_SEED, FRESH_DAYS = 5, 4


def test_the_shipped_files_match_their_manifest_and_load_in_the_gateway() -> None:
    specs = load_manifest(FOLDER / "manifest.json")
    listed = dict(reversed(line.split("  ")) for line in (FOLDER / "MODEL.sha256").read_text().splitlines())
    assert listed == {s.file.name: s.sha256 for s in specs.values()}
    for spec in specs.values():
        assert hashlib.sha256(spec.file.read_bytes()).hexdigest() == spec.sha256
        assert spec.meta["score_output"] in load(spec).outputs
    evaluation = json.loads((FOLDER / "evaluation.json").read_text())
    assert evaluation["ships"] == {name: spec.meta["ships"] for name, spec in specs.items()}
    card = (FOLDER / "MODEL_CARD.md").read_text()
    for heading in ("## Data", "## Method", "## Metrics", "## Limits", "## Licence"):
        assert heading in card


def _model(name: str, x: np.ndarray) -> np.ndarray:
    spec = load_manifest(FOLDER / "manifest.json")[name]
    proba = ort.InferenceSession(str(spec.file)).run([spec.meta["score_output"]], {"features": x})[0]
    return np.asarray(proba[:, 1] >= spec.meta["threshold"])


def test_the_shipped_models_still_beat_their_rules_on_fresh_days() -> None:
    days = [school_day(FRESH_SEED, d) for d in range(FRESH_DAYS)]
    rules = {name: spec.meta["rule"] for name, spec in load_manifest(FOLDER / "manifest.json").items()}
    x, y, excess, camera = train.untapped_rows(days)
    model_f1 = prf(y, _model("attendance-untapped-heads", x))["f1"]
    rule_f1 = prf(y, train.untapped_rule_predict(excess, camera, rules["attendance-untapped-heads"]))["f1"]
    assert model_f1 > rule_f1 > 0.3
    sx, sy, _ = train.sharing_rows(days)
    limits = rules["attendance-card-shared"]
    model_f1 = prf(sy, _model("attendance-card-shared", sx))["f1"]
    rule_f1 = prf(sy, train._sharing_predict(sx, limits["max_speed_mps"], limits["min_distance_m"]))["f1"]
    assert model_f1 > rule_f1 + 0.2 and rule_f1 > 0.2


def test_the_simulated_labels_are_what_they_say() -> None:
    day = school_day(FRESH_SEED, 0)
    assert all(rp.label == (rp.untapped >= 3) for rp in day.room_periods)
    positives = [rp for rp in day.room_periods if rp.label]
    assert 0.05 < len(positives) / len(day.room_periods) < 0.3
    cameras = [rp for rp in positives if rp.heads == "camera"]  # a camera sees the gap
    gaps = [untapped_excess(rp.taps, head_samples(rp.readings, rp.start_s, rp.end_s), 1.0) for rp in cameras]
    assert np.median([g for g in gaps if g is not None]) >= 2
    kinds = {p.kind for p in day.pairs if p.label}
    assert kinds <= {"cloned", "handed"} and {p.kind for p in day.pairs if not p.label} >= {"wrong_door", "moved"}
    assert into_period_min(PERIODS[1][0] - 60, PERIODS, 15 * 60) == -1.0


@pytest.mark.slow
def test_training_is_reproducible(tmp_path: Path) -> None:
    result = train.evaluate(tmp_path)
    assert result["ships"] == json.loads((FOLDER / "evaluation.json").read_text())["ships"]
    for onnx in ("untapped_heads.onnx", "card_shared.onnx"):
        assert (tmp_path / onnx).read_bytes() == (FOLDER / onnx).read_bytes(), f"{onnx} differs"
