"""Loading a model fails safe and says why: missing, truncated, corrupt, wrong inputs, bad manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edugate.gateway.inference import (
    ChecksumMismatch,
    InputMismatch,
    InputSpec,
    ManifestError,
    ModelCorrupt,
    ModelMissing,
    load,
    load_spec,
)
from tests.gateway.inference.onnx_builders import adder, write_model


def test_a_verified_model_loads_and_runs(tmp_path: Path) -> None:
    spec = load_spec(write_model(tmp_path, "m", "1", adder(1.0)), "m")
    model = load(spec)
    (y,) = model.run({"x": np.zeros((2, 4), dtype=np.float32)})
    assert y.tolist() == [[1.0] * 4] * 2
    assert model.spec.sha256 == hashlib.sha256(spec.file.read_bytes()).hexdigest()
    assert [o.name for o in model.session.get_inputs()] == ["x"]


def test_one_intra_op_thread(tmp_path: Path) -> None:
    model = load(load_spec(write_model(tmp_path, "m", "1", adder(1.0)), "m"))
    options = model.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


def test_missing_file(tmp_path: Path) -> None:
    manifest = write_model(tmp_path, "m", "1", adder(1.0))
    spec = load_spec(manifest, "m")
    spec.file.unlink()
    with pytest.raises(ModelMissing, match=r"model m 1: file .*m-1\.onnx is missing"):
        load(spec)


def test_truncated_file_fails_its_checksum(tmp_path: Path) -> None:
    data = adder(1.0)
    spec = load_spec(write_model(tmp_path, "m", "1", data), "m")
    spec.file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumMismatch, match=rf"\({len(data) // 2} bytes\) has SHA-256 .*truncated"):
        load(spec)


def test_corrupt_file_with_a_matching_checksum_is_refused_by_onnxruntime(tmp_path: Path) -> None:
    garbage = b"\x08\x07" + bytes(range(256)) * 4
    spec = load_spec(write_model(tmp_path, "m", "1", garbage), "m")
    with pytest.raises(ModelCorrupt, match=r"onnxruntime cannot load m-1\.onnx"):
        load(spec)


def test_truncated_file_with_a_matching_checksum_is_refused_by_onnxruntime(tmp_path: Path) -> None:
    data = adder(1.0)
    spec = load_spec(write_model(tmp_path, "m", "1", data[: len(data) - 40]), "m")
    with pytest.raises(ModelCorrupt):
        load(spec)


@pytest.mark.parametrize(("expected", "message"), [
    ([InputSpec("x", "float32", (None, 9))], r"input x has shape \[\?, 4\], the stage feeds x: float32\[\?, 9\]"),
    ([InputSpec("features", "float32", (None, 4))], r"its inputs are \['x'\], the stage feeds \['features'\]"),
    ([InputSpec("x", "float64", (None, 4))], r"input x is tensor\(float\), the stage feeds float64"),
    ([InputSpec("x", "float32", (None,))], r"has shape \[\?, 4\]"),
])
def test_inputs_that_do_not_match_the_config(tmp_path: Path, expected: list[InputSpec], message: str) -> None:
    spec = load_spec(write_model(tmp_path, "m", "1", adder(1.0)), "m")
    with pytest.raises(InputMismatch, match=message):
        load(spec, expected)


def test_manifest_inputs_that_do_not_match_the_model(tmp_path: Path) -> None:
    spec = load_spec(write_model(tmp_path, "m", "1", adder(1.0), shape=[None, 5]), "m")
    with pytest.raises(InputMismatch, match="the stage feeds x: float32"):
        load(spec)


def test_bytes_given_by_a_command_are_checked_too(tmp_path: Path) -> None:
    spec = load_spec(write_model(tmp_path, "m", "1", adder(1.0)), "m")
    with pytest.raises(ChecksumMismatch):
        load(spec, data=adder(2.0))
    assert load(spec.with_version("2", hashlib.sha256(adder(2.0)).hexdigest()), data=adder(2.0)).spec.version == "2"


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "cannot be read as JSON"),
    ('{"format": 2, "models": {}}', "expected"),
    ('{"format": 1, "models": {"m": {"file": "a.onnx", "version": "1"}}}', "models.m: missing sha256, inputs"),
    ('{"format": 1, "models": {"m": {"file": "../a.onnx", "version": "1", "sha256": "' + "0" * 64
     + '", "inputs": [{"name": "x", "dtype": "float32", "shape": [1]}]}}}', "inside the model folder"),
    ('{"format": 1, "models": {"m": {"file": "a.onnx", "version": "1", "sha256": "abc", "inputs": []}}}',
     "sha256 must be 64 hex digits"),
    ('{"format": 1, "models": {"m": {"file": "a.onnx", "version": "1", "sha256": "' + "0" * 64
     + '", "inputs": [{"name": "x", "dtype": "complex", "shape": [1]}]}}}', "dtype 'complex'"),
])
def test_bad_manifests(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_spec(tmp_path / "manifest.json", "m")


def test_unknown_model_name(tmp_path: Path) -> None:
    manifest = write_model(tmp_path, "m", "1", adder(1.0))
    with pytest.raises(ManifestError, match=r"no model 'other' \(it has m\)"):
        load_spec(manifest, "other")
    assert json.loads(manifest.read_text())["models"]["m"]["version"] == "1"
