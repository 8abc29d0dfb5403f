"""What an asset is (:class:`Asset`), and the school's inventory CSV of equipment without electronics."""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edugate.contract.ids import ID_PATTERN

INVENTORY_COLUMNS = ("asset_id", "name", "category", "make", "model", "serial", "room", "tag", "acquired")
BLE_TAG = re.compile(r"^BLE:((?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})$")


@dataclass
class Asset:
    asset: str
    source: str  # "device" (a device of this gateway) or "inventory" (the school's CSV)
    name: str = ""
    category: str = ""
    driver: str = ""
    room: str = ""
    make: str = ""
    model: str = ""
    serial: str = ""
    firmware: str = ""
    tag: str = ""
    first_seen: int | None = None  # ms
    last_seen: int | None = None  # ms

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("first_seen", "last_seen")}

    @property
    def ble_address(self) -> str | None:
        """The BLE address of its tag (``BLE:C4:7F:51:00:00:01``), upper case; None without a BLE tag."""
        m = BLE_TAG.match(self.tag)
        return m.group(1).upper() if m else None


@dataclass
class InventoryProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class Inventory:
    mtime: float | None = None
    assets: dict[str, Asset] = field(default_factory=dict)
    problems: list[InventoryProblem] = field(default_factory=list)
    error: str = ""


def read_inventory(path: Path) -> tuple[dict[str, Asset], list[InventoryProblem]]:
    """The school's CSV -> assets by id, and the rows that could not be used (with their line)."""
    assets: dict[str, Asset] = {}
    problems: list[InventoryProblem] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in ("asset_id", "name") if c not in header]
        unknown = [c for c in header if c not in INVENTORY_COLUMNS]
        if missing or unknown:
            what = [f"missing column(s) {', '.join(missing)}"] if missing else []
            what += [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
            return {}, [InventoryProblem(1, "; ".join(what) + f" (columns: {','.join(INVENTORY_COLUMNS)})")]
        for row in reader:
            line = reader.line_num
            values = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
            if None in row:
                problems.append(InventoryProblem(line, f"{len(row[None])} value(s) more than the header has columns"))
                continue
            asset_id, name, tag = values.get("asset_id", ""), values.get("name", ""), values.get("tag", "")
            if not re.match(ID_PATTERN, asset_id):
                problems.append(InventoryProblem(line, f"asset_id {asset_id[:40]!r} must be lower-case letters, "
                                                 "digits, _ and - (e.g. micro-07)"))
                continue
            if not name:
                problems.append(InventoryProblem(line, f"{asset_id}: name is empty"))
                continue
            if asset_id in assets:
                problems.append(InventoryProblem(line, f"{asset_id}: listed twice (the first row is kept)"))
                continue
            if tag.upper().startswith("BLE:") and not BLE_TAG.match(tag):
                problems.append(InventoryProblem(line, f"{asset_id}: tag {tag[:40]!r} is not a BLE address: write "
                                                 "BLE: and six hex pairs, e.g. BLE:C4:7F:51:00:00:01"))
                continue
            assets[asset_id] = Asset(asset_id, "inventory", name=name, category=values.get("category", ""),
                                     make=values.get("make", ""), model=values.get("model", ""),
                                     serial=values.get("serial", ""), room=values.get("room", ""), tag=tag)
    return assets, problems
