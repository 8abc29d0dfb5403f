"""Central's commands, one typer app: ``ingest``, ``central`` (pages), ``keygen``/``sign``/``send``, ``events``,
``library-report``, ``central-check``, ``central-doctor``, and the operations centre's ``api``, ``api-key``,
``report`` and ``push``. ``edugate.cli.main`` adds them to the ``edugate``
command with :func:`register`; ``python -m edugate.central.cli`` runs them alone (a central server without the
gateway's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edugate.central.api.cli import api, api_key
from edugate.central.assets.cli import assets_app
from edugate.central.cert_renewal import renew_certificate
from edugate.central.cli_common import central_config_or_exit
from edugate.central.cli_events import events
from edugate.central.cli_ingest import ingest
from edugate.central.cli_pages import central
from edugate.central.command_tools import keygen, send, sign
from edugate.central.ingest.doctor import central_doctor
from edugate.central.library_report import library_report
from edugate.central.push.cli import push
from edugate.central.reports.supervision import report


def central_check(
    config: Annotated[Path, typer.Argument(help="central.yaml", show_default=False)],
) -> None:
    """Validate a central.yaml; print every problem as file:line: path: message (exit code 2)."""
    cfg = central_config_or_exit(config)
    workers = f"ingest worker {cfg.ingest.client_id}" if cfg.ingest.client_id else "no ingest.client_id (give " \
        "--client-id to each worker)"
    if cfg.ingest.transport != "mqtt":  # the workers' queue is elsewhere (docs/central.md, sections 6 and 8)
        servers = cfg.ingest.amqp.servers if cfg.ingest.transport == "amqp" else cfg.ingest.nats.servers
        workers += f" consuming over {cfg.ingest.transport} from {len(servers)} node(s)"
    typer.echo(f"{config}: OK: broker {', '.join(cfg.broker.brokers)}{' (TLS)' if cfg.broker.tls else ''}, "
               f"store {cfg.store.url}, {workers}, pages on {cfg.pages.host}:{cfg.pages.port}, "
               f"event log {_event_log(cfg.events.db, cfg.events.postgres_dsn)}")


def _event_log(db: Path | None, dsn: str | None) -> str:
    """Where the events go, for the status line: the PostgreSQL server (never its password), the file, or off."""
    if dsn:
        from edugate.central.eventstore_pg import where

        return f"PostgreSQL {where(dsn)}"
    return str(db) if db is not None else "off"


def register(cli: typer.Typer) -> None:
    """Add central's commands to ``cli`` (the ``edugate`` command)."""
    cli.command(help="Central ingest: broker -> VictoriaMetrics (shared subscription worker).")(ingest)
    cli.command()(central)
    for command in (keygen, sign, send):
        cli.command()(command)
    cli.command()(events)
    cli.command(name="library-report")(library_report)
    cli.command(name="central-check")(central_check)
    cli.command(name="central-doctor")(central_doctor)
    cli.command(name="api")(api)  # the operations centre (issue 21)
    cli.add_typer(api_key, name="api-key")
    cli.add_typer(report, name="report")
    cli.add_typer(push, name="push")  # the warehouse deliveries (issue 21)
    cli.add_typer(assets_app, name="assets")  # the asset registry of every school (issue 16)
    cli.command(name="renew-certificate")(renew_certificate)  # gateways' TLS certificates over the downlink (18)


app = typer.Typer(name="edugate-central", help="EduGate central: ingest, fleet pages, signed commands, reports.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
register(app)

if __name__ == "__main__":
    app()
