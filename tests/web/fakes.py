"""A gateway site and a central without processes, for in-process tests of the apps (TestClient, schemathesis)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from edugate.central.fleet import DeviceReport, FleetTable, StateDoc
from edugate.central.web.pages import Central, StateFollower, Store, create_central_app
from edugate.common.web.auth import SessionSigner, UserStore, hash_password
from edugate.common.web.site import SiteAuth
from edugate.gateway.web.app import AdminAction, GatewaySite, create_gateway_app
from edugate.gateway.web.config import Threshold
from edugate.gateway.web.live import LiveData

FAST_HASH_N = 2**4  # test users only


def fake_status() -> dict[str, Any]:
    return {
        "ts": int(time.time() * 1000), "version": "0.1.0", "started_at": int(time.time() * 1000) - 60_000,
        "school": "thcs-fake", "gateway": "gw-1", "district": "quan-1", "name": "Fake school", "clock_synced": True,
        "devices": {
            "lab1-th": {"state": "online", "last_error": None, "last_error_at": None, "error_count": 0,
                        "last_reading_at": time.time(), "counters": {}, "driver": "modbus", "room": "lab-1"},
            "door-1": {"state": "offline", "last_error": "cannot connect", "last_error_at": time.time(),
                       "error_count": 3, "last_reading_at": None, "counters": {"rejected": 1}, "driver": "pn532",
                       "room": "gate"},
        },
        "health": {"uptime_s": 60.0, "uplink_connected": True, "outbox_records": 5, "outbox_events": 1,
                   "outbox_bytes": 4096, "outbox_budget_bytes": 1 << 28, "telemetry_thinned": 0,
                   "events_over_budget": False, "cpu_percent": 1.5, "rss_bytes": 80 << 20},
        "uplink": {"host": "127.0.0.1", "port": 1883, "last_error": None},
        "services": {"access": {"allowlist_version": 3}},
    }


def users_file(path: Path) -> Path:
    """The two test users, with cheap hashes (fast tests; the real cost is the default of ``hash_password``)."""
    doc = {"alice": ("admin", "alice-admin-pw-1"), "victor": ("viewer", "victor-viewer-pw-1")}
    path.write_text(json.dumps({"version": 1, "users": {
        name: {"role": role, "password": hash_password(pw, n=FAST_HASH_N)} for name, (role, pw) in doc.items()}}))
    return path


def gateway_app(tmp: Path, *, users: bool = True) -> tuple[FastAPI, LiveData, list[str]]:
    live = LiveData(window_s=600)
    now = time.time()
    for i in range(5):
        live.observe({"kind": "telemetry", "device": "lab1-th", "room": "lab-1", "ts": int((now - 5 + i) * 1000),
                      "values": {"temperature": 20.0 + i, "humidity": 40}})
    ran: list[str] = []

    async def ping() -> str:
        ran.append("ping")
        return "pong"

    site = GatewaySite(status=fake_status, live=live, timezone="Asia/Ho_Chi_Minh",
                       thresholds={"lab1-th": {"temperature": Threshold(min=18, max=30)}},
                       actions={"ping": AdminAction("Ping", "Answers pong.", ping)})
    path = users_file(tmp / "users.json") if users else tmp / "none.json"
    auth = SiteAuth(UserStore(path), SessionSigner(b"k" * 32), "edugate_gateway_session",
                    f"edugate web-user add NAME --role admin --users-file {path}")
    return create_gateway_app(site, auth), live, ran


def central_app(tmp: Path, store_url: str) -> tuple[FastAPI, Central]:
    table = FleetTable()
    now = int(time.time() * 1000)
    table.apply("thpt-a", "gw-1", StateDoc(True, now, version="0.1.0", started_at=now - 1000,
                                           devices=(DeviceReport("lab1-th", "online"),
                                                    DeviceReport("fridge", "offline", 2, "no answer"))), now)
    table.apply("thpt-b", "gw-1", StateDoc(False, None, reason="connection lost"), now)
    follower = StateFollower(table=table, districts={("thpt-a", "gw-1"): "quan-1"}, connected=True)
    auth = SiteAuth(UserStore(users_file(tmp / "central-users.json")), SessionSigner(b"c" * 32),
                    "edugate_central_session", "edugate web-user add NAME --role admin --users-file x")
    central = Central(follower, Store(store_url))
    return create_central_app(central, auth), central
