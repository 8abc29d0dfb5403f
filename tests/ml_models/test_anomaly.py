"""The equipment-anomaly models: the simulator labels its faults, training is deterministic, and the shipped
models still beat the baseline on devices they have never seen (a fresh seed)."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from edugate.ml_models.anomaly import evaluate, train
from edugate.ml_models.anomaly.data import KINDS, episode, faulty_fleet
from edugate.ml_models.anomaly.features import WINDOW, feature_names, sliding_windows, window_features
from edugate.ml_models.packaging import stable_bytes
from tests.helpers import REPO

FOLDER = REPO / "ml_models" / "anomaly"
MANIFEST = json.loads((FOLDER / "manifest.json").read_text())["models"]
SHIPPED = json.loads((FOLDER / "evaluation.json").read_text())["models"]


def test_faults_are_labelled_from_their_start() -> None:
    rng = np.random.default_rng(0)
    for fault in ("drift", "stuck", "compressor_failure", "door_open"):
        e = episode(rng, "fridge", fault, days=1.0, start=600)
        assert not e.active[:600].any() and e.active[600:].all()
    stuck = episode(rng, "fridge", "stuck", days=1.0, start=600)
    assert np.ptp(stuck.values[600:, 0]) == 0.0
    spikes = episode(rng, "projector", "spikes", days=1.0, start=600)
    assert 0 < spikes.active.sum() < 100 and not spikes.active[:600].any()
    with pytest.raises(ValueError, match="does not apply to 'projector'"):
        episode(rng, "projector", "door_open")


def test_door_left_open_warms_the_fridge_and_runs_the_compressor() -> None:
    e = episode(np.random.default_rng(3), "fridge", "door_open", days=1.0, start=700)
    before, after = e.values[400:700], e.values[760:900]
    assert after[:, 0].mean() > before[:, 0].mean() + 3.0
    assert (after[:, 1] > 50).mean() > 0.95 > (before[:, 1] > 50).mean()


def test_window_features_have_the_manifest_order() -> None:
    e = episode(np.random.default_rng(1), "projector", None, days=0.2)
    windows, ends = sliding_windows(e.values)
    feats = window_features(windows)
    assert feats.shape == (len(ends), len(MANIFEST["anomaly-projector"]["feature_names"]))
    assert MANIFEST["anomaly-projector"]["feature_names"] == feature_names(KINDS["projector"].channels)
    assert np.allclose(feats[3], window_features(e.values[ends[3] - WINDOW + 1:ends[3] + 1])[0])


def test_training_is_deterministic() -> None:
    kind = "fume_hood"
    n = len(feature_names(KINDS[kind].channels))
    first = stable_bytes(train.export(train.fit(kind), n))
    second = stable_bytes(train.export(train.fit(kind), n))
    assert first == second
    shipped = MANIFEST[f"anomaly-{kind}"]
    if any(version(lib) != v for lib, v in shipped["trained_with"].items()):
        pytest.skip(f"the shipped model was made with {shipped['trained_with']}: other library versions")
    made = (FOLDER / shipped["file"]).read_bytes()
    if first == made:
        return
    # the same versions on another CPU may round the last bits differently (its BLAS kernels): then the model
    # retrained here must score like the shipped one
    import onnxruntime as ort

    e = episode(np.random.default_rng(7), kind, "drift", days=0.5)
    feats = window_features(sliding_windows(e.values)[0]).astype(np.float32)

    def scores(model: bytes) -> np.ndarray:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: feats})[0])

    np.testing.assert_allclose(scores(first), scores(made), rtol=1e-4, atol=1e-6)


def test_the_shipped_models_beat_the_baseline_on_a_fresh_seed() -> None:
    result = evaluate.evaluate(FOLDER, MANIFEST, seed=11, per_fault=8)["models"]
    for name, fresh in result.items():
        assert fresh["mean_f1"]["model"] > fresh["mean_f1"]["baseline"] + 0.3, (name, fresh["mean_f1"])
        for fault, figures in fresh["faults"].items():
            if SHIPPED[name]["faults"][fault]["winner"] == "model":
                assert figures["model"]["f1"] >= figures["baseline"]["f1"], (name, fault, figures)
            least = 0.25 if fault == "drift" else 0.75  # a slow drift may stay in range for the rest of the day
            assert figures["model"]["detection_rate"] >= least, (name, fault, figures["model"])
        assert fresh["false_alarms_per_device_day"]["model"] < 10.0  # shipped: about 1; four devices vary


def test_a_stuck_sensor_is_caught_by_the_model_and_missed_by_the_baseline() -> None:
    entry = MANIFEST["anomaly-fridge"]
    episodes = [e for e in faulty_fleet(13, "fridge", 3) if e.fault == "stuck"]
    model = evaluate.score_fault(episodes, evaluate.onnx_scorer(FOLDER / entry["file"], entry))
    base = evaluate.score_fault(episodes, evaluate.baseline_scorer(entry))
    assert model["detected"] == "3/3" and model["median_delay_min"] is not None
    assert model["median_delay_min"] <= 60
    assert base["recall"] < 0.1


def test_evaluation_file_reports_both_side_by_side() -> None:
    for name, result in SHIPPED.items():
        assert set(result["faults"]) == set(KINDS[MANIFEST[name]["device_kind"]].faults)
        for figures in result["faults"].values():
            for who in ("model", "baseline"):
                assert {"precision", "recall", "f1", "median_delay_min", "detection_rate"} <= set(figures[who])


def test_retraining_into_another_folder_writes_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training script's own path, shrunk: one kind, a few devices, a short evaluation."""
    monkeypatch.setattr(train, "KINDS", {"fume_hood": KINDS["fume_hood"]})
    monkeypatch.setattr(train, "TRAIN_DEVICES", 4)
    monkeypatch.setattr(train, "CALIBRATION_DEVICES", 3)
    monkeypatch.setattr(evaluate, "PER_FAULT", 2)
    entries = train.train(tmp_path)
    evaluate.evaluate_folder(tmp_path, entries)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"fume_hood.onnx", "manifest.json", "MODEL.sha256", "evaluation.json"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["models"]) == {"anomaly-fume_hood"}
    assert isinstance(manifest["models"]["anomaly-fume_hood"]["ships"], bool)
