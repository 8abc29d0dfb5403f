"""``edugate web-user add|remove|list``: who may log in to the pages (a gateway's, or central's with --users-file).

Central's own command (``edugate central``, the fleet pages) is ``edugate.central.cli_pages``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edugate.common.web.audit_log import audit_cli_change
from edugate.common.web.auth import ROLES, UsersFileError, UserStore
from edugate.common.yamlconfig import ConfigError, exit_with_problems

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
    from edugate.gateway.config import load_config

    assert config is not None
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        exit_with_problems(config, exc, "no user was changed")
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
        store.add(name, role, password, replace=replace)
    except (ValueError, UsersFileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    audit_cli_change(store.path, "user-added", f"web-user add {name} --role {role}" + (" --replace" if replace else ""))
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
    audit_cli_change(store.path, "user-removed", f"web-user remove {name}")
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


def register(app: typer.Typer) -> None:
    app.add_typer(web_user, name="web-user")


if __name__ == "__main__":
    web_user()
