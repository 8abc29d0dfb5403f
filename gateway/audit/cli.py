"""``edugate audit CONFIG --out DIR``: the evidence a school hands to the December security review.

Writes ``audit-<school>-<gateway>-<date>.md`` (to read), ``.json`` (the same, for tools) and
``sbom.cdx.json`` (CycloneDX) into DIR. Exit code: the baseline's worst verdict (0 ok, 1 warn, 2 fail), as
``edugate doctor``.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from edugate.common.audit.evidence import Sources, build_report, write_and_summarise
from edugate.common.web.audit_log import AUDIT_FILE
from edugate.gateway.audit.baseline import BaselineOptions, run_baseline
from edugate.gateway.config import GatewayConfigBase

UNIT = "edugate.service"

Days = Annotated[int, typer.Option("--days", min=1, max=3660, help="Security events of this many past days.")]
Logs = Annotated[list[Path] | None, typer.Option("--log", help="A text log to search for security events "
                                                 "(repeatable), e.g. an export of the journal.")]
NoSbom = Annotated[bool, typer.Option("--sbom/--no-sbom", help="Write the CycloneDX SBOM (needs the [audit] "
                                      "extra).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Folder for the report (.md, .json) and the SBOM.")]


def gateway_report(cfg: GatewayConfigBase, config_path: Path, out: Path, sources: Sources,
                   opts: BaselineOptions | None = None) -> dict[str, Any]:
    baseline = [r.as_dict() for r in run_baseline(cfg, opts)]
    for check in baseline:
        check.pop("details", None)
    subject = {"title": f"gateway {cfg.school}/{cfg.gateway}" + (f" ({cfg.name})" if cfg.name else ""),
               "side": "gateway", "school": cfg.school, "gateway": cfg.gateway, "config": str(config_path)}
    return build_report(subject, baseline, out, sources)


def audit(
    config: Annotated[Path, typer.Argument(help="The gateway's YAML config file.", show_default=False)],
    out: Out = Path("."),
    days: Days = 365,
    log: Logs = None,
    journal_unit: Annotated[str, typer.Option("--journal-unit", help="The systemd unit whose journal is "
                                              "searched; '' for none.")] = UNIT,
    sbom: NoSbom = True,
) -> None:
    """Evidence for the yearly security review: versions, SBOM, the config against the baseline, listening
    ports, security events. Exit code: 0 baseline ok, 1 a warning, 2 a failure."""
    from edugate.common.yamlconfig import exit_with_problems
    from edugate.gateway.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        exit_with_problems(config, exc)
    sources = Sources(days=days, audit_logs=[Path(cfg.storage.path).parent / AUDIT_FILE], log_files=list(log or []),
                      journal_units=[journal_unit] if journal_unit else [], sbom=sbom)
    report = gateway_report(cfg, config, out, sources)
    text, code = write_and_summarise(report, out, f"audit-{cfg.school}-{cfg.gateway}-{datetime.date.today()}")
    typer.echo(text)
    raise typer.Exit(code=code)


def register(app: typer.Typer) -> None:
    app.command()(audit)
