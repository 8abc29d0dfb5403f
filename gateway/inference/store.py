"""Keep a model sent by command on the gateway's disk: written atomically, with its own manifest beside it.

``<root>/<name>/<version>.onnx`` and ``<root>/<name>/manifest.json`` (the entry of the model it replaces, with the
new file, version and SHA-256), so that after a restart the stage loads the version it was last given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edugate.gateway.inference.manifest import ModelSpec


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a power cut) sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def install(root: Path, spec: ModelSpec, data: bytes) -> Path:
    """Store a verified model's bytes and its manifest under ``root``; returns the manifest's path."""
    folder = root / spec.name
    file = folder / f"{spec.version}.onnx"
    write_atomically(file, data)
    entry = {**spec.meta, "file": file.name, "version": spec.version, "sha256": spec.sha256,
             "inputs": [{"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in spec.inputs]}
    manifest = folder / "manifest.json"
    write_atomically(manifest, (json.dumps({"format": 1, "models": {spec.name: entry}}, indent=2) + "\n").encode())
    return manifest
