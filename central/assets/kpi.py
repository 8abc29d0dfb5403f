"""The two KPIs of the city plans, per school and district, from the registry (docs/assets.md defines them):

* **share of equipment on digital records** = assets on record / the equipment the school declares it owns
  (``assets.declared`` in central.yaml: its count on the school's books). No declared count: no value. Capped
  at 100 % (more on record than declared means the declaration is out of date). A district's share counts only
  its schools that declared, so a school without a count neither helps nor hurts it;
* **share in use** = assets ``in use`` / assets the gateways can observe (devices and tagged items; an untagged
  inventory item can show no use and is left out). No observable asset: no value.

A district's figures are computed from its schools' summed counts, never by averaging their percentages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from edugate.central.assets.registry import AssetRow

UNASSIGNED = "unassigned"


@dataclass
class Kpi:
    area: str  # a school or district id
    on_record: int = 0
    declared: int | None = None  # None: no declared count (for a district: none of its schools declared)
    on_record_declared: int = 0  # assets on record of the schools that declared a count
    observable: int = 0
    in_use: int = 0
    idle: int = 0
    missing: int = 0
    never_seen: int = 0
    not_tracked: int = 0

    @property
    def on_record_pct(self) -> float | None:
        if not self.declared:
            return None
        return round(min(100.0, 100.0 * self.on_record_declared / self.declared), 1)

    @property
    def in_use_pct(self) -> float | None:
        return round(100.0 * self.in_use / self.observable, 1) if self.observable else None

    def add(self, other: Kpi) -> None:
        for name in ("on_record", "on_record_declared", "observable", "in_use", "idle", "missing", "never_seen",
                     "not_tracked"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.declared is not None:
            self.declared = (self.declared or 0) + other.declared

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"on_record_pct": self.on_record_pct, "in_use_pct": self.in_use_pct}


def school_kpis(rows: Iterable[AssetRow], declared: Mapping[str, int],
                schools: Iterable[str] = ()) -> dict[str, Kpi]:
    """Per school (every school with an asset, and every one in ``schools``, e.g. the declared ones)."""
    out = {school: Kpi(school) for school in schools}
    for row in rows:
        kpi = out.setdefault(row.school, Kpi(row.school))
        kpi.on_record += 1
        if row.observable:
            kpi.observable += 1
        key = row.status.replace(" ", "_")
        setattr(kpi, key, getattr(kpi, key) + 1)
    for school, kpi in out.items():
        kpi.declared = declared.get(school)
        kpi.on_record_declared = kpi.on_record if kpi.declared is not None else 0
    return dict(sorted(out.items()))


def district_kpis(schools: Mapping[str, Kpi], district_of: Mapping[str, str]) -> dict[str, Kpi]:
    """Each district's schools summed (schools no district lists: :data:`UNASSIGNED`)."""
    out: dict[str, Kpi] = {}
    for school, kpi in schools.items():
        district = district_of.get(school) or UNASSIGNED
        out.setdefault(district, Kpi(district)).add(kpi)
    return dict(sorted(out.items()))
