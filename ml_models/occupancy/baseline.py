"""The threshold baseline: occupied when CO2 is high or rising; head count from a CO2 mass balance.

``occupied = co2 > co2_limit or co2_rise_5 > rise_limit`` (both limits tuned on the training rooms for the best
F1, as the model is trained on them); when occupied, ``people = volume * (rise + ach * (co2 - outdoor)) / g``
with a nominal room (:data:`NOMINAL_VOLUME_M3`, :data:`NOMINAL_ACH`), since the gateway knows neither.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from edugate.ml_models.occupancy.data import CO2_PER_PERSON_M3_MIN, OUTDOOR_CO2
from edugate.ml_models.occupancy.features import FEATURES

NOMINAL_VOLUME_M3: Final = 190.0
NOMINAL_ACH: Final = 2.0
CO2_LIMITS: Final = tuple(range(500, 1501, 50))
RISE_LIMITS: Final = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)


def occupied(feats: np.ndarray, co2_limit: float, rise_limit: float) -> np.ndarray:
    co2, rise = feats[:, FEATURES.index("co2")], feats[:, FEATURES.index("co2_rise_5")]
    return (co2 > co2_limit) | (rise > rise_limit)


def head_count(feats: np.ndarray, is_occupied: np.ndarray) -> np.ndarray:
    co2, rise = feats[:, FEATURES.index("co2")], feats[:, FEATURES.index("co2_rise_5")]
    ppm_per_person = CO2_PER_PERSON_M3_MIN * 1e6 / NOMINAL_VOLUME_M3
    people = (rise + NOMINAL_ACH / 60.0 * (co2 - OUTDOOR_CO2)) / ppm_per_person
    return np.where(is_occupied, np.clip(np.round(people), 0, None), 0)


def tune(feats: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The (co2_limit, rise_limit) with the best F1 on ``feats``."""
    best, chosen = -1.0, (CO2_LIMITS[0], RISE_LIMITS[0])
    for c in CO2_LIMITS:
        for r in RISE_LIMITS:
            p = occupied(feats, c, r)
            tp = float((p & truth).sum())
            f1 = 2 * tp / (p.sum() + truth.sum()) if p.sum() + truth.sum() else 0.0
            if f1 > best:
                best, chosen = f1, (float(c), float(r))
    return chosen
