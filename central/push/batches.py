"""A period's published figures cut into batches for the warehouse, each with its idempotency key.

The rows are the open API's (:func:`edugate.central.indicators.publish.figures_document`): anonymised, area ids
only. Before anything is kept for sending, every row is checked to hold exactly the published fields and an area
level, so nothing else (a pseudonym, a card, a gateway or a device) can ride along.

The key is the SHA-256 of the batch's content (period, position, anonymisation settings, rows): the same figures
always give the same key, so a period pushed again unchanged makes no new batch, and a receiver that keeps the
keys it has seen never counts a batch twice. Figures that changed (late data) make a new key; the body's
``generated`` says which is newer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

SCHEMA = "edugate-figures/1"
FIELDS = frozenset({"indicator", "unit", "level", "area", "district", "period", "from", "to", "complete", "value",
                    "status"})
LEVELS = frozenset({"city", "district", "school"})


class PrivacyError(ValueError):
    """A row that is not a published figure row; nothing of the period is sent."""


@dataclass(frozen=True)
class NewBatch:
    key: str
    period: str
    batch: int
    batches: int
    body: bytes


def check_row(row: dict[str, Any]) -> None:
    if set(row) != FIELDS:
        raise PrivacyError(f"figure row with fields {sorted(row)}: only {sorted(FIELDS)} may be sent")
    if row["level"] not in LEVELS or not (row["value"] is None or isinstance(row["value"], int | float)):
        raise PrivacyError(f"figure row {row['indicator']}/{row['area']}: level must be one of {sorted(LEVELS)} "
                           "and value a number or null")


def make_batches(doc: dict[str, Any], batch_rows: int) -> list[NewBatch]:
    """``doc`` (a figures document) as batches of at most ``batch_rows`` rows; raises PrivacyError."""
    items: list[dict[str, Any]] = doc["items"]
    for row in items:
        check_row(row)
    chunks = [items[i:i + batch_rows] for i in range(0, len(items), batch_rows)] or [[]]
    out = []
    for number, chunk in enumerate(chunks, start=1):
        content = {"period": doc["period"], "batch": number, "batches": len(chunks), "k": doc["k"],
                   "round_to": doc["round_to"], "items": chunk}
        key = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
        body = {"schema": SCHEMA, "key": key, "period": doc["period"], "from": doc["from"], "to": doc["to"],
                "complete": doc["complete"], "generated": doc["generated"], "k": doc["k"],
                "round_to": doc["round_to"], "batch": number, "batches": len(chunks), "items": chunk}
        out.append(NewBatch(key, doc["period"], number, len(chunks),
                            json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()))
    return out
