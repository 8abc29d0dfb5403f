"""One review report from its parts: the side's baseline checks plus what every side gathers the same way
(versions, the SBOM, listening ports, the security events). Used by ``edugate audit`` (a gateway) and
``edugate central-audit``."""

from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edugate.common.audit.events import collect
from edugate.common.audit.inventory import SbomError, hostname, listening_ports, versions, write_sbom
from edugate.common.audit.report import now_iso, worst, write_report

EXIT_CODES = {"ok": 0, "warn": 1, "fail": 2}


@dataclass
class Sources:
    """Where the security events are read and whether to write the SBOM."""

    days: int = 365
    audit_logs: list[Path] = field(default_factory=list)
    log_files: list[Path] = field(default_factory=list)
    journal_units: list[str] = field(default_factory=list)
    sbom: bool = True


def build_report(subject: dict[str, Any], baseline: list[dict[str, Any]], out: Path,
                 sources: Sources) -> dict[str, Any]:
    """The report as a JSON-ready dict; the SBOM is written into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    sbom: dict[str, Any]
    if sources.sbom:
        try:
            sbom = write_sbom(out / "sbom.cdx.json").as_dict()
        except SbomError as exc:
            sbom = {"error": str(exc)}
    else:
        sbom = {"error": "not asked for (--no-sbom)"}
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=sources.days)
    events = collect(since, sources.audit_logs, sources.log_files, sources.journal_units)
    args = " ".join(sys.argv[1:])
    return {"kind": "edugate-audit", "version": 1, "generated_at": now_iso(), "host": hostname(),
            "command": f"edugate {args}" if args else "edugate", "subject": subject, "versions": versions(),
            "sbom": sbom, "baseline": baseline, "verdict": worst(baseline), "ports": listening_ports(),
            "security_events": events.as_dict()}


def write_and_summarise(report: dict[str, Any], out: Path, stem: str) -> tuple[str, int]:
    """Write the report; return what to print and the exit code (the baseline's worst verdict)."""
    json_path, md_path = write_report(report, out, stem)
    counts = report["security_events"]["counts"]
    lines = [str(md_path), str(json_path)]
    if "file" in report["sbom"]:
        lines.append(str(out / report["sbom"]["file"]))
    lines.append(f"baseline: {report['verdict'].upper()} ("
                 + ", ".join(f"{c['check']} {c['verdict']}" for c in report["baseline"]) + "); security events: "
                 + (", ".join(f"{k} {n}" for k, n in counts.items()) or "none"))
    return "\n".join(lines), EXIT_CODES[report["verdict"]]
