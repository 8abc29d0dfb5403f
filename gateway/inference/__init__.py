"""The gateway's model engine: ONNX models verified against their manifest and run off the event loop.

- :mod:`.manifest`: what a model folder's ``manifest.json`` says (file, version, SHA-256, inputs);
- :mod:`.loader`: verify the checksum, open with onnxruntime (CPU, one thread), check the inputs;
- :mod:`.runner`: :class:`ModelRunner`, one model slot: worker thread, time budget, atomic swap, status;
- :mod:`.watch`, :mod:`.store`: a model dropped in place, a model sent by command kept on disk.

onnxruntime and numpy come with the ``[ml]`` extra; a gateway without models never imports this package.
"""

from edugate.gateway.inference.errors import (
    ChecksumMismatch,
    InputMismatch,
    ManifestError,
    ModelCorrupt,
    ModelError,
    ModelMissing,
)
from edugate.gateway.inference.loader import LoadedModel, load
from edugate.gateway.inference.manifest import InputSpec, ModelSpec, load_manifest, load_spec
from edugate.gateway.inference.runner import ModelRunner, RunnerStatus

__all__ = [
    "ChecksumMismatch",
    "InputMismatch",
    "InputSpec",
    "LoadedModel",
    "ManifestError",
    "ModelCorrupt",
    "ModelError",
    "ModelMissing",
    "ModelRunner",
    "ModelSpec",
    "RunnerStatus",
    "load",
    "load_manifest",
    "load_spec",
]
