"""A model folder's ``manifest.json``: per model its file, version, SHA-256 and inputs (written by the training
scripts in ``ml_models/``, or by :func:`edugate.gateway.inference.store.install` for a model sent by command).

    {"format": 1, "models": {"anomaly-fridge": {"file": "fridge.onnx", "version": "2026.12.0",
        "sha256": "e7a6…", "inputs": [{"name": "features", "dtype": "float32", "shape": [null, 18]}], …}}}

Other keys of an entry (threshold, feature names, window…) are kept in :attr:`ModelSpec.meta` for the stage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edugate.gateway.inference.errors import ManifestError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
DTYPES = {"float32": "tensor(float)", "float64": "tensor(double)", "int64": "tensor(int64)",
          "int32": "tensor(int32)", "uint8": "tensor(uint8)", "string": "tensor(string)"}


@dataclass(frozen=True)
class InputSpec:
    """One input tensor: its name, element type (``float32``…) and shape (None = any size, e.g. the batch)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True)
class ModelSpec:
    """What the manifest says about one model; ``file`` is absolute."""

    name: str
    version: str
    file: Path
    sha256: str
    inputs: tuple[InputSpec, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def with_version(self, version: str, sha256: str, file: Path | None = None) -> ModelSpec:
        return replace(self, version=version, sha256=sha256, file=file or self.file)


def _inputs(where: str, raw: Any) -> tuple[InputSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ManifestError(f"{where}: 'inputs' must be a non-empty list")
    out = []
    for i, item in enumerate(raw):
        try:
            name, dtype, shape = item["name"], item["dtype"], item["shape"]
        except (KeyError, TypeError):
            raise ManifestError(f"{where}: inputs[{i}] needs 'name', 'dtype' and 'shape'") from None
        if dtype not in DTYPES:
            raise ManifestError(f"{where}: inputs[{i}].dtype {dtype!r} is not one of {sorted(DTYPES)}")
        if not isinstance(shape, list) or not all(d is None or (isinstance(d, int) and d > 0) for d in shape):
            raise ManifestError(f"{where}: inputs[{i}].shape must be a list of positive sizes or null")
        out.append(InputSpec(str(name), dtype, tuple(shape)))
    return tuple(out)


def spec_from_entry(name: str, entry: Mapping[str, Any], folder: Path, where: str = "manifest") -> ModelSpec:
    """One manifest entry as a :class:`ModelSpec` (``folder`` resolves its ``file``)."""
    where = f"{where}: models.{name}"
    missing = [k for k in ("file", "version", "sha256", "inputs") if k not in entry]
    if missing:
        raise ManifestError(f"{where}: missing {', '.join(missing)}")
    sha = str(entry["sha256"]).lower()
    if not SHA256.match(sha):
        raise ManifestError(f"{where}: sha256 must be 64 hex digits")
    file = Path(str(entry["file"]))
    if file.is_absolute() or ".." in file.parts:
        raise ManifestError(f"{where}: file must be a name inside the model folder, not {file}")
    meta = {k: v for k, v in entry.items() if k not in ("file", "version", "sha256", "inputs")}
    return ModelSpec(name, str(entry["version"]), folder / file, sha, _inputs(where, entry["inputs"]), meta)


def load_manifest(path: Path) -> dict[str, ModelSpec]:
    """Every model of the manifest at ``path``, by name."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot be read as JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != 1 or not isinstance(doc.get("models"), dict):
        raise ManifestError(f"{path}: expected {{\"format\": 1, \"models\": {{...}}}}")
    return {name: spec_from_entry(name, entry, path.parent, str(path)) for name, entry in doc["models"].items()}


def load_spec(path: Path, name: str) -> ModelSpec:
    """The model ``name`` of the manifest at ``path``."""
    specs = load_manifest(path)
    if name not in specs:
        raise ManifestError(f"{path}: no model {name!r} (it has {', '.join(sorted(specs)) or 'none'})")
    return specs[name]
