"""The central registry's status and the KPI arithmetic (share on digital records, share in use), from event rows
as the event stores return them; the CLI over a real SQLite event store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from edugate.central.assets.kpi import UNASSIGNED, district_kpis, school_kpis
from edugate.central.assets.registry import RegistryWindow, build_registry, load_registry, used
from edugate.central.cli import app
from edugate.central.eventstore import EventStore

DAY = 86_400_000
NOW = 1_796_000_000_000  # 2026-11-29 (a Sunday) around noon in Ho Chi Minh City
WINDOW = RegistryWindow(in_use_days=7, missing_after_days=14, timezone="Asia/Ho_Chi_Minh")


def day(ms: int) -> str:
    import datetime as dt
    from zoneinfo import ZoneInfo

    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo("Asia/Ho_Chi_Minh")).date().isoformat()


def asset(school: str, asset_id: str, seq: int, *, source: str = "device", gw: str = "gw-1", **data: object) -> dict:
    return {"school": school, "gateway": gw, "seq": seq, "ts": NOW - 30 * DAY + seq, "room": None,
            "device": asset_id if source == "device" else "_gateway", "type": "asset",
            "data": {"asset": asset_id, "source": source, **data}}


def usage(school: str, asset_id: str, seq: int, at: int, *, gw: str = "gw-1", **data: object) -> dict:
    return {"school": school, "gateway": gw, "seq": seq, "ts": at, "device": asset_id, "room": None,
            "type": "asset_usage", "data": {"asset": asset_id, "day": day(at), "last_seen": at, "power_on_h": 0.0,
                                            "readings": 0, "events": 0, **data}}


def test_no_assets_gives_no_shares_not_zero() -> None:
    rows = build_registry([], [], NOW, WINDOW)
    assert rows == []
    kpis = school_kpis(rows, {"thpt-a": 40}, ["thpt-a"])
    assert kpis["thpt-a"].on_record == 0 and kpis["thpt-a"].on_record_pct == 0.0  # declared 40, none on record
    assert kpis["thpt-a"].in_use_pct is None  # nothing observable: no share, not 0 %
    assert school_kpis(rows, {}, ["thpt-b"])["thpt-b"].on_record_pct is None  # nothing declared: no share


def test_status_of_each_kind_of_asset() -> None:
    assets = [asset("thpt-a", "proj-1", 1, driver="pjlink", make="Epson"),
              asset("thpt-a", "proj-2", 2, driver="pjlink"),      # on, but off all week: idle
              asset("thpt-a", "probe-1", 3, driver="ble"),        # never seen
              asset("thpt-a", "panel-1", 4, driver="display_serial"),  # last seen 20 days ago: missing
              asset("thpt-a", "micro-01", 5, source="inventory", name="Microscope"),  # no tag: not tracked
              asset("thpt-a", "robot-01", 6, source="inventory", name="Robot", tag="BLE:C4:7F:51:00:00:01"),
              asset("thpt-a", "sensor-1", 7, driver="modbus")]
    usages = [usage("thpt-a", "proj-1", 10, NOW - 2 * DAY, power_on_h=1.5, powered=True, readings=90, lamp_h=2),
              usage("thpt-a", "proj-1", 11, NOW - 2 * DAY + 5, power_on_h=3.25, powered=True, readings=180,
                    lamp_h=3),  # the same day again, later: replaces the first
              usage("thpt-a", "proj-1", 12, NOW - 9 * DAY, power_on_h=4.0, powered=True),  # before the window
              usage("thpt-a", "proj-2", 13, NOW - 1 * DAY, power_on_h=0.0, powered=True, readings=500),
              usage("thpt-a", "panel-1", 14, NOW - 20 * DAY, power_on_h=6.0, powered=True),
              usage("thpt-a", "robot-01", 15, NOW - 3 * DAY, seen=4),
              usage("thpt-a", "sensor-1", 16, NOW - DAY, readings=1440)]
    rows = {r.asset: r for r in build_registry(assets, usages, NOW, WINDOW)}
    assert {a: r.status for a, r in rows.items()} == {
        "proj-1": "in use", "proj-2": "idle", "probe-1": "never seen", "panel-1": "missing",
        "micro-01": "not tracked", "robot-01": "in use", "sensor-1": "in use"}
    assert rows["proj-1"].power_on_h == 3.25 and rows["proj-1"].lamp_h == 3 and rows["proj-1"].days_used == 1
    assert rows["proj-1"].make == "Epson" and rows["proj-1"].last_seen == NOW - 2 * DAY + 5

    kpi = school_kpis(rows.values(), {"thpt-a": 10})["thpt-a"]
    assert (kpi.on_record, kpi.observable, kpi.in_use, kpi.missing, kpi.never_seen, kpi.not_tracked) == (7, 6, 3, 1,
                                                                                                          1, 1)
    assert kpi.on_record_pct == 70.0  # 7 of the 10 the school declared
    assert kpi.in_use_pct == 50.0  # 3 of the 6 a gateway can observe (the untagged microscope is left out)


def test_missing_exactly_at_the_limit_and_the_day_window() -> None:
    assets = [asset("s", "a", 1), asset("s", "b", 2)]
    usages = [usage("s", "a", 3, NOW - 14 * DAY, power_on_h=1.0, powered=True),  # exactly 14 days: not yet missing
              usage("s", "b", 4, NOW - 14 * DAY - 1, readings=1)]
    rows = {r.asset: r for r in build_registry(assets, usages, NOW, WINDOW)}
    assert rows["a"].status == "idle" and rows["b"].status == "missing"


def test_usage_without_an_asset_record_still_counts_and_a_newer_asset_record_wins() -> None:
    newer = asset("s", "proj", 9, model="EB-992F", room="room-102")
    rows = build_registry([asset("s", "proj", 1, model="old", room="room-101"), newer],
                          [usage("s", "ghost", 2, NOW - DAY, readings=3)], NOW, WINDOW)
    assert [(r.asset, r.status) for r in rows] == [("ghost", "in use"), ("proj", "never seen")]
    assert rows[1].model == "EB-992F" and rows[1].room == "room-102"


def test_used_rules() -> None:
    assert used({"power_on_h": 0.1, "powered": True})
    assert not used({"power_on_h": 0, "powered": True, "readings": 100})  # polled while off
    assert used({"readings": 1}) and used({"seen": 1}) and used({"events": 2})
    assert not used({"readings": 0, "power_on_h": "3"})  # garbage is no use


def test_district_shares_sum_components_and_skip_undeclared_schools() -> None:
    assets = [asset("a", f"x{i}", i) for i in range(3)] + [asset("b", "y", 10)] + [asset("c", "z", 20)]
    usages = [usage("a", "x0", 30, NOW - DAY, readings=1), usage("b", "y", 31, NOW - DAY, readings=1)]
    schools = school_kpis(build_registry(assets, usages, NOW, WINDOW), {"a": 4, "b": 1})
    districts = district_kpis(schools, {"a": "quan-1", "b": "quan-1"})
    q1 = districts["quan-1"]
    assert (q1.on_record, q1.declared, q1.on_record_pct) == (4, 5, 80.0)  # (3 + 1) / (4 + 1)
    assert q1.in_use_pct == 50.0  # 2 of 4: not the mean of 33.3 % and 100 %
    assert districts[UNASSIGNED].on_record_pct is None and districts[UNASSIGNED].in_use_pct == 0.0
    over = school_kpis(build_registry(assets, [], NOW, WINDOW), {"a": 2})["a"]
    assert over.on_record_pct == 100.0  # 3 on record, 2 declared: capped, the declaration is out of date


def test_window_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        RegistryWindow(in_use_days=0)


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    store = EventStore(tmp_path / "events.db")
    import time

    now = int(time.time() * 1000)
    store.add("thpt-a", "gw-1", [
        {"seq": 1, "ts": now - DAY, "device": "proj-1", "type": "asset",
         "data": {"asset": "proj-1", "source": "device", "driver": "pjlink", "make": "Epson", "serial": "X1"}},
        {"seq": 2, "ts": now - DAY, "device": "_gateway", "type": "asset",
         "data": {"asset": "micro-01", "source": "inventory", "name": "Kính hiển vi", "serial": "=1+2"}},
        {"seq": 3, "ts": now, "device": "proj-1", "type": "asset_usage",
         "data": {"asset": "proj-1", "day": day(now), "power_on_h": 2.0, "powered": True, "last_seen": now}}])
    store.add("thcs-b", "gw-1", [{"seq": 1, "ts": now, "device": "k", "type": "asset",
                                   "data": {"asset": "kit-1", "source": "device", "driver": "kit"}}])
    return store


def test_load_registry_from_sqlite_filters_by_school(store: EventStore) -> None:
    import time

    now = int(time.time() * 1000)
    assert [(r.school, r.asset) for r in load_registry(store, now, WINDOW)] == [
        ("thcs-b", "kit-1"), ("thpt-a", "micro-01"), ("thpt-a", "proj-1")]
    rows = load_registry(store, now, WINDOW, schools=["thpt-a"])
    assert {r.asset: r.status for r in rows} == {"proj-1": "in use", "micro-01": "not tracked"}


def _cli(*args: str) -> Result:
    """``edugate assets ...``, in this process (central's typer app, as ``edugate`` registers it)."""
    return CliRunner().invoke(app, ["assets", *args])


def test_cli_list_and_export(store: EventStore, tmp_path: Path) -> None:
    store.close()
    config = tmp_path / "central.yaml"
    config.write_text(f"events:\n  db: {tmp_path / 'events.db'}\napi:\n  districts:\n    quan-1: [thpt-a]\n"
                      "assets:\n  declared:\n    thpt-a: 4\n")
    listed = _cli("list", "--config", str(config), "--district", "quan-1")
    assert listed.exit_code == 0, listed.output
    assert "thpt-a/gw-1/proj-1\tin use\t-\tEpson" in listed.stdout and "thcs-b" not in listed.stdout
    assert "school thpt-a: 2 on record (50 % of 4 declared); in use 100 % (1 of 1 observable)" in listed.stdout
    assert "district quan-1: 2 on record" in listed.stdout
    as_json = [json.loads(line) for line in _cli("list", "--config", str(config), "--json").stdout.splitlines()]
    assert {r["asset"] for r in as_json} == {"proj-1", "micro-01", "kit-1"}

    out = tmp_path / "assets.csv"
    exported = _cli("export", "--csv", str(out), "--config", str(config), "--school", "thpt-a")
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert [(r["asset"], r["status"], r["district"]) for r in rows] == [("micro-01", "not tracked", "quan-1"),
                                                                       ("proj-1", "in use", "quan-1")]
    assert rows[0]["name"] == "Kính hiển vi" and rows[0]["serial"] == "'=1+2"  # no formula in a spreadsheet

    wrong = _cli("list", "--config", str(config), "--district", "quan-9")
    assert wrong.exit_code == 2 and "'quan-9' has no schools (districts: quan-1)" in wrong.output
    missing = _cli("list", "--db", str(tmp_path / "nope.db"))
    assert missing.exit_code == 2 and "nope.db: no such event log" in missing.stderr


def test_first_seen_of_the_asset_record_counts_as_seen() -> None:
    """A device announced with its first sighting, before its first usage record, is idle, not never seen."""
    rows = build_registry([asset("s", "proj", 1, first_seen=NOW - DAY)], [], NOW, WINDOW)
    assert (rows[0].status, rows[0].last_seen) == ("idle", NOW - DAY)


def test_a_barcode_tag_does_not_make_an_item_observable() -> None:
    rows = build_registry([asset("s", "book-cart", 1, source="inventory", name="Cart", tag="8935001234567"),
                           asset("s", "robot", 2, source="inventory", name="Robot", tag="ble:C4:7F:51:00:00:01")],
                          [], NOW, WINDOW)
    assert [(r.asset, r.status) for r in rows] == [("book-cart", "not tracked"), ("robot", "never seen")]
