"""``edugate central``: central's fleet pages, a small process of its own next to the ingest workers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit, given, log_level_or_exit, setup_logging
from edugate.central.config import CentralConfig, override_broker
from edugate.central.urls import check_store_url

if TYPE_CHECKING:
    from edugate.central.assets.registry import EventSource
    from edugate.central.web.assets import AssetPages
    from edugate.central.web.pages import StateFollower

UsersOpt = Annotated[Path | None, typer.Option("--users-file", help="Who may log in (default: web-users.json in "
                                               "--data-dir); edit with 'edugate web-user ... --users-file'.")]


def central(
    config: CentralConfigOpt = None,
    broker: Annotated[str | None, typer.Option("--broker", help="Broker URL: mqtt://host:port or mqtts://host:port "
                                               "[default: mqtt://127.0.0.1:1883].", show_default=False)] = None,
    username: Annotated[str | None, typer.Option("--username", help="MQTT user name (needs only to subscribe to "
                                                 "edu/v1/+/+/state).")] = None,
    password_file: Annotated[Path | None, typer.Option("--password-file", help="File holding the MQTT password.")]
    = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA bundle for mqtts://.")] = None,
    store_url: Annotated[str | None, typer.Option("--store-url", help="VictoriaMetrics (Prometheus query API) base "
                                                  "URL [default: http://127.0.0.1:8428].", show_default=False)]
    = None,
    host: Annotated[str | None, typer.Option("--host", help="Address to serve the pages on (the operations "
                                             "network) [default: 127.0.0.1].", show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port of the pages [default: 8090].",
                                             show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Session secret and (by default) the users "
                                                  "file [default: /var/lib/edugate-central].", show_default=False)]
    = None,
    users_file: UsersOpt = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="Time zone of the times shown "
                                                 "[default: Asia/Ho_Chi_Minh].", show_default=False)] = None,
    client_id: Annotated[str | None, typer.Option("--client-id", help="MQTT client id (unique per central process) "
                                                  "[default: edugate-central].", show_default=False)] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR "
                                                  "[default: INFO].", show_default=False)] = None,
) -> None:
    """Central fleet pages: every gateway's state (from the broker) with backlog, alerts and plots (from the store)."""
    from edugate.central.web.pages import Central, StateFollower, Store, create_central_app, run_central
    from edugate.common.web.audit_log import AUDIT_FILE, AuditLog
    from edugate.common.web.auth import SessionSigner, UserStore, load_or_create_secret
    from edugate.common.web.site import SiteAuth

    cfg = central_config_or_exit(config)
    pages = cfg.pages
    level = log_level_or_exit(given(log_level, cfg.log_level))
    try:
        broker_cfg = override_broker(cfg.broker, url=broker, username=username, password_file=password_file,
                                     ca_file=ca_file)
        store = check_store_url(store_url) if store_url is not None else cfg.store.url
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    setup_logging(level)
    try:
        password = broker_cfg.password("--password-file" if password_file is not None else "broker.password_file")
    except ValueError as exc:  # PasswordFileError: its message names the option and the file
        raise typer.BadParameter(str(exc)) from None
    folder = given(data_dir, pages.data_dir)
    users = users_file or pages.users_file or folder / "web-users.json"
    try:
        secret = load_or_create_secret(folder / "web-session.key")
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    auth = SiteAuth(UserStore(users), SessionSigner(secret), cookie="edugate_central_session",
                    setup_hint=f"edugate web-user add NAME --role admin --users-file {users}",
                    audit=AuditLog(folder / AUDIT_FILE, "central"))
    address = broker_cfg.addresses[0]
    tls = broker_cfg.tls
    follower = StateFollower(address.host, address.port, broker_cfg.username, password,
                             tls.ca_file if tls else None, tls is not None, given(client_id, pages.client_id),
                             broker=broker_cfg)
    hub = Central(follower, Store(store), given(timezone, pages.timezone))
    logging.getLogger(__name__).info("central pages for broker %s and store %s", address, store)
    assets = asset_pages(cfg, follower, hub.timezone)
    asyncio.run(run_central(hub, create_central_app(hub, auth, assets), given(host, pages.host),
                            given(port, pages.port)))


def asset_pages(cfg: CentralConfig, follower: StateFollower, timezone: str) -> AssetPages:
    """The Equipment page's registry: the event store of central.yaml (none: the page says so), the schools'
    declared counts, and each school's district (``api.districts``, else what its gateways' states say)."""
    from edugate.central.assets.registry import RegistryWindow
    from edugate.central.web.assets import AssetPages

    configured = {school: d for d, schools in cfg.api.districts.items() for school in schools}

    def districts() -> dict[str, str]:
        seen = {school: d for (school, _gw), d in follower.districts.items() if d}
        return seen | configured

    events = cfg.events

    def open_store() -> EventSource:
        if events.postgres_dsn:
            from edugate.central.eventstore_pg import PgEventStore  # psycopg: only when used

            return PgEventStore(events.postgres_dsn)
        assert events.db is not None
        if not events.db.exists():
            raise FileNotFoundError(f"{events.db}: no such event log yet (has 'edugate ingest' run?)")
        from edugate.central.eventstore import EventStore

        return EventStore(events.db)

    window = RegistryWindow(cfg.assets.in_use_days, cfg.assets.missing_after_days, timezone)
    has_store = events.db is not None or bool(events.postgres_dsn)
    return AssetPages(open_store if has_store else None, window, cfg.assets.declared, districts)


if __name__ == "__main__":
    typer.run(central)
