"""``edugate events``: query the central event log that ``edugate ingest --events-db`` keeps."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit
from edugate.central.eventstore import EventStore

DURATION = re.compile(r"^(\d+)([smhd])$")


def _since_ms(text: str | None) -> int | None:
    if text is None:
        return None
    m = DURATION.match(text)
    if not m:
        raise typer.BadParameter(f"{text!r}: use a duration like 30m, 12h or 7d")
    seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return max(0, int(time.time() * 1000) - seconds * 1000)  # longer ago than 1970: everything


def events(
    db: Annotated[Path | None, typer.Option(help="The event log file given to 'edugate ingest --events-db' "
                                            "(default: events.db of --config).", show_default=False)] = None,
    type_: Annotated[str | None, typer.Option("--type", help="e.g. card_tap, bus_left_onboard.")] = None,
    school: Annotated[str | None, typer.Option(help="Only this school.")] = None,
    gateway: Annotated[str | None, typer.Option(help="Only this gateway.")] = None,
    since: Annotated[str | None, typer.Option(help="Only newer than this, e.g. 30m, 12h, 7d.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    config: CentralConfigOpt = None,
) -> None:
    """Print events from the central event log, newest first, one JSON object per line."""
    section = central_config_or_exit(config).events if db is None else None
    if section is not None and section.postgres_dsn:  # the shared event database (docs/central.md, section 7)
        from edugate.central.eventstore_pg import EventStoreUnavailable, PgEventStore

        try:
            pg = PgEventStore(section.postgres_dsn)
            found = pg.query(type_=type_, school=school, gateway=gateway, since_ms=_since_ms(since), limit=limit)
        except EventStoreUnavailable as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(code=2) from None
        for event in found:
            typer.echo(orjson.dumps(event).decode())
        pg.close()
        return
    db = db or (section.db if section is not None else None)
    if db is None:
        raise typer.BadParameter("give the event log: --db FILE, or events.db in --config FILE", param_hint="--db")
    if not db.exists():
        typer.echo(f"{db}: no such event log (start 'edugate ingest --events-db {db}')", err=True)
        raise typer.Exit(code=2)
    since_ms = _since_ms(since)
    try:
        store = EventStore(db)
        found = store.query(type_=type_, school=school, gateway=gateway, since_ms=since_ms, limit=limit)
    except sqlite3.Error as exc:  # a directory, a file that is not an event log, a damaged one
        typer.echo(f"{db}: not a readable event log ({exc})", err=True)
        raise typer.Exit(code=2) from None
    for event in found:
        typer.echo(orjson.dumps(event).decode())
    store.close()
