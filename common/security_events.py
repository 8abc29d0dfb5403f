"""Security events: what the December review and the sector's security monitoring collect.

Two sources, one vocabulary of kinds:

* code that knows it has a security event calls :func:`security_event` (the pages: failed logins, locks,
  admin actions); it logs on the ``edugate.security`` logger as ``"<kind>: <message>"`` with the fields
  attached to the record (``record.security``);
* modules that already log what happened keep doing so (the downlink's ``command rejected (...)``, the
  uplink's ACL refusal); :data:`PATTERNS` recognises those lines by logger and text.

:class:`SecurityEventFilter` passes only security events (and attaches the kind and fields), for the syslog
handler (``common/syslog5424.py``); :func:`classify_line` recognises the same events in a text log (the
journal), for ``edugate audit``. Card numbers are never in these messages: the loggers matched here log none.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

SECURITY_LOGGER = "edugate.security"
KIND_RE = re.compile(r"^(?P<kind>[a-z][a-z0-9-]{1,40}): ")

log = logging.getLogger(SECURITY_LOGGER)


@dataclass(frozen=True)
class EventPattern:
    kind: str
    logger: str  # a logger name or its prefix
    text: re.Pattern[str]


PATTERNS: tuple[EventPattern, ...] = (
    EventPattern("command-refused", "edugate.gateway.downlink",
                 re.compile(r"command rejected \((?P<code>[\w-]+)\) on (?P<topic>'[^']*'|\S+)")),
    EventPattern("acl-refused", "edugate.gateway.runtime.uplink",
                 re.compile(r"refuses what this gateway publishes \(ACL\)")),
)


def security_event(kind: str, message: str, level: int = logging.WARNING, **fields: Any) -> None:
    """Log a security event on ``edugate.security`` as ``"<kind>: <message>"``; ``fields`` go to syslog as
    structured data. Never pass a password or a card number."""
    if not KIND_RE.match(f"{kind}: "):
        raise ValueError(f"security event kind {kind!r}: lower-case letters, digits and '-'")
    log.log(level, "%s: %s", kind, message, extra={"security": {"kind": kind, **fields}})


def classify(record: logging.LogRecord) -> dict[str, Any] | None:
    """The kind and fields of a security event, or None for any other log record."""
    given = getattr(record, "security", None)
    if isinstance(given, dict) and "kind" in given:
        return given
    message = record.getMessage()
    for pattern in PATTERNS:
        if record.name == pattern.logger or record.name.startswith(pattern.logger + "."):
            found = pattern.text.search(message)
            if found:
                return {"kind": pattern.kind, **{k: v for k, v in found.groupdict().items() if v is not None}}
    return None


def classify_line(line: str) -> dict[str, Any] | None:
    """The kind (and fields) of the security event in one line of a text log, or None.

    Recognises the gateway's own log format (``... LEVEL logger: message``) as the journal keeps it: lines of
    ``edugate.security`` by their kind prefix, the other modules' by :data:`PATTERNS`.
    """
    marker = f" {SECURITY_LOGGER}: "
    if marker in line:
        found = KIND_RE.match(line.split(marker, 1)[1])
        return {"kind": found["kind"]} if found else None
    for pattern in PATTERNS:
        if f" {pattern.logger}" in line:
            found = pattern.text.search(line)
            if found:
                return {"kind": pattern.kind, **{k: v for k, v in found.groupdict().items() if v is not None}}
    return None


class SecurityEventFilter(logging.Filter):
    """Lets through only security events, with ``record.security`` set (kind and fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = classify(record)
        if event is None:
            return False
        record.security = event
        return True
