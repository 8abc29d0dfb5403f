"""The open API: ``GET /api/v1/indicators`` (the catalogue) and ``GET /api/v1/figures`` (anonymised figures).

Read-only, versioned by its path, one API key per consumer (``X-API-Key``), a rate limit per key, paged,
filterable by level, indicator, district, school and period, JSON or CSV. Every figure row comes from
:func:`edugate.central.indicators.anonymise.rows`: the same rows the supervision report prints.

``python -m edugate.central.api.app --openapi`` prints the OpenAPI document (``docs/api/openapi.json``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from edugate.central.api import keys as keyfile
from edugate.central.config import ApiSection
from edugate.central.indicators.anonymise import Rule, rows
from edugate.central.indicators.catalogue import CATALOGUE
from edugate.central.indicators.compute import Figures, StoreUnavailable, school_figures
from edugate.central.indicators.periods import PERIOD_PATTERN, PeriodError, current_period
from edugate.contract.ids import ID_PATTERN

log = logging.getLogger(__name__)

VERSION = "1.0.0"
MAX_PAGE = 1000
COLUMNS = ["indicator", "unit", "level", "area", "district", "period", "from", "to", "complete", "value", "status"]
INDICATOR_PATTERN = "^(" + "|".join(i.name for i in CATALOGUE) + ")$"


HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your consumer's key "
                      "('edugate api-key add NAME' on central).")


class CatalogueEntry(BaseModel):
    name: str
    title: str
    unit: str
    kind: Literal["count", "percent", "median_minutes"]
    source: str
    missing: str
    personal: bool = Field(description="A count of children's actions: suppressed below k, rounded above.")


class Catalogue(BaseModel):
    indicators: list[CatalogueEntry]


class FigureRow(BaseModel):
    indicator: str
    unit: str
    level: Literal["city", "district", "school"]
    area: str = Field(description="'city', a district id or a school id.")
    district: str | None = Field(description="The area's district (null for the city).")
    period: str
    from_: str = Field(alias="from", description="Start of the period (ISO 8601, the schools' time zone).")
    to: str = Field(description="End of the period, exclusive.")
    complete: bool = Field(description="False while the period is in progress.")
    value: float | None = Field(description="Null when suppressed or without data.")
    status: Literal["ok", "suppressed", "no_data"]


class FigurePage(BaseModel):
    period: str
    k: int = Field(description="Counts of children's actions below k are suppressed.")
    round_to: int = Field(description="Other such counts are rounded to a multiple of this.")
    page: int
    page_size: int
    total: int
    items: list[FigureRow]


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No API key, or not a valid one."},
    429: {"model": Problem, "description": "Rate limit of this key exceeded; see Retry-After."},
}


@dataclass
class RateLimiter:
    """A token bucket per consumer: ``per_minute`` requests a minute, bursts up to ``per_minute``."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, who: str) -> float:
        """0 if allowed now, else the seconds to wait."""
        rate = self.per_minute / 60.0
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(who, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[who] = (tokens - 1, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1 - tokens) / rate


@dataclass
class Sources:
    """Where figures come from, and a short cache of each period's school figures."""

    store_url: str
    events_db: Path | None
    timezone: str
    settings: ApiSection
    events_dsn: str | None = None  # central.yaml events.postgres_dsn: the shared event database instead
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    _cache: dict[str, tuple[float, dict[str, Figures]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def figures(self, period_name: str) -> tuple[list[dict[str, Any]], int]:
        now = self.clock()
        period = current_period(period_name, self.timezone, now)
        with self._lock:
            cached = self._cache.get(period.name)
            if cached is None or time.monotonic() - cached[0] > self.settings.cache_s:
                schools = school_figures(self.store_url, self.events_db, period, now,
                                         self.settings.health_interval_s, self.events_dsn,
                                         self.settings.expected_students)
                self._cache[period.name] = cached = (time.monotonic(), schools)
                if len(self._cache) > 256:
                    self._cache.pop(next(iter(self._cache)))
        rule = Rule(self.settings.k, self.settings.round_to)
        return rows(cached[1], self.settings.districts, period, now, rule), rule.base


def to_csv(items: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(items)
    return buf.getvalue()


def build_api(sources: Sources, keys_file: Path) -> FastAPI:
    app = FastAPI(title="EduGate operations centre API", version=VERSION, docs_url=None, redoc_url=None,
                  description="Aggregated, anonymised indicators of the city's schools (read-only). Each figure: "
                  "docs/metrics.md; counts of children's actions below k are suppressed and others rounded.")
    limiter = RateLimiter(sources.settings.rate_per_minute)
    key_cache: dict[str, Any] = {"mtime": None, "keys": {}}

    def consumer(key: Annotated[str | None, Security(HEADER)]) -> str:
        try:
            mtime = keys_file.stat().st_mtime_ns
        except OSError:
            mtime = None
        if mtime != key_cache["mtime"]:
            try:
                key_cache["keys"] = keyfile.load(keys_file)
            except keyfile.KeyFileError as exc:
                log.error("%s", exc)
                key_cache["keys"] = {}
            key_cache["mtime"] = mtime
        who = keyfile.consumer(key_cache["keys"], key) if key else None
        if who is None:
            raise HTTPException(401, "no valid X-API-Key header", headers={"WWW-Authenticate": "X-API-Key"})
        wait = limiter.take(who)
        if wait:
            raise HTTPException(429, f"rate limit of {sources.settings.rate_per_minute} requests a minute "
                                "exceeded", headers={"Retry-After": str(max(1, round(wait)))})
        return who

    keyed = [Depends(consumer)]

    @app.get("/api/v1/indicators", response_model=Catalogue, responses=ERRORS, tags=["indicators"],
             dependencies=keyed)
    def indicators() -> Catalogue:
        """The metrics catalogue: every indicator's unit, source and how missing data is treated."""
        return Catalogue(indicators=[CatalogueEntry(name=i.name, title=i.title, unit=i.unit, kind=i.kind,
                                                    source=i.source, missing=i.missing, personal=i.personal)
                                     for i in CATALOGUE])

    @app.get("/api/v1/figures", response_model=FigurePage, tags=["indicators"], dependencies=keyed, responses={
        **ERRORS,
        200: {"content": {"text/csv": {"schema": {"type": "string"}}},
              "description": "The page's rows (JSON), or with format=csv the rows as CSV with a header."},
        404: {"model": Problem, "description": "No such period: it does not exist (2026-02-30, a week 53 in a "
              "year of 52), is before 2000 or has not begun."},
        503: {"model": Problem, "description": "The time-series store is not answering."}})
    def figures(
        period: Annotated[str, Query(pattern=PERIOD_PATTERN, description="YYYY-MM-DD, YYYY-Www (ISO week), "
                                     "YYYY-MM or YYYY-H1/H2, in the schools' time zone.")],
        level: Annotated[Literal["city", "district", "school"] | None, Query()] = None,
        indicator: Annotated[str | None, Query(pattern=INDICATOR_PATTERN, description="One indicator of "
                                               "/api/v1/indicators.")] = None,
        district: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
        school: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> Any:
        """Anonymised figures of one period, city, districts and schools; filters select rows only."""
        try:
            items, base = sources.figures(period)
        except PeriodError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        except StoreUnavailable as exc:
            log.warning("%s", exc)
            return JSONResponse({"detail": "the time-series store is not answering; try again later"},
                                status_code=503)
        selected = [r for r in items if (level is None or r["level"] == level)
                    and (indicator is None or r["indicator"] == indicator)
                    and (district is None or r["district"] == district)
                    and (school is None or (r["level"] == "school" and r["area"] == school))]
        chosen = selected[(page - 1) * page_size: page * page_size]
        if format == "csv":
            return Response(to_csv(chosen), media_type="text/csv")
        return {"period": period, "k": sources.settings.k, "round_to": base, "page": page, "page_size": page_size,
                "total": len(selected), "items": chosen}

    return app


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, independent of any configuration (``docs/api/openapi.json``)."""
    app = build_api(Sources("http://127.0.0.1:8428", None, "Asia/Ho_Chi_Minh", ApiSection()), Path("/nonexistent"))
    return app.openapi()


if __name__ == "__main__":
    if sys.argv[1:] == ["--openapi"]:
        sys.stdout.write(json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n")
    else:
        sys.exit("usage: python -m edugate.central.api.app --openapi")
