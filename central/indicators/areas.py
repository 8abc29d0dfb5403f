"""Which district each school is in, written to the time-series store for the operations centre's dashboards.

The gateways' series carry ``school`` but not the district (central.yaml ``api.districts`` says which). So that
Grafana can add schools up per district, ``edugate api`` writes one sample per configured school, series
``central_school_info{school, district} = 1``, at start and every ``INTERVAL_S``; the dashboards join on it
(``* on (school) group_left (district) ...``). A school moved to another district shows in both for a day.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from edugate.central.config import StoreSection
from edugate.central.indicators.compute import StoreUnavailable

log = logging.getLogger(__name__)
INTERVAL_S = 300.0
MEASUREMENT = "central_school"  # field info -> series central_school_info (not edugate_*: those are the gateways')


def lines(districts: Mapping[str, Iterable[str]], at_ms: int) -> list[str]:
    """One line-protocol line per configured school (ids are the contract's: no escaping needed)."""
    return [f"{MEASUREMENT},district={district},school={school} info=1 {at_ms}"
            for district, schools in sorted(districts.items()) for school in sorted(schools)]


def write(store: StoreSection, districts: Mapping[str, Iterable[str]], at_ms: int | None = None) -> int:
    """Write the district of every configured school now (or at ``at_ms``); the number of schools written."""
    records = lines(districts, int(time.time() * 1000) if at_ms is None else at_ms)
    if not records:
        return 0
    token = Path(store.token_file).read_text().strip() if store.token_file else ""
    try:
        with InfluxDBClient(url=store.url, token=token, org=store.org, timeout=10_000) as client:
            client.write_api(write_options=SYNCHRONOUS).write(store.bucket, store.org, records,
                                                              write_precision=WritePrecision.MS)
    except Exception as exc:  # influxdb-client raises urllib3's errors and its own
        raise StoreUnavailable(f"store {store.url}: writing the schools' districts failed: {exc}") from None
    return len(records)


def keep_writing(store: StoreSection, districts: Mapping[str, Iterable[str]], stop: threading.Event,
                 interval_s: float = INTERVAL_S) -> None:
    """``write`` at once and every ``interval_s`` until ``stop`` is set (a failed write is logged, retried)."""
    while True:
        try:
            write(store, districts)
        except StoreUnavailable as exc:
            log.warning("%s", exc)
        if stop.wait(interval_s):
            return
