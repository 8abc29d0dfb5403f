"""The Equipment page's reads (:class:`edugate.central.web.assets.AssetPages`) over a real SQLite event store: a
school's or district's registry reads only those schools; the fleet view's city-wide KPIs never wait for a read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from edugate.central.eventstore import EventStore
from edugate.central.web.assets import AssetPages
from tests.helpers import wait_for_async


class CountingStore(EventStore):
    """The real store, remembering which schools were asked for."""

    asked: ClassVar[list[str | None]] = []

    def query(self, **filters: Any) -> list[dict[str, Any]]:
        CountingStore.asked.append(filters.get("school"))
        return super().query(**filters)


def fill(path: Path) -> None:
    store = EventStore(path)
    now = int(time.time() * 1000)
    for school in ("thpt-a", "thpt-b", "thcs-c"):
        store.add(school, "gw-1", [{"seq": 1, "ts": now, "device": "p", "type": "asset",
                                     "data": {"asset": "proj", "source": "device", "first_seen": now}}])
    store.close()


async def test_filtered_reads_and_the_fleet_view_never_waits(tmp_path: Path) -> None:
    fill(tmp_path / "events.db")
    CountingStore.asked = []
    pages = AssetPages(lambda: CountingStore(tmp_path / "events.db"), declared={"thpt-a": 2},
                       districts=lambda: {"thpt-a": "quan-1", "thpt-b": "quan-1", "thcs-c": "quan-7"})
    rows = await pages.rows(school="thpt-a")
    assert [r.school for r in rows] == ["thpt-a"] and set(CountingStore.asked) == {"thpt-a"}
    CountingStore.asked = []
    rows = await pages.rows(district="quan-1")
    assert {r.school for r in rows} == {"thpt-a", "thpt-b"} and set(CountingStore.asked) == {"thpt-a", "thpt-b"}
    assert [r.district for r in rows] == ["quan-1", "quan-1"]

    first = await pages.kpis()  # the whole city: not read yet, so "pending", and a read starts behind
    assert first["pending"] and first["schools"] == {}
    done = await wait_for_async(lambda: pages._reads.get(None) and pages._reads[None].rows, 10, "the city's read")
    assert len(done) == 3
    city = await pages.kpis()
    assert not city["pending"] and city["schools"]["thpt-a"]["on_record_pct"] == 50.0
    assert set(city["schools"]) == {"thpt-a", "thpt-b", "thcs-c"}


async def test_without_an_event_store_the_page_says_so(tmp_path: Path) -> None:
    pages = AssetPages(None)
    first = await pages.kpis()  # the fleet view does not wait: pending, the read fails behind
    assert first["pending"]
    await wait_for_async(lambda: pages._reads[None].error, 5, "the failed read")
    assert "central has no event store" in (await pages.kpis())["error"]
    assert "central has no event store" in (await pages.view())["error"]

    def no_file() -> EventStore:
        raise FileNotFoundError(f"{tmp_path}/events.db: no such event log yet (has 'edugate ingest' run?)")

    assert "no such event log yet" in (await AssetPages(no_file).view(school="thpt-a"))["error"]
