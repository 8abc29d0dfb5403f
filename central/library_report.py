"""``edugate library-report``: visitors, loans and returns per school and month, from the central store.

Central's monthly view of the smart libraries (for the supervision reports):
one row per school, never a device or a person, each count anonymised as the
API's are (suppressed below ``k``, otherwise rounded). It asks VictoriaMetrics (or
any server with the Prometheus query API) for the sums over the month, in
the schools' time zone::

    sum by (school) (sum_over_time(edugate_visitors_in[<month>]))                          visitors in
    sum by (school) (sum_over_time(edugate_event_count{type="library_loan"}[<month>]))     loans

evaluated at the end of the month (or now, for the month in progress).
Gates send one reading per interval stamped at the interval's end, so a
month holds exactly the intervals that ended in it.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit, given
from edugate.central.indicators.anonymise import Rule, anonymise_count

METRICS: dict[str, str] = {
    "visitors_in": "edugate_visitors_in{sel}",
    "visitors_out": "edugate_visitors_out{sel}",
    "loans": 'edugate_event_count{{type="library_loan"{comma}{inner}}}',
    "returns": 'edugate_event_count{{type="library_return"{comma}{inner}}}',
    "gate_alarms": 'edugate_event_count{{type="gate_alarm"{comma}{inner}}}',
}
COLUMNS = ["school", "month", *METRICS]


class ReportError(Exception):
    pass


def month_bounds(month: str, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """Start and end (exclusive) of ``YYYY-MM`` in the time zone ``tz``."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}", month):
            raise ValueError(month)
        year, mon = (int(part) for part in month.split("-"))
        zone = ZoneInfo(tz)
        start = dt.datetime(year, mon, 1, tzinfo=zone)
        end = start + dt.timedelta(days=calendar.monthrange(year, mon)[1])
    except (ValueError, OverflowError, ZoneInfoNotFoundError):  # 2026-13, 9999-12 (no end), Mars/Olympus
        raise ReportError(f"--month {month!r} must be YYYY-MM and --timezone a zone like Asia/Ho_Chi_Minh") from None
    return start, end


def queries(window_s: int, schools: list[str] | None) -> dict[str, str]:
    """PromQL per column, summed per school over the last ``window_s`` seconds."""
    inner = f'school=~"{"|".join(schools)}"' if schools else ""
    out = {}
    for column, series in METRICS.items():
        sel = f"{{{inner}}}" if inner else ""
        selector = series.format(sel=sel, comma="," if inner else "", inner=inner)
        out[column] = f"sum by (school) (sum_over_time({selector}[{window_s}s]))"
    return out


def query(store_url: str, promql: str, at: float, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    url = f"{store_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql, "time": f"{at:.3f}", "nocache": "1"})
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise ReportError(f"{store_url}: the store refused the query ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ReportError(f"{store_url}: cannot reach the store: {getattr(exc, 'reason', exc)}") from None
    except ValueError:
        raise ReportError(f"{store_url}: the answer is not JSON (is this a Prometheus query API?)") from None
    if body.get("status") != "success":
        raise ReportError(f"{store_url}: query failed: {body.get('error', body)}")
    return list(body["data"]["result"])


def build_report(store_url: str, month: str, tz: str, schools: list[str] | None = None,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    start, end = month_bounds(month, tz)
    now = now or dt.datetime.now(dt.UTC)
    if start > now:
        raise ReportError(f"{month} has not begun yet")
    at = min(end, now)
    window = max(1, int((at - start).total_seconds()))
    rows: dict[str, dict[str, Any]] = {}
    for column, promql in queries(window, schools).items():
        for series in query(store_url, promql, at.timestamp()):
            school = series["metric"].get("school")
            if not school:
                continue
            row = rows.setdefault(school, {"school": school, "month": month, **dict.fromkeys(METRICS, 0)})
            row[column] = round(float(series["value"][1]))
    ordered = [rows[s] for s in sorted(rows)]
    totals = {c: sum(r[c] for r in ordered) for c in METRICS}
    return {"month": month, "timezone": tz, "from": start.isoformat(), "to": end.isoformat(),
            "complete": end <= now, "schools": ordered, "totals": totals}


def anonymised(report: dict[str, Any], rule: Rule) -> dict[str, Any]:
    """The report as it may leave central: every count is of children's actions (visits, loans, returns, gate
    alarms), so each, per school and in the totals (made from the true sums), is suppressed below ``k`` (null)
    and otherwise rounded to a multiple of ``round_to``, the API's rule (docs/metrics.md, anonymisation)."""

    def published(count: int) -> int | None:
        value = anonymise_count(count, rule)
        return None if value is None else int(value)

    def row(values: dict[str, Any]) -> dict[str, Any]:
        return values | {c: published(values[c]) for c in METRICS}

    return report | {"k": rule.k, "round_to": rule.base, "schools": [row(r) for r in report["schools"]],
                     "totals": row(report["totals"])}


def render(report: dict[str, Any], fmt: Literal["csv", "json"]) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report["schools"])
    return buf.getvalue()


def library_report(
    month: Annotated[str, typer.Option(help="The month, YYYY-MM (e.g. 2026-11).")],
    store_url: Annotated[str | None, typer.Option(help="VictoriaMetrics (Prometheus query API), e.g. "
                                                 "http://vm:8428 [default: store.url of --config, else "
                                                 "http://127.0.0.1:8428].", show_default=False)] = None,
    format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    school: Annotated[list[str] | None, typer.Option(help="Only these schools (repeatable).")] = None,
    timezone: Annotated[str, typer.Option(help="Where months begin and end.")] = "Asia/Ho_Chi_Minh",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    k: Annotated[int | None, typer.Option(min=2, max=100, help="Counts below k are suppressed (empty in CSV, null "
                                          "in JSON) [default: api.k of --config, else 5].", show_default=False)] = None,
    round_to: Annotated[int | None, typer.Option(min=1, max=100, help="Other counts are rounded to a multiple of "
                                                 "this [default: api.round_to of --config, else k].",
                                                 show_default=False)] = None,
    config: CentralConfigOpt = None,
) -> None:
    """Visitors, loans, returns and gate alarms per school for one month (aggregated, anonymised: counts below k
    suppressed, the others rounded, as in the operations centre's API)."""
    if format not in ("csv", "json"):
        typer.echo(f"--format must be csv or json, not {format!r}", err=True)
        raise typer.Exit(code=2)
    for name in school or []:
        if not name.replace("-", "").replace("_", "").isalnum():
            typer.echo(f"--school {name!r}: ids are letters, digits, '-' and '_'", err=True)
            raise typer.Exit(code=2)
    cfg = central_config_or_exit(config)
    rule = Rule(given(k, cfg.api.k), given(round_to, cfg.api.round_to))
    try:
        report = anonymised(build_report(store_url or cfg.store.url, month, timezone, school), rule)
    except ReportError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    fmt: Literal["csv", "json"] = "json" if format == "json" else "csv"  # checked above
    text = render(report, fmt)
    if output is not None:
        try:
            output.write_text(text)
        except OSError as exc:
            typer.echo(f"--output {output}: cannot write: {exc.strerror or exc}", err=True)
            raise typer.Exit(code=2) from None
    else:
        sys.stdout.write(text)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(library_report)

if __name__ == "__main__":
    app()
