"""The review's report: one JSON document and the same as Markdown, written beside the SBOM.

A check is a dict as ``edugate doctor --json`` writes it: ``check``, ``verdict`` (ok, warn, fail),
``message``, ``fix``. The report's verdict is the worst check's; ``edugate audit`` exits with it (0, 1, 2).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

VERDICTS = ("ok", "warn", "fail")


def worst(checks: list[dict[str, Any]]) -> str:
    return max((c["verdict"] for c in checks), key=VERDICTS.index, default="ok")


def _cell(value: Any) -> str:
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    subject, versions = report["subject"], report["versions"]
    lines = [f"# Security review evidence: {subject['title']}", "",
             f"Written {report['generated_at']} on host `{report['host']}` by `{report['command']}`. "
             f"Baseline verdict: **{report['verdict'].upper()}**.", "", "## Versions", "",
             "| component | version |", "|---|---|"]
    lines += [f"| {name} | {_cell(v)} |" for name, v in versions.items()]
    sbom = report.get("sbom") or {}
    lines += ["", "## Software bill of materials", ""]
    if sbom.get("file"):
        lines.append(f"`{sbom['file']}`: {sbom['format']}, {sbom['components']} components, "
                     f"made by {sbom['generator']}.")
    else:
        lines.append(f"Not written: {sbom.get('error', 'not asked for')}.")
    lines += ["", "## Configuration against the baseline", "", "| check | verdict | finding | fix |",
              "|---|---|---|---|"]
    lines += [f"| {c['check']} | {c['verdict'].upper()} | {_cell(c['message'])} | "
              f"{_cell(c['fix'] if c['verdict'] != 'ok' else '')} |" for c in report["baseline"]]
    lines += ["", "## Listening ports", "", "| protocol | address | port | process | reachable from the network |",
              "|---|---|---|---|---|"]
    lines += [f"| {p['protocol']} | {p['address']} | {p['port']} | {_cell(p['process'] or '(not visible)')} | "
              f"{'yes' if p['exposed'] else 'no'} |" for p in report["ports"]]
    events = report["security_events"]
    lines += ["", f"## Security events since {events['since'][:10]}", "",
              f"Sources: {', '.join(events['sources']) or 'none'}. Admin actions recorded: "
              f"{events['admin_actions']}.", ""]
    if events["counts"]:
        lines += ["| kind | count |", "|---|---:|"]
        lines += [f"| {kind} | {n} |" for kind, n in events["counts"].items()]
        lines += ["", f"The latest {len(events['recent'])}:", "", "| when | kind | what |", "|---|---|---|"]
        lines += [f"| {_cell(e.get('ts'))} | {e['kind']} | {_cell(e['what'])} |" for e in events["recent"]]
    else:
        lines.append("None found.")
    if events["problems"]:
        lines += ["", "Could not read: " + "; ".join(events["problems"])]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path, stem: str) -> tuple[Path, Path]:
    """``<out>/<stem>.json`` and ``<out>/<stem>.md``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    return json_path, md_path


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
