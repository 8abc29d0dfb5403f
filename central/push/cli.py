"""``edugate push run|now|dead-letters|redeliver``: the deliveries to the department's warehouse."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import sqlite3
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit, setup_logging
from edugate.central.config import CentralConfig
from edugate.central.indicators.compute import StoreUnavailable
from edugate.central.indicators.periods import PeriodError
from edugate.central.push.batches import PrivacyError
from edugate.central.push.signing import SecretError, load_secret
from edugate.central.push.spool import Spool

if TYPE_CHECKING:
    from edugate.central.push.runner import Pusher

push = typer.Typer(name="push", help="Signed, idempotent deliveries of the anonymised figures to the "
                   "department's data warehouse (central.yaml push:).", no_args_is_help=True, add_completion=False)


@contextlib.contextmanager
def _pusher(config: CentralConfig, need_url: bool = True) -> Iterator[Pusher]:
    setup_logging(getattr(logging, config.log_level))
    if need_url and (config.push.url is None or config.push.secret_file is None):
        typer.echo("push: set push.url and push.secret_file in central.yaml first", err=True)
        raise typer.Exit(code=2)
    try:
        secret = load_secret(config.push.secret_file) if need_url and config.push.secret_file else b""
    except SecretError as exc:
        typer.echo(f"push: {exc}", err=True)
        raise typer.Exit(code=2) from None
    try:
        spool = Spool(config.push.state_db)
    except (OSError, sqlite3.Error) as exc:
        typer.echo(f"push: push.state_db {config.push.state_db}: {exc}", err=True)
        raise typer.Exit(code=2) from None
    from edugate.central.push.runner import Pusher  # croniter: central's extra, loaded when a push command runs

    try:
        yield Pusher(config, secret, spool)
    finally:
        spool.close()


def _summary(pusher: Pusher) -> None:
    counts = pusher.counts
    dead = len(pusher.spool.with_status("dead"))
    typer.echo(f"delivered {counts['delivered']}, retried {counts['retried']} time(s), dead letters "
               f"{counts['dead']} new ({dead} in all)")
    if counts["dead"]:
        raise typer.Exit(code=1)


@push.command("run")
def run(config: CentralConfigOpt = None) -> None:
    """The service: make the batches at each time of push.schedule, deliver them, retry, dead-letter."""
    cfg = central_config_or_exit(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _pusher(cfg) as pusher:
        pusher.run(stop)


@push.command("now")
def now(config: CentralConfigOpt = None,
        period: Annotated[str | None, typer.Option(help="One period (2026-11-30, 2026-W48, 2026-11, 2026-H2) "
                                                   "instead of the last complete one of each of push.periods.",
                                                   show_default=False)] = None) -> None:
    """Make the batches now and deliver them, waiting out the retries (exit code 1 if any became a dead letter)."""
    cfg = central_config_or_exit(config)
    with _pusher(cfg) as pusher:
        try:
            added = pusher.make(period) if period else pusher.make_due()
        except (PeriodError, StoreUnavailable, PrivacyError) as exc:
            typer.echo(f"push: {exc}", err=True)
            raise typer.Exit(code=2) from None
        typer.echo(f"{len(added)} new batch(es)")
        pusher.deliver_until_done()
        _summary(pusher)


@push.command("dead-letters")
def dead_letters(config: CentralConfigOpt = None) -> None:
    """The batches that were not delivered: key, period, batch, attempts, when given up, last error."""
    cfg = central_config_or_exit(config)
    with _pusher(cfg, need_url=False) as pusher:
        for b in pusher.spool.with_status("dead"):
            when = dt.datetime.fromtimestamp((b.done_ms or 0) / 1000, dt.UTC).isoformat(timespec="seconds")
            typer.echo(f"{b.key}\t{b.period}\t{b.batch}/{b.batches}\t{b.attempts} attempt(s)\t{when}\t"
                       f"{b.last_error}")


@push.command("redeliver")
def redeliver(keys: Annotated[list[str] | None, typer.Argument(help="Keys of dead letters (see dead-letters).",
                                                                show_default=False)] = None,
              all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
              config: CentralConfigOpt = None) -> None:
    """Send dead letters again: the same bytes under the same idempotency key, attempts counted from 0."""
    if bool(keys) == all_:
        typer.echo("push redeliver: give the keys of dead letters, or --all", err=True)
        raise typer.Exit(code=2)
    cfg = central_config_or_exit(config)
    with _pusher(cfg) as pusher:
        now_ms = int(pusher.clock() * 1000)
        revived = pusher.spool.revive(None if all_ else keys, now_ms)
        unknown = sorted(set(keys or []) - set(revived))
        if unknown:
            typer.echo(f"push redeliver: not dead letters: {', '.join(unknown)}", err=True)
        typer.echo(f"{len(revived)} dead letter(s) to deliver again")
        pusher.deliver_until_done()
        _summary(pusher)
        if unknown:
            raise typer.Exit(code=2)
