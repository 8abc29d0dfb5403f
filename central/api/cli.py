"""``edugate api`` (serve the open API) and ``edugate api-key add|remove|list`` (its consumers' keys)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Annotated

import typer

from edugate.central.api import keys as keyfile
from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit, setup_logging

KeysFileOpt = Annotated[Path | None, typer.Option(help="The keys file [default: api.keys_file of --config].",
                                                  show_default=False)]

api_key = typer.Typer(name="api-key", help="The open API's consumers and their keys (stored hashed).",
                      no_args_is_help=True, add_completion=False)


def _keys_file(keys_file: Path | None, config: Path | None) -> Path:
    return keys_file or central_config_or_exit(config).api.keys_file


@api_key.command("add")
def key_add(name: Annotated[str, typer.Argument(help="The consumer, e.g. city-ioc.")],
            keys_file: KeysFileOpt = None, config: CentralConfigOpt = None) -> None:
    """Give consumer NAME a new key (replacing its old one) and print it: it is shown this once only."""
    path = _keys_file(keys_file, config)
    try:
        key = keyfile.add(path, name)
    except (keyfile.KeyFileError, OSError) as exc:
        typer.echo(f"{path}: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(key)
    typer.echo(f"key of {name} added to {path}; give it to them once, as the X-API-Key header", err=True)


@api_key.command("remove")
def key_remove(name: Annotated[str, typer.Argument(help="The consumer.")],
               keys_file: KeysFileOpt = None, config: CentralConfigOpt = None) -> None:
    """Revoke consumer NAME's key (takes effect on the next request)."""
    path = _keys_file(keys_file, config)
    try:
        removed = keyfile.remove(path, name)
    except (keyfile.KeyFileError, OSError) as exc:
        typer.echo(f"{path}: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if not removed:
        typer.echo(f"{path}: no consumer {name!r}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"{name} removed")


@api_key.command("list")
def key_list(keys_file: KeysFileOpt = None, config: CentralConfigOpt = None) -> None:
    """The consumers and when their keys were made (never the keys)."""
    path = _keys_file(keys_file, config)
    try:
        keys = keyfile.load(path)
    except keyfile.KeyFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    for name in sorted(keys):
        typer.echo(f"{name}\t{keys[name].get('created', '')}")


def api(config: CentralConfigOpt = None,
        host: Annotated[str | None, typer.Option(help="[default: api.host]", show_default=False)] = None,
        port: Annotated[int | None, typer.Option(help="[default: api.port]", show_default=False)] = None) -> None:
    """Serve the operations centre's open API (/api/v1: anonymised indicators; docs/api). Also writes each
    school's district (api.districts) to the store every 5 minutes, for the Grafana dashboards."""
    import logging

    from edugate.central.api.app import Sources, build_api
    from edugate.central.indicators import areas  # influxdb-client: only when serving
    from edugate.common.web.serve import serve_app

    cfg = central_config_or_exit(config)
    setup_logging(getattr(logging, cfg.log_level))
    app = build_api(Sources(cfg.store.url, cfg.events.db, cfg.pages.timezone, cfg.api, cfg.events.postgres_dsn),
                    cfg.api.keys_file)
    try:
        if not keyfile.load(cfg.api.keys_file):
            typer.echo(f"{cfg.api.keys_file}: no consumer has a key yet: every request will get 401 until "
                       "'edugate api-key add NAME' (no restart needed)", err=True)
    except keyfile.KeyFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    stop = threading.Event()
    if cfg.api.districts:  # for the operations centre's Grafana dashboards (per district)
        threading.Thread(target=areas.keep_writing, args=(cfg.store, cfg.api.districts, stop), daemon=True,
                         name="school-districts").start()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_app(app, host or cfg.api.host, port or cfg.api.port, "api"))
    stop.set()
