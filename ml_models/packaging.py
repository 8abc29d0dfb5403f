"""Write a model folder's ``manifest.json`` and ``MODEL.sha256`` from the ``.onnx`` files the training wrote.

The manifest is what the gateway's model stage reads (``edugate.gateway.inference.manifest``): per model its
file, version, SHA-256, input names/types/shapes, and whatever the stage needs to feed it (feature names,
window, threshold). ``MODEL.sha256`` is the same checksums in ``sha256sum`` format (``sha256sum -c MODEL.sha256``).
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from onnx import ModelProto


def trained_with() -> dict[str, str]:
    """The versions of the libraries that shaped the bytes (the same versions give the same file)."""
    return {name: version(name) for name in ("numpy", "scikit-learn", "skl2onnx", "onnx")}


def stable_bytes(model: ModelProto) -> bytes:
    """The model's bytes with its opset imports in a fixed order (skl2onnx lists them in set order, which
    changes with ``PYTHONHASHSEED`` and would change the file's checksum from one run to the next)."""
    imports = sorted(model.opset_import, key=lambda o: o.domain)
    del model.opset_import[:]
    model.opset_import.extend(imports)
    return model.SerializeToString()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(folder: Path, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``models``: name -> entry with at least ``file``, ``version`` and ``inputs``; adds each ``sha256``."""
    entries = {}
    for name, entry in sorted(models.items()):
        entries[name] = {**entry, "sha256": sha256_of(folder / entry["file"]), "trained_with": trained_with()}
    manifest = {"format": 1, "models": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    lines = sorted(f"{e['sha256']}  {e['file']}\n" for e in entries.values())
    (folder / "MODEL.sha256").write_text("".join(lines))
    return manifest
