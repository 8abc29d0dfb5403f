"""Small ONNX models built in the test (no files shipped): an adder whose output says its version, and a model
that is deliberately slow (chained matrix products that depend on the input, so nothing is folded at load)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def adder(version: float, width: int = 4, input_name: str = "x") -> bytes:
    """y = x + version, for x float32 [batch, width]."""
    c = numpy_helper.from_array(np.full((1, width), version, dtype=np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Add", [input_name, "c"], ["y"])], "adder",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, width])],
        initializer=[c])
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="edugate-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def slow(size: int = 1024, steps: int = 16) -> bytes:
    """A [1, 1] float input broadcast to [size, size] and multiplied by itself ``steps`` times."""
    shape = numpy_helper.from_array(np.array([size, size], dtype=np.int64), "shape")
    scale = numpy_helper.from_array(np.array(1.0 / size, dtype=np.float32), "scale")
    nodes = [helper.make_node("Expand", ["x", "shape"], ["m0"])]
    for i in range(steps):
        nodes += [helper.make_node("MatMul", [f"m{i}", f"m{i}"], [f"p{i}"]),
                  helper.make_node("Mul", [f"p{i}", "scale"], [f"s{i}"]),
                  helper.make_node("Tanh", [f"s{i}"], [f"m{i + 1}"])]
    nodes.append(helper.make_node("ReduceSum", [f"m{steps}"], ["y"], keepdims=0))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                              initializer=[shape, scale])
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="edugate-tests")
    model.ir_version = 8
    return model.SerializeToString()


def write_model(folder: Path, name: str, version: str, data: bytes, *, width: int = 4, file: str | None = None,
                sha256: str | None = None, shape: list[int | None] | None = None) -> Path:
    """Write ``data`` and a manifest describing it into ``folder``; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    file = file or f"{name}-{version}.onnx"
    (folder / file).write_bytes(data)
    entry = {"file": file, "version": version, "sha256": sha256 or hashlib.sha256(data).hexdigest(),
             "inputs": [{"name": "x", "dtype": "float32", "shape": shape or [None, width]}]}
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"format": 1, "models": {name: entry}}))
    return manifest


def slow_scorer(width: int, size: int = 1024, steps: int = 16, output: str = "score_samples") -> bytes:
    """Takes ``features`` [batch, width] like an anomaly model and answers [1, 1], slowly (see :func:`slow`)."""
    shape = numpy_helper.from_array(np.array([size, size], dtype=np.int64), "shape")
    scale = numpy_helper.from_array(np.array(1.0 / size, dtype=np.float32), "scale")
    nodes = [helper.make_node("ReduceSum", ["features"], ["s"], keepdims=1),
             helper.make_node("Expand", ["s", "shape"], ["m0"])]
    for i in range(steps):
        nodes += [helper.make_node("MatMul", [f"m{i}", f"m{i}"], [f"p{i}"]),
                  helper.make_node("Mul", [f"p{i}", "scale"], [f"s{i}"]),
                  helper.make_node("Tanh", [f"s{i}"], [f"m{i + 1}"])]
    nodes.append(helper.make_node("ReduceSum", [f"m{steps}"], [output], keepdims=1))
    graph = helper.make_graph(nodes, "slow_scorer",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, 1])],
                              initializer=[shape, scale])
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="edugate-tests")
    model.ir_version = 8
    return model.SerializeToString()


def steps_for(seconds: float, size: int = 1024) -> int:
    """How many chained products make :func:`slow` take about ``seconds`` on this machine (measured once with
    onnxruntime as the runner sets it up: one thread), so that "slow" means slow on a fast CPU too."""
    import time

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    probe = 4
    session = ort.InferenceSession(slow(size, probe), options, providers=["CPUExecutionProvider"])
    x = np.ones((1, 1), dtype=np.float32)
    session.run(None, {"x": x})  # warm
    started = time.perf_counter()
    session.run(None, {"x": x})
    per_step = max((time.perf_counter() - started) / probe, 1e-4)
    return max(probe, min(256, int(seconds / per_step) + 1))
