"""A period's published figures for a given central.yaml: the open API's rows with the settings they were made
with. The one function behind the supervision report and the push adapter (the API serves the same rows)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from edugate.central.config import CentralConfig
from edugate.central.indicators.anonymise import Rule, rows
from edugate.central.indicators.compute import school_figures
from edugate.central.indicators.periods import current_period


def figures_document(cfg: CentralConfig, period_name: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """``{period, from, to, complete, generated, k, round_to, items}``; raises PeriodError, StoreUnavailable."""
    now = now or dt.datetime.now(dt.UTC)
    period = current_period(period_name, cfg.pages.timezone, now)
    schools = school_figures(cfg.store.url, cfg.events.db, period, now, cfg.api.health_interval_s,
                             cfg.events.postgres_dsn, cfg.api.expected_students)
    rule = Rule(cfg.api.k, cfg.api.round_to)
    return {"period": period.name, "from": period.start.isoformat(), "to": period.end.isoformat(),
            "complete": period.complete(now), "generated": now.astimezone(period.start.tzinfo).isoformat(
                timespec="minutes"), "k": rule.k, "round_to": rule.base,
            "items": rows(schools, cfg.api.districts, period, now, rule)}
