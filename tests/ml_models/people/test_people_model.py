"""The shipped person detector: its checksum in the manifest and MODEL.sha256, loadable by the gateway's model
engine, its evaluation and model card present, and its counts on the labelled frames still the ones the
evaluation recorded (same file, same preprocessing, same threshold)."""

from __future__ import annotations

import hashlib
import json

import cv2
import pytest

from edugate.drivers.camera.detector import SsdLiteDetector, model_file, shipped_manifest
from edugate.gateway.inference import load, load_manifest
from edugate.ml_models.people import frames as vtest
from tests.helpers import REPO

FOLDER = REPO / "ml_models" / "people"
NAME = "people-ssdlite"


def test_checksums_agree_with_the_file_and_the_driver_finds_it() -> None:
    spec = load_manifest(FOLDER / "manifest.json")[NAME]
    data = spec.file.read_bytes()
    assert hashlib.sha256(data).hexdigest() == spec.sha256, "detector.onnx changed without its manifest"
    assert (FOLDER / "MODEL.sha256").read_text() == f"{spec.sha256}  detector.onnx\n"
    assert len(data) == spec.meta["bytes"] < 13_000_000  # 12.3 MB: float32 weights of SSDLite-MobileNetV2
    assert shipped_manifest().resolve() == (FOLDER / "manifest.json").resolve()


def test_the_gateway_engine_loads_it_with_its_declared_input() -> None:
    spec = load_manifest(FOLDER / "manifest.json")[NAME]
    model = load(spec)
    assert model.outputs == spec.meta["outputs"]
    assert [(i.name, i.type, i.shape) for i in model.session.get_inputs()] == [
        ("image_tensor:0", "tensor(uint8)", [1, 300, 300, 3])]


def test_evaluation_model_card_and_licence_ship_with_it() -> None:
    evaluation = json.loads((FOLDER / "evaluation.json").read_text())
    spec = load_manifest(FOLDER / "manifest.json")[NAME]
    assert spec.meta["threshold"] == evaluation["threshold"] == evaluation["calibration"]["chosen"]
    detectors = evaluation["vtest"]["detectors"]
    assert detectors["ssdlite"]["mae"] < detectors["hog"]["mae"], "the detector must beat the HOG baseline"
    assert evaluation["vtest"]["ships"] is spec.meta["ships"] is True
    card = (FOLDER / "MODEL_CARD.md").read_text()
    for heading in ("## Data", "## Method", "## Metrics", "## Limits", "## Licence"):
        assert heading in card, f"MODEL_CARD.md has no {heading!r}"
    assert "MIT" in (FOLDER / "LICENCE-detector.txt").read_text()
    labels = vtest.labels()
    assert labels["source_sha256"] == evaluation["vtest"]["sha256"]
    assert not set(labels["frames"]) & set(labels["calibration"]), "calibration frames must not be test frames"


@pytest.mark.skipif(not vtest.VTEST.is_file(), reason="Debian's opencv-doc is not installed (scripts/setup.sh)")
def test_counts_on_the_labelled_frames_are_the_evaluated_ones() -> None:
    evaluation = json.loads((FOLDER / "evaluation.json").read_text())
    recorded = {row["frame"]: row["ssdlite"] for row in evaluation["vtest"]["frames"]}
    detector = SsdLiteDetector(model_file())
    for index, frame in vtest.read_frames([0, 400, 760]):
        frame = cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA)
        assert detector.count(frame) == recorded[f"vtest-{index}"], f"frame {index}"
