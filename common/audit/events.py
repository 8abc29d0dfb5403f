"""The security events of the review period, from the pages' audit log and from the process's log.

Sources: the audit log (JSON lines, ``common/web/audit_log.py``): failed and refused logins, locks, admin
actions; text logs, given as files or read from the systemd journal (``journalctl -u UNIT``): refused
commands, ACL refusals and the same ``edugate.security`` lines (``common/security_events.py`` says which
lines are security events).
"""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edugate.common.security_events import classify_line
from edugate.common.web.audit_log import read_audit

RECENT = 50  # events listed one by one in the report (all are counted)
STAMP = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})")
AUDIT_KINDS = {"login-failed": "web-login-failed", "login-locked": "web-login-locked",
               "login-refused": "web-login-refused", "user-added": "web-user-added",
               "user-removed": "web-user-removed"}


@dataclass
class EventSummary:
    since: datetime.datetime
    counts: Counter[str] = field(default_factory=Counter)
    recent: list[dict[str, Any]] = field(default_factory=list)
    admin_actions: int = 0
    sources: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # sources that could not be read, unreadable lines

    def add(self, event: dict[str, Any]) -> None:
        self.counts[event["kind"]] += 1
        self.recent.append(event)
        self.recent.sort(key=lambda e: e.get("ts") or "")
        del self.recent[:-RECENT]

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "counts": dict(sorted(self.counts.items())),
                "admin_actions": self.admin_actions, "recent": self.recent, "sources": self.sources,
                "problems": self.problems}


def _after(ts: str | None, since: datetime.datetime) -> bool:
    if not ts:
        return True  # undated: counted (better one too many than a refusal missed)
    found = STAMP.search(ts)
    if not found:
        return True
    when = datetime.datetime.fromisoformat(f"{found[1]}T{found[2]}").replace(tzinfo=datetime.UTC)
    return when >= since - datetime.timedelta(days=1)  # log times may be local: a day's slack at the edge


def from_audit_log(path: Path, summary: EventSummary) -> None:
    """Failed/refused logins and locks as events; admin actions counted; a refused admin action (4xx) as an
    event ``web-action-refused``."""
    if not path.exists() and not path.with_name(path.name + ".1").exists():
        summary.sources.append(f"{path} (no audit log yet)")
        return
    summary.sources.append(str(path))
    for doc in read_audit(path):
        if doc.get("event") == "unreadable":
            summary.problems.append(f"{doc['where']}: not a JSON object")
            continue
        if not _after(str(doc.get("ts", "")), summary.since):
            continue
        event, status = doc.get("event"), doc.get("status")
        if event == "action":
            summary.admin_actions += 1
            if isinstance(status, int) and 400 <= status < 500:
                summary.add({"ts": doc.get("ts"), "kind": "web-action-refused", "source": "audit log",
                             "what": f"{doc.get('user')} from {doc.get('from')}: {doc.get('action')} ({status})"})
        elif event in AUDIT_KINDS:
            what = f"{doc.get('user')} from {doc.get('from')}"
            what += "".join(f": {doc[k]}" for k in ("action", "reason") if doc.get(k))
            summary.add({"ts": doc.get("ts"), "kind": AUDIT_KINDS[str(event)], "source": "audit log",
                         "what": what})


def from_log_lines(lines: Iterable[str], source: str, summary: EventSummary) -> None:
    summary.sources.append(source)
    for line in lines:
        event = classify_line(line)
        if event is None or event["kind"] in AUDIT_KINDS.values() or event["kind"].startswith("web-"):
            continue  # the pages' events are read from the audit log itself (no double count)
        found = STAMP.search(line)
        ts = f"{found[1]}T{found[2]}" if found else None
        if not _after(ts, summary.since):
            continue
        summary.add({"ts": ts, "kind": event["kind"], "source": source, "what": line.strip()[-300:]})


def from_log_file(path: Path, summary: EventSummary) -> None:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            from_log_lines(fh, str(path), summary)
    except OSError as exc:
        summary.problems.append(f"{path}: cannot read ({exc.strerror or exc})")


def journal_lines(unit: str, since: datetime.datetime, timeout_s: float = 60.0) -> Iterator[str]:
    """The unit's lines from the systemd journal since ``since``; OSError if journalctl is not there or fails."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise OSError("journalctl not found (no systemd journal here): give the log with --log FILE")
    done = subprocess.run([journalctl, "-u", unit, "--since", since.strftime("%Y-%m-%d %H:%M:%S"), "-o",
                           "short-iso", "--no-pager", "-q"], capture_output=True, text=True, timeout=timeout_s,
                          check=False, errors="replace")
    if done.returncode != 0:
        raise OSError(f"journalctl -u {unit} failed: {done.stderr.strip()[-300:]}")
    yield from done.stdout.splitlines()


def collect(since: datetime.datetime, audit_logs: Iterable[Path] = (), log_files: Iterable[Path] = (),
            journal_units: Iterable[str] = ()) -> EventSummary:
    summary = EventSummary(since)
    for path in audit_logs:
        from_audit_log(path, summary)
    for path in log_files:
        from_log_file(path, summary)
    for unit in journal_units:
        try:
            from_log_lines(journal_lines(unit, since), f"journal ({unit})", summary)
        except (OSError, subprocess.TimeoutExpired) as exc:
            summary.problems.append(f"journal of {unit}: {exc}")
    return summary
