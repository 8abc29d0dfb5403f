"""``edugate web-user add|remove|list`` (who may log in to the pages) and ``edugate central`` (the fleet view)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from edugate.common.web.auth import ROLES, UsersFileError, UserStore

web_user = typer.Typer(help="Who may log in to the web pages (the gateway's, or central's).", no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A gateway's YAML config: use its web.users_file "
                                                "(default: web-users.json next to its outbox).")]
UsersOpt = Annotated[Path | None, typer.Option("--users-file", help="The users file itself (central's, or a "
                                               "gateway's).")]


def _store(config: Path | None, users_file: Path | None) -> UserStore:
    if (config is None) == (users_file is None):
        raise typer.BadParameter("give either --config GATEWAY.yaml or --users-file FILE")
    if users_file is not None:
        return UserStore(users_file)
    from edugate.cli.main import _load_or_exit

    cfg = _load_or_exit(config)  # type: ignore[arg-type]
    return UserStore(cfg.web.users_path(Path(cfg.storage.path).parent))


def _read_password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            text = sys.stdin.read() if str(password_file) == "-" else password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {password_file}: {exc.strerror}") from None
        lines = text.splitlines()
        return lines[0] if lines else ""
    if not sys.stdin.isatty():
        raise typer.BadParameter("no terminal to ask for the password: use --password-file FILE (or - for stdin)")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@web_user.command("add")
def add(
    name: Annotated[str, typer.Argument(help="User name: 1-32 of a-z, 0-9, '.', '_', '-'.", show_default=False)],
    role: Annotated[str, typer.Option("--role", help="admin (may run admin actions) or viewer (looks only).")]
    = "viewer",
    password_file: Annotated[Path | None, typer.Option("--password-file", help="Read the password from the first "
                                                       "line of this file ('-' = stdin) instead of asking.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Set a new password and role for an existing user.")]
    = False,
    config: ConfigOpt = None,
    users_file: UsersOpt = None,
) -> None:
    """Create a user (there is no default user or password)."""
    if role not in ROLES:
        raise typer.BadParameter(f"use one of {', '.join(ROLES)}", param_hint="--role")
    store = _store(config, users_file)
    password = _read_password(password_file)
    try:
        store.add(name, role, password, replace=replace)  # type: ignore[arg-type]
    except (ValueError, UsersFileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"{'updated' if replace else 'added'} {name} ({role}) in {store.path}")


@web_user.command("remove")
def remove(name: Annotated[str, typer.Argument(show_default=False)], config: ConfigOpt = None,
           users_file: UsersOpt = None) -> None:
    """Remove a user; their sessions end at once."""
    store = _store(config, users_file)
    try:
        store.remove(name)
    except (ValueError, UsersFileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"removed {name} from {store.path}")


@web_user.command("list")
def list_users(config: ConfigOpt = None, users_file: UsersOpt = None) -> None:
    """List users and their roles."""
    store = _store(config, users_file)
    try:
        users = store.users()
    except UsersFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if not users:
        typer.echo(f"no users in {store.path}")
    for user in sorted(users.values(), key=lambda u: u.name):
        typer.echo(f"{user.name}\t{user.role}")


def central(
    broker: Annotated[str, typer.Option("--broker", help="Broker URL: mqtt://host:port or mqtts://host:port.")]
    = "mqtt://127.0.0.1:1883",
    username: Annotated[str | None, typer.Option("--username", help="MQTT user name (needs only to subscribe to "
                                                 "edu/v1/+/+/state).")] = None,
    password_file: Annotated[Path | None, typer.Option("--password-file", help="File holding the MQTT password.")]
    = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA bundle for mqtts://.")] = None,
    store_url: Annotated[str, typer.Option("--store-url", help="VictoriaMetrics (Prometheus query API) base URL.")]
    = "http://127.0.0.1:8428",
    host: Annotated[str, typer.Option("--host", help="Address to serve the pages on (the operations network).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the pages.")] = 8090,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Session secret and (by default) the users file.")]
    = Path("/var/lib/edugate-central"),
    users_file: UsersOpt = None,
    timezone: Annotated[str, typer.Option("--timezone", help="Time zone of the times shown.")] = "Asia/Ho_Chi_Minh",
    client_id: Annotated[str, typer.Option("--client-id", help="MQTT client id (unique per central process).")]
    = "edugate-central",
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Central fleet pages: every gateway's state (from the broker) with backlog, alerts and plots (from the store)."""
    from edugate.central.cli_ingest import check_store_url, parse_broker_url
    from edugate.central.web.pages import Central, StateFollower, Store, create_central_app, run_central
    from edugate.cli.main import setup_logging
    from edugate.common.web.auth import SessionSigner, load_or_create_secret
    from edugate.common.web.site import SiteAuth

    try:
        mqtt_host, mqtt_port, tls = parse_broker_url(broker)
        store = check_store_url(store_url)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    setup_logging(log_level)
    password = password_file.read_text().strip() if password_file else None
    users = users_file or data_dir / "web-users.json"
    try:
        secret = load_or_create_secret(data_dir / "web-session.key")
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    auth = SiteAuth(UserStore(users), SessionSigner(secret), cookie="edugate_central_session",
                    setup_hint=f"edugate web-user add NAME --role admin --users-file {users}")
    follower = StateFollower(mqtt_host, mqtt_port, username, password, ca_file, tls, client_id)
    hub = Central(follower, Store(store), timezone)
    logging.getLogger(__name__).info("central pages for broker %s and store %s", broker, store)
    asyncio.run(run_central(hub, create_central_app(hub, auth), host, port))


def register(app: typer.Typer) -> None:
    app.add_typer(web_user, name="web-user")
    app.command()(central)


if __name__ == "__main__":
    typer.run(central)
