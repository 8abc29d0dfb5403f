"""The registry as CSV (UTF-8 with a byte-order mark, so that Excel opens Vietnamese names right) and as
printable lines."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from edugate.central.assets.registry import AssetRow

COLUMNS = ("district", "school", "gateway", "asset", "source", "driver", "name", "category", "room", "make",
           "model", "serial", "firmware", "tag", "status", "first_seen", "last_seen", "days_used", "power_on_h",
           "lamp_h")


def local(ms: int | None, timezone: str) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def registry_csv(rows: Iterable[AssetRow], timezone: str) -> str:
    """One line per asset; times in ``timezone`` (YYYY-MM-DD HH:MM)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        values = row.as_dict()
        values["first_seen"] = local(row.first_seen, timezone)
        values["last_seen"] = local(row.last_seen, timezone)
        writer.writerow([_cell(values[c]) for c in COLUMNS])
    return out.getvalue()


def _cell(value: object) -> str:
    """A cell as text; one that a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
