"""The shipped model files: small, their SHA-256 in the manifest and MODEL.sha256, loadable by the gateway's
loader, and their evaluation present with the same ``ships`` verdict as the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edugate.gateway.inference import load, load_manifest
from tests.helpers import REPO

FOLDERS = [REPO / "ml_models" / "anomaly", REPO / "ml_models" / "occupancy"]
MAX_BYTES = 200_000


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_checksums_agree_with_the_files(folder: Path) -> None:
    specs = load_manifest(folder / "manifest.json")
    listed = {}
    for line in (folder / "MODEL.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        listed[name] = digest
    assert listed == {s.file.name: s.sha256 for s in specs.values()}
    for spec in specs.values():
        data = spec.file.read_bytes()
        assert hashlib.sha256(data).hexdigest() == spec.sha256, f"{spec.file} changed without its manifest"
        assert len(data) < MAX_BYTES, f"{spec.file} is {len(data)} bytes"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_every_model_loads_in_the_gateway(folder: Path) -> None:
    for spec in load_manifest(folder / "manifest.json").values():
        model = load(spec)
        assert spec.meta["score_output"] in model.outputs
        assert spec.inputs[0].shape[1] == len(spec.meta["feature_names"])


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_evaluation_and_model_card_ship_with_the_models(folder: Path) -> None:
    evaluation = json.loads((folder / "evaluation.json").read_text())
    specs = load_manifest(folder / "manifest.json")
    verdicts = evaluation["ships"] if "ships" in evaluation else {
        name: result["ships"] for name, result in evaluation["models"].items()}
    assert verdicts == {name: spec.meta["ships"] for name, spec in specs.items()}
    card = (folder / "MODEL_CARD.md").read_text()
    for heading in ("## Data", "## Method", "## Metrics", "## Limits", "## Licence"):
        assert heading in card, f"{folder.name}/MODEL_CARD.md has no {heading!r}"
