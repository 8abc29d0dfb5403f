"""Run the pages on the gateway's event loop, as one more task of its TaskGroup.

``serve_gateway_web(gateway)`` registers the live-data observer on the
pipeline, builds the app and serves it with uvicorn until cancelled (the
gateway stopping). A port that cannot be bound is logged and retried: the
pages failing never takes the gateway down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import uvicorn
from fastapi import FastAPI

from edugate.common.web.auth import SessionSigner, UserStore, load_or_create_secret
from edugate.common.web.site import SiteAuth
from edugate.contract.records import Reading
from edugate.gateway.runtime.pipeline import GATEWAY_DEVICE
from edugate.gateway.web.app import AdminAction, GatewaySite, create_gateway_app
from edugate.gateway.web.live import LiveData

if TYPE_CHECKING:
    from edugate.gateway.runtime.gateway import Gateway

log = logging.getLogger(__name__)

BIND_RETRY_S = 30.0
SECRET_FILE = "web-session.key"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process that embeds it owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


async def serve_app(app: FastAPI, host: str, port: int, what: str, on_stop: Callable[[], None] | None = None) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; retry binding every 30 s when the port is taken.
    ``on_stop`` is called when cancelled, to end long responses (live streams) before they are cut."""
    while True:
        try:
            sock = bind(host, port)
            break
        except OSError as exc:
            log.error("%s: cannot listen on %s:%d (%s); retrying every %.0f s", what, host, port,
                      exc.strerror or exc, BIND_RETRY_S)
            await asyncio.sleep(BIND_RETRY_S)
    server = _Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off", access_log=False,
                                    timeout_graceful_shutdown=2, proxy_headers=False, server_header=False))
    shown = f"[{host}]" if ":" in host else host
    log.info("%s on http://%s:%d/", what, shown, port)
    try:
        await server.serve(sockets=[sock])
    finally:  # cancelled with the process: stop listening, let the open live streams end, cut what is left
        for listener in getattr(server, "servers", []):
            listener.close()
        if on_stop is not None:
            on_stop()
        tasks = list(server.server_state.tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
        sock.close()


def gateway_site(gw: Gateway, live: LiveData) -> GatewaySite:
    cfg = gw.cfg

    def status() -> dict[str, Any]:
        return gw.status() | {"name": cfg.name, "timezone": cfg.timezone}

    async def health_report() -> str:
        values = {k: (int(v) if isinstance(v, bool) else v) for k, v in gw.health_values().items()}
        record = await gw.emit(Reading(GATEWAY_DEVICE, values))
        seq = record.get("seq") if record else None
        if gw.uplink is None or not gw.uplink.stats.connected:
            return f"health record #{seq} is in the outbox; it leaves when the uplink is back (now down)"
        try:
            await gw.uplink.publish_state()
        except (aiomqtt.MqttError, TimeoutError) as exc:
            return f"health record #{seq} is in the outbox; the state could not be republished: {exc}"
        return f"health record #{seq} is in the outbox and the state was republished"

    actions = {"health-report": AdminAction(
        "Send a health report now",
        "Commits a health record (outbox, uplink, devices) and republishes the retained state, so central "
        "sees this gateway's figures at once instead of at the next health interval.", health_report)}
    return GatewaySite(status=status, live=live, timezone=cfg.timezone, thresholds=cfg.web.thresholds,
                       actions=actions)


def gateway_auth(users_file: Path, data_dir: Path) -> SiteAuth:
    return SiteAuth(UserStore(users_file), SessionSigner(load_or_create_secret(data_dir / SECRET_FILE)),
                    cookie="edugate_gateway_session",
                    setup_hint=f"edugate web-user add NAME --role admin --users-file {users_file}")


async def serve_gateway_web(gw: Gateway) -> None:
    """The gateway's pages (config ``web:``); run as a task of the gateway's TaskGroup."""
    web = gw.cfg.web
    assert gw.pipeline is not None, "start the web task after the pipeline exists"
    live = LiveData(window_s=web.history_minutes * 60.0, resolution_s=web.history_resolution_s)
    gw.pipeline.observers.append(live.observe)
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
        await serve_app(app, web.host, web.port, "gateway pages", on_stop=live.close)
    finally:
        with contextlib.suppress(ValueError):
            gw.pipeline.observers.remove(live.observe)
