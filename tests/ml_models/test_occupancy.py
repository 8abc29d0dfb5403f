"""The room-occupancy models: the simulated rooms follow their timetable, and the shipped models beat the
threshold baseline on rooms they have never seen."""

from __future__ import annotations

import json

import numpy as np

from edugate.ml_models.occupancy import evaluate
from edugate.ml_models.occupancy.data import PERIODS, rooms
from edugate.ml_models.occupancy.features import FEATURES, WINDOW, every_minute, window_features
from tests.helpers import REPO

FOLDER = REPO / "ml_models" / "occupancy"
MANIFEST = json.loads((FOLDER / "manifest.json").read_text())["models"]


def test_rooms_fill_in_periods_and_co2_follows_people() -> None:
    (room,) = rooms(5, 1, 2)
    in_periods = np.zeros(len(room.people), dtype=bool)
    for day in range(2):
        for start, end in PERIODS:
            in_periods[day * 1440 + start - 2:day * 1440 + end + 2] = True
    assert room.people[~in_periods].sum() == 0
    assert room.people.max() >= 20
    co2 = room.values[:, 0]
    occupied = room.people > 0
    assert co2[occupied].mean() > co2[~occupied].mean() + 300


def test_features_in_manifest_order() -> None:
    (room,) = rooms(5, 1, 1)
    windows, ends = every_minute(room.values)
    feats = window_features(windows[500:510])
    assert feats.shape == (10, len(FEATURES)) and list(FEATURES) == MANIFEST["occupancy-occupied"]["feature_names"]
    assert MANIFEST["occupancy-occupied"]["window"] == WINDOW and ends[0] == WINDOW - 1
    assert feats[0, FEATURES.index("co2")] == room.values[ends[500], 0]


def test_the_shipped_models_beat_the_baseline_on_fresh_rooms() -> None:
    result = evaluate.evaluate(FOLDER, MANIFEST, seed=11, count=3, days=2)
    model, base = result["model"], result["baseline"]
    assert model["occupied"]["f1"] > base["occupied"]["f1"] + 0.05
    assert model["occupied"]["f1"] > 0.9
    assert model["head_count"]["mae"] < base["head_count"]["mae"]
    assert model["head_count"]["within_3"] > base["head_count"]["within_3"]
