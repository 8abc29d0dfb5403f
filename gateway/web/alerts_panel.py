"""The alerts panel of the status page and its one action: acknowledging an alert.

:meth:`edugate.gateway.services.alerts.AlertsService.status` keeps the raised alerts, the recent alert events
and the rules in force; :func:`alerts_view` turns them into what ``templates/_alerts.html`` draws (local
times, ages, readable conditions). Every key may be missing or wrong (an older service, a gateway that just
started): the panel then shows less, never fails the page.

Acknowledging is open to every logged-in user (a lab teacher is a viewer): ``POST
/api/alerts/{rule}/{device}/ack`` with the CSRF token runs the service's ``alerts.ack`` command (the
same handler as the signed command from central), which logs who acknowledged and sends an
``acknowledged`` event. The alert stays listed until its value is back within the limit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from edugate.common.web.site import Viewer, check_csrf
from edugate.common.web.timefmt import ago, local_time
from edugate.drivers.base import ID_PATTERN
from edugate.gateway.services.alerts import RULE_ID_PATTERN, AckArgs, NoSuchAlert
from edugate.gateway.services.base import Service

log = logging.getLogger(__name__)

CONDITIONS = {"above": "above", "below": "below", "outside": "outside the band", "rate": "changing too fast",
              "no_data": "no data"}
STATES = {"raised": "raised", "cleared": "cleared", "acknowledged": "acknowledged"}


@dataclass(frozen=True)
class ActiveRow:
    rule: str
    device: str
    room: str
    severity: str
    what: str  # "temperature 9.1 (limit 8)"
    description: str
    since: str  # local time
    since_ago: str
    acked_by: str
    acked_at: str


@dataclass(frozen=True)
class EventRow:
    time: str
    ago: str
    device: str
    rule: str
    state: str
    severity: str
    what: str


@dataclass(frozen=True)
class RuleRow:
    id: str
    severity: str
    limit: str
    source: str
    devices: str
    extra: str  # "for 60 s, hysteresis 0.5"


@dataclass(frozen=True)
class AlertsPanel:
    active: list[ActiveRow]
    recent: list[EventRow]
    rules: list[RuleRow]
    raised: int
    cleared: int
    acknowledged: int
    rules_version: int
    rules_file: str
    rules_error: str

    @property
    def critical(self) -> int:
        return sum(a.severity == "critical" for a in self.active)


def alerts_view(info: Mapping[str, Any] | None, tz: str, now: float | None = None) -> AlertsPanel:
    info = info if isinstance(info, Mapping) else {}
    now = time.time() if now is None else now
    active = []
    for a in _list(info.get("active")):
        a = _dict(a)
        raised = _seconds(a.get("raised_at"))
        acked = _seconds(a.get("acked_at"))
        active.append(ActiveRow(
            rule=str(a.get("rule") or "?"), device=str(a.get("device") or "?"), room=str(a.get("room") or ""),
            severity=str(a.get("severity") or "warning"),
            what=_what(a.get("condition"), a.get("name"), a.get("last_value", a.get("value")), a.get("limit")),
            description=str(a.get("description") or ""), since=local_time(raised, tz),
            since_ago=ago(raised, now) if raised else "", acked_by=str(a.get("acked_by") or ""),
            acked_at=local_time(acked, tz)))
    recent = []
    for e in _list(info.get("recent")):
        e = _dict(e)
        ts = _seconds(e.get("ts"))
        recent.append(EventRow(time=local_time(ts, tz), ago=ago(ts, now) if ts else "",
                               device=str(e.get("device") or "?"), rule=str(e.get("rule") or "?"),
                               state=STATES.get(str(e.get("state")), str(e.get("state"))),
                               severity=str(e.get("severity") or ""),
                               what=_what(e.get("condition"), e.get("name"), e.get("value"), e.get("limit"))
                               + (f", by {e['by']}" if e.get("by") else "")))
    rules = []
    for r in _list(info.get("rules")):
        r = _dict(r)
        extra = []
        if _number(r.get("for_s")):
            extra.append(f"for {r['for_s']:g} s")
        if _number(r.get("hysteresis")):
            extra.append(f"hysteresis {r['hysteresis']:g}")
        devices = [str(d) for d in _list(r.get("devices"))]
        rules.append(RuleRow(id=str(r.get("id") or "?"), severity=str(r.get("severity") or ""),
                             limit=str(r.get("limit") or ""), source=str(r.get("source") or ""),
                             devices=", ".join(devices) if devices else "no device of this gateway",
                             extra=", ".join(extra)))
    return AlertsPanel(active=active, recent=recent, rules=rules, raised=_int(info.get("raised")),
                       cleared=_int(info.get("cleared")), acknowledged=_int(info.get("acknowledged")),
                       rules_version=_int(info.get("rules_version")), rules_file=str(info.get("rules_file") or ""),
                       rules_error=str(info.get("rules_error") or ""))


def add_alert_routes(app: FastAPI, services: Mapping[str, Service]) -> None:
    """The acknowledge action (``services``: the gateway's running services by name, ``alerts`` among them)."""

    @app.post("/api/alerts/{rule}/{device}/ack", summary="Acknowledge a raised alert (any logged-in user; CSRF)",
              responses={404: {"description": "No such raised alert, or no alerts on this gateway"}})
    async def acknowledge(request: Request, who: Viewer, rule: Annotated[str, Path(pattern=RULE_ID_PATTERN)],
                          device: Annotated[str, Path(pattern=ID_PATTERN)]) -> Response:
        form = await check_csrf(request, who)
        service = services.get("alerts")
        command = service.commands().get("alerts.ack") if service is not None else None
        if command is None:
            raise HTTPException(404, "no alerts service on this gateway")
        try:
            result = await command.handler(AckArgs(rule=rule, device=device, by=who.user.name))
        except NoSuchAlert as exc:
            raise HTTPException(404, str(exc)) from None
        log.info("alert %s at %s acknowledged on the status page by %s (%s)", rule, device, who.user.name,
                 who.user.role)
        if form.get("csrf"):  # the page's form: back to the status page
            return RedirectResponse("/status#alerts", status_code=303)
        return JSONResponse(result)


def _what(condition: Any, name: Any, value: Any, limit: Any) -> str:
    cond = CONDITIONS.get(str(condition), str(condition or ""))
    number, bound = _number(value), _number(limit)
    if condition == "no_data":
        return f"no {name or 'reading'} for {number:g} min" if number is not None else "no data"
    text = f"{name or 'value'} {number:g}" if number is not None else str(name or "value")
    if condition == "rate":
        text += "/min"
    if condition == "outside" and number is not None and bound is not None:
        cond = "above" if number > bound else "below"
    if bound is not None:
        text += f" ({cond} {bound:g}{'/min' if condition == 'rate' else ''})"
    return text


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _seconds(ts_ms: Any) -> float | None:
    number = _number(ts_ms)
    return number / 1000 if number is not None and 0 < number < 253_370_764_800_000 else None


def _int(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 0
