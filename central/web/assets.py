"""Central's Equipment page: every school's asset registry (from the event store) with its status, the KPIs
per school and district (:mod:`edugate.central.assets.kpi`), and the registry as CSV. The fleet view shows the
KPIs per school too (:meth:`AssetPages.kpis`).

The event store is read off the event loop; what it said is reused for ``cache_s`` seconds, so a page
refreshed by many operators does not re-read it each time."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from edugate.central.assets.export import local, registry_csv
from edugate.central.assets.kpi import district_kpis, school_kpis
from edugate.central.assets.registry import STATUSES, AssetRow, EventSource, RegistryWindow, load_registry
from edugate.common.web.site import Viewer, page

FilterQuery = Annotated[str | None, Query(max_length=64, description="'' or absent: no filter.")]


class RegistryUnavailable(OSError):
    """The event store did not answer; the message says why."""


@dataclass
class _Read:
    at: float = 0.0  # monotonic time of the read (0: never)
    rows: list[AssetRow] | None = None
    error: RegistryUnavailable | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class AssetPages:
    """The registry for the pages: an event store, the schools' declared counts, and where schools belong.

    A school's or a district's registry is read for those schools only (the event store's (school, type, ts)
    index: milliseconds per school); the whole city's is one long read (seconds per hundred schools, see
    docs/benchmarks.md). One read at a time per set of schools; the pages reuse a read for ``cache_s``; the
    fleet view's equipment section shows the city's last read, never waits for one, and starts a new one in
    the background when it is older than ``city_cache_s``."""

    open_store: Callable[[], EventSource] | None  # None: central runs without an event store
    window: RegistryWindow = field(default_factory=RegistryWindow)
    declared: Mapping[str, int] = field(default_factory=dict)
    districts: Callable[[], Mapping[str, str]] = dict  # school -> district (config, then the gateways' states)
    cache_s: float = 10.0
    city_cache_s: float = 300.0
    _reads: dict[tuple[str, ...] | None, _Read] = field(default_factory=dict)

    def _read(self, schools: tuple[str, ...] | None) -> list[AssetRow]:
        if self.open_store is None:
            raise RegistryUnavailable("central has no event store (events.db or events.postgres_dsn in "
                                      "central.yaml): the registry is built from it")
        store: EventSource | None = None
        try:
            store = self.open_store()
            return load_registry(store, int(time.time() * 1000), self.window, schools=schools)
        except (OSError, sqlite3.Error) as exc:  # the PostgreSQL store's EventStoreUnavailable is a sqlite3.Error
            raise RegistryUnavailable(f"event store: {exc}") from None
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()

    async def _refresh(self, key: tuple[str, ...] | None, read: _Read) -> None:
        try:
            rows = await asyncio.to_thread(self._read, key)
        except RegistryUnavailable as exc:
            read.error, read.at = exc, time.monotonic()
            return
        read.rows, read.error, read.at = rows, None, time.monotonic()

    async def _rows(self, key: tuple[str, ...] | None, wait: bool = True) -> list[AssetRow] | None:
        """The registry of these schools (None: every school), re-read when older than its cache time; one read
        at a time per key. ``wait=False``: what is there now (None: nothing yet), a re-read started behind."""
        read = self._reads.setdefault(key, _Read())
        max_age = self.cache_s if wait else self.city_cache_s
        if read.at == 0.0 or time.monotonic() - read.at > max_age:
            if read.task is None or read.task.done():
                read.task = asyncio.create_task(self._refresh(key, read))
            if wait:
                await asyncio.shield(read.task)
        if read.error is not None and (wait or read.rows is None):
            raise read.error
        return read.rows

    async def rows(self, district: str | None = None, school: str | None = None) -> list[AssetRow]:
        where = self.districts()
        key: tuple[str, ...] | None = None
        if school:
            key = (school,)
        elif district:
            key = tuple(sorted(s for s, d in where.items() if d == district))
        rows = [r for r in (await self._rows(key) if key != () else []) or []
                if not district or where.get(r.school) == district]
        for row in rows:
            row.district = where.get(row.school, "")
        return rows

    async def view(self, district: str | None = None, school: str | None = None,
                   status: str | None = None) -> dict[str, Any]:
        """What the page shows: the assets (filtered), KPIs per school and district, or the error."""
        try:
            rows = await self.rows(district, school)
        except RegistryUnavailable as exc:
            return {"error": str(exc), "assets": [], "schools": [], "districts": [], "all_schools": [],
                    "all_districts": [], "district": district or "", "school": school or "", "status": status or ""}
        where = self.districts()
        declared = {s: n for s, n in self.declared.items()
                    if (not school or s == school) and (not district or where.get(s) == district)}
        schools = school_kpis(rows, declared, declared)
        tz = self.window.timezone
        shown = [r.as_dict() | {"last_seen_local": local(r.last_seen, tz) or "never"} for r in rows
                 if not status or r.status == status]
        return {"error": None, "assets": shown, "schools": [k.as_dict() for k in schools.values()],
                "districts": [k.as_dict() for k in district_kpis(schools, where).values()],
                "all_schools": sorted({r.school for r in rows} | set(self.declared) | set(where)),
                "all_districts": sorted(set(where.values())), "statuses": STATUSES,
                "district": district or "", "school": school or "", "status": status or "",
                "window": {"in_use_days": self.window.in_use_days,
                           "missing_after_days": self.window.missing_after_days}}

    async def kpis(self, district: str | None = None, school: str | None = None) -> dict[str, Any]:
        """Per school: the two KPIs, for the fleet view (an error instead when the store does not answer). The
        whole city's come from the last read (never waited for: "pending" until the first one is done)."""
        if district or school:
            view = await self.view(district, school)
            return {"error": view["error"], "pending": False, "schools": {k["area"]: k for k in view["schools"]}}
        try:
            rows = await self._rows(None, wait=False)
        except RegistryUnavailable as exc:
            return {"error": str(exc), "pending": False, "schools": {}}
        if rows is None:
            return {"error": None, "pending": True, "schools": {}}
        where = self.districts()
        for row in rows:
            row.district = where.get(row.school, "")
        schools = school_kpis(rows, self.declared, self.declared)
        return {"error": None, "pending": False, "schools": {k: v.as_dict() for k, v in schools.items()}}


def add_asset_routes(app: FastAPI, assets: AssetPages) -> None:
    @app.get("/assets", response_class=HTMLResponse, summary="Every school's equipment (the asset registry)")
    async def assets_page(request: Request, who: Viewer, district: FilterQuery = None, school: FilterQuery = None,
                          status: FilterQuery = None) -> Response:
        return page(request, "assets.html", who, {"a": await assets.view(district, school, status)})

    @app.get("/api/assets", summary="The asset registry and its KPIs (JSON)")
    async def api_assets(who: Viewer, district: FilterQuery = None, school: FilterQuery = None,
                         status: FilterQuery = None) -> dict[str, Any]:
        return await assets.view(district, school, status)

    @app.get("/assets.csv", summary="The asset registry as CSV", responses={502: {"description": "No event store"}})
    async def assets_csv(who: Viewer, district: FilterQuery = None, school: FilterQuery = None) -> Response:
        try:
            rows = await assets.rows(district, school)
        except RegistryUnavailable as exc:
            raise HTTPException(502, str(exc)) from None
        name = "-".join(x for x in ("assets", district, school) if x)
        return Response(registry_csv(rows, assets.window.timezone), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
