"""``edugate report supervision --period 2026-H2``: the twice-yearly supervision report (10 May, 30 November).

The figures are exactly the open API's rows for that period (``GET /api/v1/figures?period=2026-H2``), from the
same code (:func:`edugate.central.indicators.anonymise.rows`) with central.yaml's ``api`` settings: city,
districts, schools, each anonymised. Written as HTML (one self-contained file, prints to PDF from a browser)
and, when openpyxl is installed (the ``central`` extra), as XLSX with one sheet per level.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import jinja2
import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit
from edugate.central.config import CentralConfig
from edugate.central.indicators.catalogue import CATALOGUE
from edugate.central.indicators.compute import StoreUnavailable
from edugate.central.indicators.periods import PeriodError
from edugate.central.indicators.publish import figures_document

report = typer.Typer(name="report", help="Reports for the education department.", no_args_is_help=True,
                     add_completion=False)

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Supervision report {{ period }}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}
td,th{border:1px solid #999;padding:.25em .5em;text-align:right}th:first-child,td:first-child{text-align:left}
.suppressed{color:#777}</style></head><body>
<h1>Supervision report {{ period }}</h1>
<p>From {{ start }} to {{ end }} (exclusive){% if not complete %}, <strong>period in progress: figures up to
{{ generated }}</strong>{% endif %}. Generated {{ generated }}.</p>
<p>Aggregated and anonymised: counts of children's actions below {{ k }} are suppressed (<span class="suppressed">
&lt;{{ k }}</span>) and the others rounded to a multiple of {{ base }}; "–" means no data. Each figure is
<code>GET /api/v1/figures?period={{ period }}&amp;level=LEVEL&amp;indicator=NAME</code> on central's open API;
definitions in the metrics catalogue (docs/metrics.md).</p>
{% for level, title in levels %}
<h2>{{ title }}</h2>
<table><thead><tr><th>{{ level }}</th>{% if level == "school" %}<th>district</th>{% endif %}
{% for i in indicators %}<th>{{ i.title }} ({{ i.unit }})</th>{% endfor %}</tr></thead><tbody>
{% for area, cells in tables[level] %}<tr><td>{{ area }}</td>
{% if level == "school" %}<td>{{ cells._district }}</td>{% endif %}
{% for i in indicators %}{% set row = cells[i.name] %}<td{% if row.status == "suppressed" %} class="suppressed"{% endif
%}>{{ show(row) }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% endfor %}
<h2>Not in this report yet</h2>
<p>Experiments per lab session (see docs/metrics.md). Presence rates are given for the rooms central.yaml's
<code>api.expected_students</code> lists ("–" without any).</p>
</body></html>
"""


def build(cfg: CentralConfig, period_name: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """The report's figures: the API's rows for the period (raises PeriodError, StoreUnavailable)."""
    return figures_document(cfg, period_name, now)


def _tables(items: list[dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    tables: dict[str, dict[str, dict[str, Any]]] = {"city": {}, "district": {}, "school": {}}
    for row in items:
        cells = tables[row["level"]].setdefault(row["area"], {"_district": row["district"]})
        cells[row["indicator"]] = row
    return {level: list(areas.items()) for level, areas in tables.items()}


def render_html(doc: dict[str, Any]) -> str:
    def show(row: dict[str, Any]) -> str:
        if row["status"] == "suppressed":
            return f"<{doc['k']}"
        if row["value"] is None:
            return "–"
        value = row["value"]
        return f"{value:g}"

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(
        period=doc["period"], start=doc["from"], end=doc["to"], complete=doc["complete"],
        generated=doc["generated"], k=doc["k"], base=doc["round_to"], indicators=CATALOGUE, show=show,
        levels=[("city", "City"), ("district", "Districts"), ("school", "Schools")], tables=_tables(doc["items"]))


def write_xlsx(doc: dict[str, Any], path: Path) -> bool:
    """One sheet per level, one row per area; False when openpyxl is not installed."""
    try:
        import openpyxl  # type: ignore[import-untyped]  # no stubs installed (types-openpyxl)
    except ImportError:
        return False
    book = openpyxl.Workbook()
    book.remove(book.active)
    for level, areas in _tables(doc["items"]).items():
        sheet = book.create_sheet(level)
        sheet.append([level, "district", *(f"{i.name} ({i.unit})" for i in CATALOGUE)])
        for area, cells in areas:
            sheet.append([area, cells["_district"],
                          *(f"<{doc['k']}" if cells[i.name]["status"] == "suppressed" else cells[i.name]["value"]
                            for i in CATALOGUE)])
    about = book.create_sheet("about")
    for key in ("period", "from", "to", "complete", "generated", "k", "round_to"):
        about.append([key, str(doc[key])])
    book.save(path)
    return True


def write_files(doc: dict[str, Any], output_dir: Path, json_too: bool = False) -> list[Path]:
    """The report as HTML, XLSX (with openpyxl) and optionally JSON in ``output_dir``; the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    html = output_dir / f"supervision-{doc['period']}.html"
    html.write_text(render_html(doc))
    written = [html]
    xlsx = output_dir / f"supervision-{doc['period']}.xlsx"
    if write_xlsx(doc, xlsx):
        written.append(xlsx)
    if json_too:
        written.append(output_dir / f"supervision-{doc['period']}.json")
        written[-1].write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return written


@report.command("supervision")
def supervision(
    period: Annotated[str, typer.Option(help="The half year, e.g. 2026-H2 (any period the API takes works).")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Where to write the files.")] = Path("."),
    json_too: Annotated[bool, typer.Option("--json", help="Also write the rows as JSON (the API's items).")] = False,
    config: CentralConfigOpt = None,
) -> None:
    """The supervision report (equipment, libraries, labs, usage; per school and district) as HTML and XLSX."""
    cfg = central_config_or_exit(config)
    try:
        doc = build(cfg, period)
    except (PeriodError, StoreUnavailable) as exc:
        typer.echo(f"report supervision: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo("\n".join(str(p) for p in write_files(doc, output_dir, json_too)))
