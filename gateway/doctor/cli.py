"""``edugate doctor CONFIG`` and ``edugate migrate CONFIG``: registered on the ``edugate`` command by
:func:`register`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from edugate.gateway.doctor.checks import Account, DoctorOptions, as_json, format_text, run_doctor, worst

ConfigArg = Annotated[Path, typer.Argument(help="The gateway's YAML config file.", show_default=False)]


def doctor(
    config: ConfigArg,
    json_output: Annotated[bool, typer.Option("--json", help="Print the checks as JSON (for central).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each device and broker.")] = 3.0,
    as_user: Annotated[str | None, typer.Option(
        "--as-user", help="Judge file and device access for this user (default: 'edugate' when run as root and "
        "that user exists, else yourself).")] = None,
) -> None:
    """Diagnose a gateway: config, devices, broker and TLS, clock, disk, outbox, keys, web users.
    Each check says ok, warn or fail and how to fix it. Exit code: 0 all ok, 1 a warning, 2 a failure."""
    account: Account | None = None
    if as_user is not None:
        try:
            account = Account.named(as_user)
        except KeyError:
            raise typer.BadParameter(f"no user {as_user!r} on this machine", param_hint="--as-user") from None
    results = asyncio.run(run_doctor(config, DoctorOptions(timeout_s=timeout, account=account)))
    if json_output:
        typer.echo(json.dumps(as_json(config, results), indent=2))
    else:
        typer.echo(format_text(results))
    raise typer.Exit(code=int(worst(results)))


def migrate(
    config: ConfigArg,
    check_only: Annotated[bool, typer.Option("--check", help="Say what would change; change nothing.")] = False,
) -> None:
    """Bring the config file and the outbox to the schema versions this EduGate reads (stop the gateway first).
    A file written by a newer EduGate is refused and left as it is (exit code 2)."""
    from edugate.common.yamlconfig import exit_with_problems
    from edugate.gateway.config import ConfigError, load_config
    from edugate.gateway.doctor.migrate import MigrateError, migrate_config, migrate_outbox, rename_old_options

    try:
        step = migrate_config(config, check_only=check_only)
        typer.echo(str(step))
        try:
            renames = rename_old_options(config, check_only=check_only)
            cfg = load_config(config)
        except ConfigError as exc:
            exit_with_problems(config, exc)
        for rename in renames:
            typer.echo(str(rename))
        outbox = migrate_outbox(Path(cfg.storage.path), check_only=check_only)
    except ConfigError as exc:  # e.g. a file that is not UTF-8 text
        exit_with_problems(config, exc, "nothing was changed")
    except MigrateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except OSError as exc:
        typer.echo(f"error: {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(str(outbox) if outbox else f"{cfg.storage.path}: no outbox yet (created at the first run)")
    pending = [s for s in (step, outbox) if s is not None and s.before != s.after and not s.done]
    raise typer.Exit(code=1 if pending or any(not r.done for r in renames) else 0)


def register(app: typer.Typer) -> None:
    app.command()(doctor)
    app.command()(migrate)
