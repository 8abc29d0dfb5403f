"""Run the pages on the gateway's event loop, as one more task of its TaskGroup.

``serve_gateway_web(gateway)`` registers the live-data observer on the
pipeline, builds the app and serves it with uvicorn until cancelled (the
gateway stopping). A port that cannot be bound is logged and retried: the
pages failing never takes the gateway down.

The pages see the gateway only through :class:`GatewayHost`, the small public API of
``runtime.gateway.Gateway`` they use (this module never imports the runtime).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from edugate.common.web.audit_log import AUDIT_FILE, AuditLog
from edugate.common.web.auth import SessionSigner, UserStore, load_or_create_secret
from edugate.common.web.serve import BIND_RETRY_S, serve_app
from edugate.common.web.site import SiteAuth
from edugate.gateway.config import GatewayConfigBase
from edugate.gateway.services.base import Service
from edugate.gateway.web.app import AdminAction, GatewaySite, create_gateway_app
from edugate.gateway.web.doctor_page import subprocess_doctor
from edugate.gateway.web.live import LiveData

log = logging.getLogger(__name__)

SECRET_FILE = "web-session.key"


class HealthReportResult(Protocol):
    """What committing a health record on request did (``runtime.gateway.HealthReport``)."""

    @property
    def seq(self) -> int | None: ...

    @property
    def uplink_connected(self) -> bool: ...

    @property
    def state_error(self) -> str | None: ...


class GatewayHost(Protocol):
    """What the pages need of the running gateway (``runtime.gateway.Gateway`` provides it)."""

    @property
    def cfg(self) -> GatewayConfigBase: ...

    def status(self) -> dict[str, Any]: ...

    def add_record_observer(self, observer: Callable[[dict[str, Any]], None]) -> None: ...

    def remove_record_observer(self, observer: Callable[[dict[str, Any]], None]) -> None: ...

    async def report_health(self) -> HealthReportResult: ...

    @property
    def services(self) -> Sequence[Service]: ...

    @property
    def config_path(self) -> Path | None: ...


def gateway_site(gw: GatewayHost, live: LiveData) -> GatewaySite:
    cfg = gw.cfg

    def status() -> dict[str, Any]:
        return gw.status() | {"name": cfg.name, "timezone": cfg.timezone}

    async def health_report() -> str:
        report = await gw.report_health()
        seq = report.seq
        if not report.uplink_connected:
            return f"health record #{seq} is in the outbox; it leaves when the uplink is back (now down)"
        if report.state_error is not None:
            return f"health record #{seq} is in the outbox; the state could not be republished: {report.state_error}"
        return f"health record #{seq} is in the outbox and the state was republished"

    actions = {"health-report": AdminAction(
        "Send a health report now",
        "Commits a health record (outbox, uplink, devices) and republishes the retained state, so central "
        "sees this gateway's figures at once instead of at the next health interval.", health_report)}
    return GatewaySite(status=status, live=live, timezone=cfg.timezone, thresholds=cfg.web.thresholds,
                       actions=actions, services={service.name: service for service in gw.services},
                       doctor=subprocess_doctor(gw.config_path) if gw.config_path is not None else None)


def gateway_auth(users_file: Path, data_dir: Path) -> SiteAuth:
    return SiteAuth(UserStore(users_file), SessionSigner(load_or_create_secret(data_dir / SECRET_FILE)),
                    cookie="edugate_gateway_session",
                    setup_hint=f"edugate web-user add NAME --role admin --users-file {users_file}",
                    audit=AuditLog(data_dir / AUDIT_FILE, "gateway"))


async def serve_gateway_web(gw: GatewayHost) -> None:
    """The gateway's pages (config ``web:``); run as a task of the gateway's TaskGroup, after the pipeline exists."""
    web = gw.cfg.web
    live = LiveData(window_s=web.history_minutes * 60.0, resolution_s=web.history_resolution_s)
    gw.add_record_observer(live.observe)
    data_dir = Path(gw.cfg.storage.path).parent
    while True:
        try:
            auth = gateway_auth(web.users_path(data_dir), data_dir)
            break
        except (OSError, ValueError) as exc:
            log.error("gateway pages: %s; retrying every %.0f s", exc, BIND_RETRY_S)
            await asyncio.sleep(BIND_RETRY_S)
    app = create_gateway_app(gateway_site(gw, live), auth)
    try:
        await serve_app(app, web.host, web.port, "gateway pages", on_stop=live.close,
                        tls=(web.tls.cert_file, web.tls.key_file) if web.tls else None)
    finally:
        gw.remove_record_observer(live.observe)
