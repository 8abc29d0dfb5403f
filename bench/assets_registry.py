"""Central asset registry: how long ``edugate assets`` / the Equipment page take to build the registry from an
SQLite event store holding a city's asset events.

    .venv/bin/python bench/assets_registry.py [--schools 500] [--assets 30] [--days 15] [--resends 4]

Fills a temporary event store (``central.eventstore.EventStore.add``, as ingest does) with, per school, one
``asset`` event per asset and, per asset and day of the last ``--days``, ``--resends`` ``asset_usage`` events
(a day's usage is re-sent as it grows; the gateways' default is hourly). Then times, best of 3,
:func:`~edugate.central.assets.registry.load_registry` for one school, for a district of 20 schools and for
the whole city (what the Equipment page reads, at most once per 10 s), and the KPI arithmetic over the city's
rows. Prints one JSON line. ``--without-school-index`` drops the event store's (school, type, ts) index first:
the baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from edugate.central.assets.kpi import district_kpis, school_kpis
from edugate.central.assets.registry import RegistryWindow, load_registry
from edugate.central.eventstore import EventStore

DAY_MS = 86_400_000


def fill(store: EventStore, schools: int, assets: int, days: int, resends: int, now_ms: int) -> int:
    total = 0
    for s in range(schools):
        school = f"school-{s:04d}"
        seq = 0
        records = []
        for a in range(assets):
            seq += 1
            records.append({"seq": seq, "ts": now_ms - 60 * DAY_MS, "device": f"dev-{a}", "type": "asset",
                            "data": {"asset": f"dev-{a}", "source": "device", "driver": "pjlink", "make": "Epson",
                                     "model": "EB-992F", "serial": f"SN{s:04d}{a:03d}", "room": f"room-{a}"}})
            for d in range(days):
                day_ms = now_ms - d * DAY_MS
                day = dt.datetime.fromtimestamp(day_ms / 1000, dt.UTC).date().isoformat()
                for r in range(resends):
                    seq += 1
                    records.append({"seq": seq, "ts": day_ms - (resends - r) * 3_600_000, "device": f"dev-{a}",
                                    "type": "asset_usage", "data": {
                                        "asset": f"dev-{a}", "day": day, "power_on_h": 0.5 * r * (a % 3),
                                        "powered": True, "readings": 100 * r, "events": 0, "seen": 0,
                                        "last_seen": day_ms - (resends - r) * 3_600_000}})
        total += store.add(school, "gw-1", records)
    return total


def best_of(n: int, fn: object) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--schools", type=int, default=500)
    p.add_argument("--assets", type=int, default=30)
    p.add_argument("--days", type=int, default=15)
    p.add_argument("--resends", type=int, default=4)
    p.add_argument("--without-school-index", action="store_true", help="drop the (school, type, ts) index first: "
                   "the baseline, as the event store was before the registry")
    args = p.parse_args()
    now_ms = int(time.time() * 1000)
    window = RegistryWindow(timezone="UTC")
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore(Path(tmp) / "events.db")
        t0 = time.perf_counter()
        events = fill(store, args.schools, args.assets, args.days, args.resends, now_ms)
        fill_s = time.perf_counter() - t0
        size_mb = (Path(tmp) / "events.db").stat().st_size / 1e6
        if args.without_school_index:
            with sqlite3.connect(Path(tmp) / "events.db") as conn:
                conn.execute("DROP INDEX events_by_school_type_ts")
        one_s, one = best_of(3, lambda: load_registry(store, now_ms, window, schools=["school-0001"]))
        district = [f"school-{s:04d}" for s in range(20)]
        district_s, _ = best_of(3, lambda: load_registry(store, now_ms, window, schools=district))
        city_s, city = best_of(3, lambda: load_registry(store, now_ms, window))
        where = {f"school-{s:04d}": f"district-{s % 24}" for s in range(args.schools)}
        kpi_s, _ = best_of(3, lambda: district_kpis(school_kpis(city, {}), where))  # type: ignore[arg-type]
        store.close()
    print(json.dumps({"school_index": not args.without_school_index, "schools": args.schools,
                      "assets_per_school": args.assets, "days": args.days,
                      "resends_per_day": args.resends, "events": events, "db_mb": round(size_mb, 1),
                      "fill_s": round(fill_s, 1), "one_school_s": round(one_s, 3),
                      "district_20_s": round(district_s, 3),
                      "city_s": round(city_s, 2), "city_rows": len(city),  # type: ignore[arg-type]
                      "one_school_rows": len(one), "kpis_s": round(kpi_s, 3)}))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
