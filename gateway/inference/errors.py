"""Why a model cannot be used. Each message names the model, the file and what is wrong with it."""

from __future__ import annotations


class ModelError(Exception):
    """A model that cannot be loaded or swapped in; the stage goes on without it (or with the old one)."""


class ManifestError(ModelError):
    """The manifest is missing, not JSON, or lacks a field."""


class ModelMissing(ModelError):
    """The model file is not there."""


class ChecksumMismatch(ModelError):
    """The file's SHA-256 is not the manifest's: truncated, corrupted, or another file."""


class ModelCorrupt(ModelError):
    """onnxruntime cannot load the file (it has the right checksum, so the manifest describes a bad file)."""


class InputMismatch(ModelError):
    """The model's inputs are not the ones the stage is configured to feed."""
