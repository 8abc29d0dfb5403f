"""Central's answer for one experiment session, by id, from the store.

A gateway sends a ``session`` event per device when a lab teacher starts and stops a session (labels
``session`` and ``action``), and the session's readings carry its id. Central finds the devices and the
start and stop times from those events (``/api/v1/export`` of ``edugate_event_count{type="session"}``), then
exports the devices' raw samples between them: the session's readings, as the store holds them, with no
gateway involved (it may be offline, or its copy deleted). With the event log (``edugate ingest --events-db``)
the answer also has the session's name and who started and stopped it.

``GET /api/sessions/{school}/{gateway}/{session}`` on central's pages (``edugate central``) returns it as
JSON; ``...?format=csv`` as CSV (one row per time and device).
"""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from edugate.contract.ids import ID_PATTERN
from edugate.contract.records import SESSION_PATTERN

DEVICE_SERIES_SKIP = re.compile(r"^edugate_(event|gateway|device)_")


class StoreLike(Protocol):
    url: str
    timeout_s: float
    token: str | None


class EventLog(Protocol):
    def query(self, *, type_: str | None = None, school: str | None = None, gateway: str | None = None,
              since_ms: int | None = None, limit: int = 100) -> list[dict[str, Any]]: ...


class SessionNotFound(LookupError):
    pass


class StoreUnavailable(OSError):
    pass


def export(store: StoreLike, match: str, start_ms: int | None = None,
           end_ms: int | None = None) -> list[dict[str, Any]]:
    """Raw samples (VictoriaMetrics ``/api/v1/export``): one dict per series, ``metric``, ``values``, ``timestamps``."""
    params: list[tuple[str, str]] = [("match[]", match)]
    if start_ms is not None:
        params.append(("start", f"{start_ms / 1000:.3f}"))
    if end_ms is not None:
        params.append(("end", f"{end_ms / 1000:.3f}"))
    request = urllib.request.Request(f"{store.url}/api/v1/export?{urllib.parse.urlencode(params)}")
    if store.token:
        request.add_header("Authorization", f"Bearer {store.token}")
    try:
        with urllib.request.urlopen(request, timeout=store.timeout_s) as resp:
            body = resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise StoreUnavailable(f"store answered HTTP {exc.code}: {exc.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise StoreUnavailable(f"store {store.url} not answering: {exc}") from None
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def session_from_store(store: StoreLike, school: str, gateway: str, session: str,
                       events: EventLog | None = None) -> dict[str, Any]:
    """The session's metadata and readings; :class:`SessionNotFound` if the store has no start for it."""
    for value, pattern in ((school, ID_PATTERN), (gateway, ID_PATTERN), (session, SESSION_PATTERN)):
        if not re.fullmatch(pattern, value):
            raise SessionNotFound(f"{value!r} is not a valid id")
    where = f'school="{school}",gateway="{gateway}"'
    marks = export(store, f'edugate_event_count{{type="session",session="{session}",{where}}}')
    started: dict[str, int] = {}
    stopped: dict[str, int] = {}
    rooms: dict[str, str | None] = {}
    for series in marks:
        device = series["metric"].get("device")
        action = series["metric"].get("action")
        if not device or not series.get("timestamps"):
            continue
        rooms[device] = series["metric"].get("room")
        if action == "started":
            started[device] = min(series["timestamps"])
        elif action == "stopped":
            stopped[device] = max(series["timestamps"])
    if not started:
        raise SessionNotFound(f"no session {session} of {school}/{gateway} in the store")
    rows: list[dict[str, Any]] = []
    names: set[str] = set()
    for device, start in sorted(started.items()):
        end = stopped.get(device)
        match = f'{{__name__=~"edugate_.+",{where},device="{device}"}}'
        by_ts: dict[int, dict[str, float]] = {}
        for series in export(store, match, start, end):
            name = series["metric"].get("__name__", "")
            if DEVICE_SERIES_SKIP.match(name):
                continue
            name = name.removeprefix("edugate_")
            names.add(name)
            for ts, value in zip(series["timestamps"], series["values"], strict=False):
                if start <= ts and (end is None or ts <= end):
                    by_ts.setdefault(ts, {})[name] = value
        rows += [{"ts": ts, "device": device, "room": rooms.get(device), "values": values}
                 for ts, values in sorted(by_ts.items())]
    meta: dict[str, Any] = {
        "session": session, "school": school, "gateway": gateway, "devices": sorted(started),
        "started_at": min(started.values()), "stopped_at": max(stopped.values()) if stopped else None,
        "running": len(stopped) < len(started), "values": sorted(names), "rows": len(rows)}
    if events is not None:
        meta |= _from_event_log(events, school, gateway, session)
    return meta | {"readings": sorted(rows, key=lambda r: (r["ts"], r["device"]))}


def _from_event_log(events: EventLog, school: str, gateway: str, session: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for event in events.query(type_="session", school=school, gateway=gateway, limit=10_000):
        data = event.get("data") or {}
        if data.get("session") != session:
            continue
        found["name"] = data.get("name", found.get("name"))
        if data.get("action") == "started":
            found["started_by"] = data.get("by")
        elif data.get("action") == "stopped":
            found["stopped_by"] = data.get("by")
    return found


def session_csv(answer: dict[str, Any], timezone: str) -> str:
    """``time,ts_ms,device,room,<values...>``, like the gateway's own session CSV."""
    zone = ZoneInfo(timezone)
    names: list[str] = answer["values"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", "ts_ms", "device", "room", *names])
    readings: Iterable[dict[str, Any]] = answer["readings"]
    for r in readings:
        writer.writerow([datetime.fromtimestamp(r["ts"] / 1000, zone).isoformat(timespec="milliseconds"), r["ts"],
                         r["device"], r["room"] or "", *("" if (v := r["values"].get(n)) is None else _number(v)
                                                         for n in names)])
    return out.getvalue()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))
