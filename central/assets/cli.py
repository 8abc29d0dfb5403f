"""``edugate assets list`` and ``edugate assets export --csv``: central's asset registry from the event store."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from edugate.central.assets.export import local, registry_csv
from edugate.central.assets.kpi import Kpi, district_kpis, school_kpis
from edugate.central.assets.registry import AssetRow, RegistryWindow, load_registry
from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit
from edugate.central.config import CentralConfig

assets_app = typer.Typer(help="The asset registry of every school (from the event store): list, export, KPIs.",
                         no_args_is_help=True)

DbOpt = Annotated[Path | None, typer.Option("--db", help="The event log (default: events.db or "
                                            "events.postgres_dsn of --config).", show_default=False)]
SchoolOpt = Annotated[str | None, typer.Option("--school", help="Only this school.")]
DistrictOpt = Annotated[str | None, typer.Option("--district", help="Only the schools of this district "
                                                 "(api.districts of --config).")]


def district_map(cfg: CentralConfig) -> dict[str, str]:
    return {school: district for district, schools in cfg.api.districts.items() for school in schools}


def registry_or_exit(cfg: CentralConfig, db: Path | None, school: str | None, district: str | None
                     ) -> list[AssetRow]:
    """The registry of the chosen schools, or a clear message and exit code 2."""
    districts = district_map(cfg)
    schools: list[str] | None = None
    if district is not None:
        schools = [s for s, d in districts.items() if d == district]
        if not schools:
            known = ", ".join(sorted(cfg.api.districts)) or "none: list them under api.districts in central.yaml"
            raise typer.BadParameter(f"{district!r} has no schools (districts: {known})", param_hint="--district")
    if school is not None:
        if schools is not None and school not in schools:
            raise typer.BadParameter(f"school {school!r} is not in district {district!r}", param_hint="--school")
        schools = [school]
    window = RegistryWindow(cfg.assets.in_use_days, cfg.assets.missing_after_days, cfg.pages.timezone)
    store: Any
    try:
        if db is None and cfg.events.postgres_dsn:
            from edugate.central.eventstore_pg import PgEventStore

            store = PgEventStore(cfg.events.postgres_dsn)
        else:
            path = db or cfg.events.db
            if path is None:
                raise typer.BadParameter("give the event log: --db FILE, or events.db in --config FILE",
                                         param_hint="--db")
            if not path.exists():
                typer.echo(f"{path}: no such event log (is it the file 'edugate ingest --events-db' writes?)",
                           err=True)
                raise typer.Exit(code=2)
            from edugate.central.eventstore import EventStore

            store = EventStore(path)
        try:
            return load_registry(store, int(time.time() * 1000), window, schools=schools, districts=districts)
        finally:
            store.close()
    except sqlite3.Error as exc:  # PgEventStore's EventStoreUnavailable is one too
        typer.echo(f"event log: {exc}", err=True)
        raise typer.Exit(code=2) from None


@assets_app.command("list")
def list_assets(
    school: SchoolOpt = None,
    district: DistrictOpt = None,
    status: Annotated[str | None, typer.Option("--status", help="Only assets with this status: in-use, idle, "
                                               "missing, never-seen, not-tracked.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per asset and line.")] = False,
    db: DbOpt = None,
    config: CentralConfigOpt = None,
) -> None:
    """Every asset of the chosen schools with its status, then the KPIs per school and district."""
    cfg = central_config_or_exit(config)
    wanted = status.replace("-", " ") if status else None
    if wanted is not None and wanted not in ("in use", "idle", "missing", "never seen", "not tracked"):
        raise typer.BadParameter(f"{status!r}: use in-use, idle, missing, never-seen or not-tracked",
                                 param_hint="--status")
    rows = registry_or_exit(cfg, db, school, district)
    shown = [r for r in rows if wanted is None or r.status == wanted]
    if as_json:
        for row in shown:
            typer.echo(orjson.dumps(row.as_dict()).decode())
        return
    tz = cfg.pages.timezone
    for r in shown:
        what = " ".join(x for x in (r.make, r.model) if x) or r.name or r.driver
        typer.echo(f"{r.school}/{r.gateway}/{r.asset}\t{r.status}\t{r.room or '-'}\t{what or '-'}\t"
                   f"serial {r.serial or '-'}\tlast seen {local(r.last_seen, tz) or 'never'}")
    schools = school_kpis(rows, cfg.assets.declared, [] if school or district else cfg.assets.declared)
    typer.echo(f"\n{len(shown)} asset(s)" + (f" with status {wanted}" if wanted else ""))
    for kpi in schools.values():
        typer.echo(kpi_line("school", kpi))
    for kpi in district_kpis(schools, district_map(cfg)).values():
        typer.echo(kpi_line("district", kpi))


def kpi_line(kind: str, kpi: Kpi) -> str:
    on_record = f"{kpi.on_record_pct:g} % of {kpi.declared} declared" if kpi.on_record_pct is not None \
        else "no declared count"
    in_use = f"{kpi.in_use_pct:g} % ({kpi.in_use} of {kpi.observable} observable)" if kpi.in_use_pct is not None \
        else "no observable asset"
    return f"{kind} {kpi.area}: {kpi.on_record} on record ({on_record}); in use {in_use}; missing {kpi.missing}"


@assets_app.command("export")
def export_assets(
    csv_file: Annotated[Path, typer.Option("--csv", help="Write the registry here as CSV ('-': standard output).",
                                           show_default=False)],
    school: SchoolOpt = None,
    district: DistrictOpt = None,
    db: DbOpt = None,
    config: CentralConfigOpt = None,
) -> None:
    """The registry as CSV (UTF-8, opens in Excel): one line per asset with its status and use."""
    cfg = central_config_or_exit(config)
    text = registry_csv(registry_or_exit(cfg, db, school, district), cfg.pages.timezone)
    if str(csv_file) == "-":
        sys.stdout.write(text)
        return
    try:
        csv_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"--csv {csv_file}: cannot write: {exc.strerror or exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"{csv_file}: {text.count(chr(10)) - 1} asset(s)", err=True)
