"""Central's fleet view: every school and gateway, online or offline, backlog, devices in error, alerts.

``edugate central`` is its own small process, next to the ingest workers:

* it follows every gateway's retained ``edu/v1/+/+/state`` with a plain,
  clean-session subscription of its own (the broker hands it the whole table
  on connect: births, periodic refreshes and last wills), parsed by the same
  :mod:`edugate.central.fleet` code as the ingest workers;
* it asks the store (VictoriaMetrics, PromQL over ``/api/v1/query`` and
  ``/api/v1/query_range``) for what only the store has: outbox backlog and
  fill from the gateways' health records, alert events, and the plots.

Why not inside ``edugate ingest``: ingest workers are replicated behind a
shared subscription and acknowledge messages only after the store took
them; a web server there would run N times and share a process with the
acknowledgement path. This process needs read access only (subscribe to
``state``, query the store) and can restart, or be down, without touching
the data path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Annotated, Any

import aiomqtt
import orjson
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from edugate.central.card_rules import rule_mismatches
from edugate.central.fleet import FleetTable, InvalidState, parse_state
from edugate.central.sessions import SessionNotFound, StoreUnavailable, session_csv, session_from_store
from edugate.central.web.assets import AssetPages, add_asset_routes
from edugate.common.mqtt import Backoff, BrokerAddress, BrokerConfig, Failover, MqttTls, ReconnectPolicy, aiomqtt_client
from edugate.common.web.serve import serve_app
from edugate.common.web.site import SiteAuth, Viewer, build_site, page
from edugate.common.web.timefmt import ago, local_time
from edugate.contract.ids import ID_PATTERN
from edugate.contract.records import SESSION_PATTERN
from edugate.contract.topics import TOPIC_ROOT, InvalidTopic, parse_topic

log = logging.getLogger(__name__)

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"
"""Central's own pages (fleet, one gateway); they extend the shared ``base.html`` of ``common/web``."""
RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
POINTS = 720  # per plot at most (1 h: one point per 5 s)
SILENT_S = 300  # an "online" gateway whose state has not been refreshed for this long is flagged
FILL_ALERT = 0.8  # outbox over 80 % of its disk budget
ACTIVE_ALERTS = ('last_over_time(edugate_event_value{type="alert"}[7d]) and on (school, gateway, device, rule) '
                 '(last_over_time(edugate_event_active{type="alert"}[7d]) > 0)')
"""The gateways' threshold alerts still raised (their last ``alert`` event says active 1), with their value."""
FilterQuery = Annotated[str | None, Query(max_length=64, description="'' or absent: no filter.")]
IdPath = Annotated[str, Path(pattern=ID_PATTERN, description="A school or gateway id.")]


class StoreError(OSError):
    """The store did not answer, or answered with an error; the message says which."""


@dataclass
class Store:
    """PromQL queries against VictoriaMetrics (or Prometheus-compatible) over HTTP, off the event loop."""

    url: str
    timeout_s: float = 5.0
    token: str | None = None

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        request = urllib.request.Request(f"{self.url}{path}?{urllib.parse.urlencode(params)}")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise StoreError(f"store answered HTTP {exc.code}: {exc.read()[:200]!r}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StoreError(f"store {self.url} not answering: {exc}") from None
        if doc.get("status") != "success":
            raise StoreError(f"store query failed: {doc.get('error', doc)}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    async def query(self, promql: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._get, "/api/v1/query", {"query": promql})

    async def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._get, "/api/v1/query_range",
                                       {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                        "step": f"{step:.0f}s"})


@dataclass
class StateFollower:
    """Follows every gateway's retained state topic; keeps the fleet table and each gateway's district."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca_file: pathlib.Path | None = None
    tls: bool = False
    client_id: str = "edugate-central"
    broker: BrokerConfig | None = None  # the whole broker section (failover, mTLS); None: from the fields above
    table: FleetTable = field(default_factory=FleetTable)
    districts: dict[tuple[str, str], str | None] = field(default_factory=dict)
    connected: bool = False
    last_error: str | None = None
    invalid: int = 0

    def apply(self, topic: str, payload: bytes, received_ms: int | None = None) -> None:
        received_ms = received_ms if received_ms is not None else int(time.time() * 1000)
        try:
            parsed = parse_topic(topic)
            doc, _problems = parse_state(payload)
        except (InvalidTopic, InvalidState) as exc:
            self.invalid += 1
            log.warning("%s: state ignored: %s", topic, exc)
            return
        key = (parsed.school, parsed.gateway)
        if doc is None:
            self.table.forget(*key)
            self.districts.pop(key, None)
            return
        self.table.apply(parsed.school, parsed.gateway, doc, received_ms)
        if doc.online:
            district = orjson.loads(payload).get("district")
            self.districts[key] = district if isinstance(district, str) else None
        else:
            self.districts.setdefault(key, None)

    def broker_config(self) -> BrokerConfig:
        if self.broker is not None:
            return self.broker
        return BrokerConfig(brokers=[str(BrokerAddress(self.host, self.port))], username=self.username,
                            tls=MqttTls(ca_file=self.tls_ca_file) if self.tls or self.tls_ca_file else None,
                            keepalive_s=30, reconnect=ReconnectPolicy(first_delay_s=0.2, max_delay_s=2.0))

    async def run(self) -> None:
        """Follow the broker(s) until cancelled, reconnecting with a jittered back-off (edugate.common.mqtt)."""
        cfg = self.broker_config()
        failover, backoff = Failover(cfg), Backoff(cfg.reconnect)
        while True:
            address = failover.current
            try:
                async with aiomqtt_client(cfg, identifier=self.client_id, broker=address, password=self.password,
                                          timeout=10) as client:
                    await client.subscribe(f"{TOPIC_ROOT}/+/+/state", qos=1)
                    self.connected, self.last_error = True, None
                    log.info("central: following gateway states on %s", address)
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
                        self.apply(str(message.topic), bytes(payload))
            except aiomqtt.MqttError as exc:
                if self.connected or self.last_error != str(exc):
                    log.warning("central: broker %s: %s; reconnecting", address, exc)
                if self.connected:  # start again from the preferred broker, quickly
                    backoff.reset()
                    failover.connected()
                else:
                    failover.failed()
                self.connected, self.last_error = False, str(exc)
            await backoff.sleep()


@dataclass
class Central:
    """What the fleet pages show, from the state follower and the store."""

    follower: StateFollower
    store: Store
    timezone: str = "Asia/Ho_Chi_Minh"

    async def _by_gateway(self, promql: str) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for series in await self.store.query(promql):
            m = series["metric"]
            if "school" in m and "gateway" in m:
                out[(m["school"], m["gateway"])] = float(series["value"][1])
        return out

    async def fleet(self, district: str | None = None, school: str | None = None) -> dict[str, Any]:
        now = time.time()
        rows = self.follower.table.snapshot()
        store_error = None
        backlog: dict[tuple[str, str], float] = {}
        fill: dict[tuple[str, str], float] = {}
        alert_events: list[dict[str, Any]] = []
        raised: list[dict[str, Any]] = []
        try:
            backlog, fill, events, active = await asyncio.gather(
                self._by_gateway('max by (school, gateway) (last_over_time(edugate_outbox_records'
                                 '{device="_gateway"}[15m]))'),
                self._by_gateway('max by (school, gateway) (last_over_time(edugate_outbox_bytes{device="_gateway"}'
                                 '[15m]) / last_over_time(edugate_outbox_budget_bytes{device="_gateway"}[15m]))'),
                self.store.query('sum by (school, gateway, device, type) (count_over_time(edugate_event_count'
                                 '{alert="true"}[24h])) > 0'), self.store.query(ACTIVE_ALERTS))
            raised = [s["metric"] | {"value": float(s["value"][1])} for s in active]
            alert_events = [{"school": s["metric"].get("school"), "gateway": s["metric"].get("gateway"),
                             "device": s["metric"].get("device"), "type": s["metric"].get("type", "alert"),
                             "count": int(float(s["value"][1]))} for s in events]
        except StoreError as exc:
            store_error = str(exc)
        districts = self.follower.districts
        all_districts = sorted({d for d in districts.values() if d})
        all_schools = sorted({r["school"] for r in rows})
        gateways = []
        alerts: list[dict[str, Any]] = []
        for row in rows:
            key = (row["school"], row["gateway"])
            row = row | {"district": districts.get(key), "backlog": backlog.get(key), "fill": fill.get(key)}
            if (district and row["district"] != district) or (school and row["school"] != school):
                continue
            last_seen_s = row["last_seen"] / 1000 if row["last_seen"] else None
            row["last_seen_ago"] = ago(last_seen_s, now)
            row["last_seen_local"] = local_time(last_seen_s, self.timezone)
            row["since_ago"] = ago(row["since"] / 1000 if row["since"] else None, now)
            row["silent"] = row["status"] == "online" and (last_seen_s is None or now - last_seen_s > SILENT_S)
            gateways.append(row)
            where = f"{row['school']}/{row['gateway']}"
            if row["status"] == "offline":
                alerts.append({"level": "bad", "school": row["school"], "gateway": row["gateway"],
                               "text": f"{where} offline since {row['since_ago']} ({row['reason'] or 'no reason'})"})
            elif row["silent"]:
                alerts.append({"level": "warn", "school": row["school"], "gateway": row["gateway"],
                               "text": f"{where} has said nothing for {row['last_seen_ago'].removesuffix(' ago')}"})
            for dev in row["devices_in_error"]:
                alerts.append({"level": "warn", "school": row["school"], "gateway": row["gateway"],
                               "text": f"{where}: device {dev['device']} {dev['state']}"
                                       + (f": {dev['last_error']}" if dev["last_error"] else "")})
            if row["fill"] is not None and row["fill"] >= FILL_ALERT:
                alerts.append({"level": "warn", "school": row["school"], "gateway": row["gateway"],
                               "text": f"{where}: outbox at {100 * row['fill']:.0f} % of its disk budget"})
        shown = {(g["school"], g["gateway"]) for g in gateways}
        shown_schools = {g["school"] for g in gateways}
        for mismatch in rule_mismatches(r for r in rows if r["school"] in shown_schools):
            first = mismatch.gateways[0]
            alerts.append({"level": "warn", "school": mismatch.school, "gateway": first, "kind": "card_rule",
                           "text": mismatch.message})
            for g in gateways:
                g["card_rule_differs"] = g.get("card_rule_differs") or (
                    g["school"] == mismatch.school and g["gateway"] in mismatch.gateways)
        for ev in alert_events:
            if (ev["school"], ev["gateway"]) in shown:
                alerts.append({"level": "bad", "school": ev["school"], "gateway": ev["gateway"],
                               "text": f"{ev['school']}/{ev['gateway']}: {ev['count']} × {ev['type']} "
                                       f"at {ev['device']} in the last 24 h"})
        for al in raised:
            if (al.get("school"), al.get("gateway")) in shown:
                where = f"{al.get('school')}/{al.get('gateway')}"
                alerts.append({"level": "bad" if al.get("severity") == "critical" else "warn",
                               "school": al.get("school"), "gateway": al.get("gateway"),
                               "text": f"{where}: {al.get('severity', 'warning')} alert {al.get('rule', '?')} at "
                                       f"{al.get('device', '?')}" + (f" ({al['room']})" if al.get("room") else "")
                                       + f", value {al['value']:g}"})
        return {
            "gateways": gateways, "alerts": alerts, "store_error": store_error,
            "broker_connected": self.follower.connected, "broker_error": self.follower.last_error,
            "districts": all_districts, "schools": all_schools, "district": district or "", "school": school or "",
            "summary": {"gateways": len(gateways), "online": sum(g["status"] == "online" for g in gateways),
                        "offline": sum(g["status"] == "offline" for g in gateways),
                        "devices_in_error": sum(len(g["devices_in_error"]) for g in gateways),
                        "alerts": len(alerts)},
            "time": local_time(now, self.timezone),
        }

    def gateway(self, school: str, gateway: str) -> dict[str, Any] | None:
        for row in self.follower.table.snapshot():
            if row["school"] == school and row["gateway"] == gateway:
                return row | {"district": self.follower.districts.get((school, gateway))}
        return None

    async def series(self, school: str, gateway: str, range_s: int) -> dict[str, Any]:
        """Per device, the gateway's own health and its online state over the last ``range_s`` (for uPlot)."""
        end = time.time()
        start = end - range_s
        step = max(1.0, range_s / POINTS)
        where = f'school="{school}",gateway="{gateway}"'
        devices_q = (f'{{__name__=~"edugate_.+",__name__!~"edugate_(event|gateway|device)_.+",{where},'
                     f'device!="",device!="_gateway"}}')
        health_q = (f'{{__name__=~"edugate_(outbox_records|devices_online|devices_offline|cpu_percent)",{where},'
                    f'device="_gateway"}}')
        online_q = f'edugate_gateway_online{{{where}}}'
        devices, health, online = await asyncio.gather(*(self.store.query_range(q, start, end, step)
                                                          for q in (devices_q, health_q, online_q)))
        by_device: dict[str, list[dict[str, Any]]] = {}
        rooms: dict[str, str | None] = {}
        for s in devices:
            by_device.setdefault(s["metric"]["device"], []).append(s)
            rooms[s["metric"]["device"]] = s["metric"].get("room")
        return {
            "range_s": range_s, "step_s": step,
            "devices": {dev: _align(series) | {"room": rooms[dev]} for dev, series in sorted(by_device.items())},
            "health": _align(health), "online": _align(online),
        }


def _align(series: list[dict[str, Any]]) -> dict[str, Any]:
    """Range-query results -> one shared time column and a column per metric (None where missing)."""
    stamps = sorted({float(t) for s in series for t, _ in s["values"]})
    index = {t: i for i, t in enumerate(stamps)}
    values: dict[str, list[float | None]] = {}
    for s in series:
        name = s["metric"].get("__name__", "value").removeprefix("edugate_")
        col = values.setdefault(name, [None] * len(stamps))
        for t, v in s["values"]:
            col[index[float(t)]] = float(v)
    return {"ts": stamps, "values": values}


def create_central_app(central: Central, auth: SiteAuth, assets: AssetPages | None = None) -> FastAPI:
    nav = [("/fleet", "Fleet")] + ([("/assets", "Equipment")] if assets is not None else [])
    app = build_site("EduGate central", auth, "/fleet", nav, template_dirs=[TEMPLATES])
    if assets is not None:  # the asset registry of every school, from the event store (issue 16)
        add_asset_routes(app, assets)

    async def fleet_view(district: str | None, school: str | None) -> dict[str, Any]:
        view = await central.fleet(district or None, school or None)
        if assets is not None:
            view["equipment"] = await assets.kpis(district or None, school or None)
        return view

    @app.get("/fleet", response_class=HTMLResponse, summary="Fleet view (central operations)")
    async def fleet_page(request: Request, who: Viewer, district: FilterQuery = None,
                         school: FilterQuery = None) -> Response:
        return page(request, "fleet.html", who, {"f": await fleet_view(district, school)})

    @app.get("/fleet/body", response_class=HTMLResponse, summary="The fleet page's body, refreshed by the page")
    async def fleet_body(request: Request, who: Viewer, district: FilterQuery = None,
                         school: FilterQuery = None) -> Response:
        return page(request, "_fleet.html", who, {"f": await fleet_view(district, school)})

    @app.get("/api/fleet", summary="Every gateway with its state, backlog and alerts (JSON)")
    async def api_fleet(who: Viewer, district: FilterQuery = None, school: FilterQuery = None) -> dict[str, Any]:
        return await fleet_view(district, school)

    @app.get("/gateways/{school}/{gateway}", response_class=HTMLResponse, summary="One gateway: state and plots",
             responses={404: {"description": "No such gateway has reported its state"}})
    async def gateway_page(request: Request, who: Viewer, school: IdPath, gateway: IdPath) -> Response:
        row = central.gateway(school, gateway)
        if row is None:
            raise HTTPException(404, f"no gateway {school}/{gateway} has reported its state")
        now = time.time()
        row = row | {"last_seen_ago": ago(row["last_seen"] / 1000 if row["last_seen"] else None, now),
                     "since_ago": ago(row["since"] / 1000 if row["since"] else None, now)}
        return page(request, "gateway.html", who, {"g": row, "ranges": list(RANGES),
                                                    "config": {"school": school, "gateway": gateway,
                                                                "timezone": central.timezone}})

    @app.get("/api/gateways/{school}/{gateway}/series", summary="Plot data from the store (PromQL query_range)",
             responses={502: {"description": "The store did not answer"}})
    async def gateway_series(who: Viewer, school: IdPath, gateway: IdPath,
                             span: Annotated[str, Query(alias="range", pattern="^(1h|6h|24h|7d)$")] = "1h",
                             ) -> dict[str, Any]:
        try:
            return await central.series(school, gateway, RANGES[span])
        except StoreError as exc:
            raise HTTPException(502, str(exc)) from None

    @app.get("/api/sessions/{school}/{gateway}/{session}", summary="An experiment session by id, from the store",
             responses={404: {"description": "No such session in the store"},
                        502: {"description": "The store did not answer"}})
    async def session_by_id(who: Viewer, school: IdPath, gateway: IdPath,
                            session: Annotated[str, Path(pattern=SESSION_PATTERN)],
                            format: Annotated[str, Query(pattern="^(json|csv)$")] = "json") -> Response:
        try:
            answer = await asyncio.to_thread(session_from_store, central.store, school, gateway, session)
        except SessionNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except StoreUnavailable as exc:
            raise HTTPException(502, str(exc)) from None
        if format == "csv":
            return Response(session_csv(answer, central.timezone), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{school}-{session}.csv"'})
        return Response(orjson.dumps(answer), media_type="application/json")

    return app


async def run_central(central: Central, app: FastAPI, host: str, port: int) -> None:
    """Follow the broker and serve the pages until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(central.follower.run(), name="follow-states"),
                 tg.create_task(serve_app(app, host, port, "central fleet pages"), name="web")]
        await stop.wait()
        log.info("central: stopping")
        for task in tasks:
            task.cancel()
