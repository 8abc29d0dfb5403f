"""Load one ONNX model for the gateway: check its SHA-256, open it with onnxruntime (CPU, one thread), and check
its inputs against the ones the stage will feed. Every failure is a :class:`~.errors.ModelError` that says why."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from edugate.gateway.inference.errors import ChecksumMismatch, InputMismatch, ModelCorrupt, ModelMissing
from edugate.gateway.inference.manifest import DTYPES, InputSpec, ModelSpec

PROVIDERS = ["CPUExecutionProvider"]


def session_options() -> ort.SessionOptions:
    """One intra-op and one inter-op thread, no spinning: the gateway's loop and the uplink share the CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


@dataclass(frozen=True)
class LoadedModel:
    """A verified, opened model. ``session.run`` is thread-safe; the object is never changed once built."""

    spec: ModelSpec
    session: ort.InferenceSession
    size: int
    loaded_at: float

    @property
    def outputs(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[Any]:
        return self.session.run(list(outputs) if outputs else None, dict(feeds))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def check_inputs(spec: ModelSpec, session: ort.InferenceSession, expected: Sequence[InputSpec]) -> None:
    """Raise :class:`InputMismatch` unless the model's inputs are ``expected`` (names, types, fixed sizes)."""
    label = f"model {spec.name} {spec.version} ({spec.file.name})"
    actual = {i.name: i for i in session.get_inputs()}
    want = {i.name: i for i in expected}
    if set(actual) != set(want):
        raise InputMismatch(f"{label}: its inputs are {sorted(actual)}, the stage feeds {sorted(want)}")
    for name, inp in want.items():
        got = actual[name]
        if got.type != DTYPES[inp.dtype]:
            raise InputMismatch(f"{label}: input {name} is {got.type}, the stage feeds {inp.dtype}")
        dims = [d if isinstance(d, int) else None for d in got.shape]
        if len(dims) != len(inp.shape) or any(a is not None and b is not None and a != b
                                              for a, b in zip(dims, inp.shape, strict=True)):
            shown = ", ".join("?" if d is None else str(d) for d in dims)
            raise InputMismatch(f"{label}: input {name} has shape [{shown}], the stage feeds {inp}")


def load(spec: ModelSpec, expected: Sequence[InputSpec] | None = None, data: bytes | None = None) -> LoadedModel:
    """Verify and open ``spec`` (from its file, or from ``data`` when given); ``expected``: the inputs the stage
    is configured to feed (default: the manifest's)."""
    label = f"model {spec.name} {spec.version}"
    if data is None:
        try:
            data = spec.file.read_bytes()
        except FileNotFoundError:
            raise ModelMissing(f"{label}: file {spec.file} is missing") from None
        except OSError as exc:
            raise ModelMissing(f"{label}: file {spec.file} cannot be read: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ChecksumMismatch(
            f"{label}: {spec.file.name} ({len(data)} bytes) has SHA-256 {digest[:16]}…, the manifest says "
            f"{spec.sha256[:16]}… (truncated, corrupted or replaced)")
    try:
        session = ort.InferenceSession(data, session_options(), providers=PROVIDERS)
    except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
        raise ModelCorrupt(f"{label}: onnxruntime cannot load {spec.file.name}: {_short(exc)}") from None
    check_inputs(spec, session, expected if expected is not None else spec.inputs)
    return LoadedModel(spec, session, len(data), time.time())
