"""The pages' audit log: who did what, when, from where, as JSON lines appended to one file.

Every login (ok, failed, refused while locked), every lock, every logout, and every state-changing request
(POST, PUT, PATCH, DELETE) by a logged-in user is one line::

    {"ts": "2026-12-03T08:15:02.114Z", "event": "action", "user": "it-staff", "role": "admin",
     "from": "192.168.10.23", "action": "POST /api/actions/health-report", "status": 200, "site": "gateway"}

Never a password, a form body or a cookie: only the method and path of what was asked and the answer's status.
The file is opened for appending only (``O_APPEND``), created 0600; when it passes ``max_bytes`` it is renamed
to ``<name>.1`` (the one before that is dropped) so a gateway's SD card is not filled. Each line also goes to
the ``edugate.security`` logger (and so to syslog when configured, see ``common/syslog5424.py``).
"""

from __future__ import annotations

import datetime
import getpass
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edugate.common.security_events import security_event

AUDIT_FILE = "web-audit.jsonl"
MAX_BYTES = 5 * 1024 * 1024
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FIELDS = ("user", "role", "from", "action", "status", "reason", "retry_after_s")


class AuditLog:
    """Appends audit records to ``path`` (JSON lines); thread-safe; never rewrites a line."""

    def __init__(self, path: Path, site: str, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.site = site
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record (``fields`` from :data:`FIELDS`); returns it. A write that fails is logged, not
        raised: the pages keep working when the disk is full."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"audit record: unknown field(s) {', '.join(sorted(unknown))}")
        now = datetime.datetime.now(datetime.UTC)
        doc = {"ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z", "event": event,
               **{k: v for k, v in fields.items() if v is not None}, "site": self.site}
        line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                self._rotate_if_big()
            except OSError as exc:  # e.g. chattr +a: keep appending to the big file
                logging.getLogger(__name__).error("audit log %s: cannot rotate (%s); appending on",
                                                  self.path, exc.strerror or exc)
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                logging.getLogger(__name__).error("audit log %s: cannot write (%s); the record was: %s",
                                                  self.path, exc.strerror or exc, line.strip())
        said = f"{doc.get('user', '?')} from {doc.get('from', '?')}"
        if "action" in doc:
            said += f": {doc['action']} ({doc.get('status', '?')})"
        if "reason" in doc:
            said += f": {doc['reason']}"
        said = "".join(c if c.isprintable() else "?" for c in said)  # one line: no forged log lines
        security_event(f"web-{event}", said,
                       level=logging.WARNING if event in {"login-failed", "login-locked", "login-refused"}
                       else logging.INFO, **{k: v for k, v in doc.items() if k in FIELDS})
        return doc

    def _rotate_if_big(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return
        if size >= self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))


def audit_cli_change(users_file: Path, event: str, action: str) -> None:
    """Record a change made on the command line (``edugate web-user``) in the audit log beside the users file
    (the pages' own: both live in the data folder), as the machine's user who ran it."""
    account = os.environ.get("SUDO_USER") or _login_name()
    AuditLog(users_file.parent / AUDIT_FILE, "cli").record(event, user=account, action=action,
                                                           **{"from": f"command line on {os.uname().nodename}"})


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.geteuid())


def read_audit(path: Path, *, include_rotated: bool = True) -> Iterator[dict[str, Any]]:
    """The records of an audit log (the rotated file first), oldest first; a broken line is skipped with its
    place given as ``{"event": "unreadable", "where": "file:line"}``."""
    files = [path.with_name(path.name + ".1"), path] if include_rotated else [path]
    for file in files:
        try:
            lines = file.read_bytes().splitlines()
        except FileNotFoundError:
            continue
        for number, raw in enumerate(lines, 1):
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError("not an object")
            except ValueError:
                yield {"event": "unreadable", "where": f"{file}:{number}"}
                continue
            yield doc


class AuditTrail:
    """ASGI middleware: one audit record per state-changing request made by a logged-in user.

    The user is the one the request's dependencies put in ``request.state.who`` (``site.current_user``);
    a request that never got that far (not logged in, a bad CSRF token before the user was read) has no
    user and is not an admin action. Writes after the response has started, with its status.
    """

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in CHANGES or scope["path"] in {"/login", "/logout"}:
            await self.app(scope, receive, send)
            return

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                who = scope.get("state", {}).get("who")
                if who is not None:
                    client = scope.get("client")
                    self.audit.record("action", user=who.user.name, role=who.user.role,
                                      **{"from": client[0] if client else "?"},
                                      action=f"{scope['method']} {scope['path']}", status=message["status"])
            await send(message)

        await self.app(scope, receive, send_and_record)
