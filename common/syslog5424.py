"""Security events to syslog as RFC 5424 lines, for the sector's security monitoring.

Python's ``logging.handlers.SysLogHandler`` sends the old BSD format (RFC 3164: a priority and free text).
:class:`Rfc5424Formatter` writes RFC 5424 instead::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [edugate@32473 kind="..." ...] BOM MSG

with an RFC 3339 UTC timestamp (microseconds), the event's kind as MSGID and its fields as structured data
(SD-ID ``edugate@32473``: 32473 is the private enterprise number RFC 5612 reserves for examples; set
``sd_id`` to your organisation's own). :class:`Rfc5424Handler` sends each line to a Unix socket (``/dev/log``),
over UDP (RFC 5426: one datagram per message) or over TCP (RFC 6587 octet counting: ``LEN SP MSG``),
reconnecting after a failure. :func:`install_syslog` attaches it to the ``edugate`` loggers with
:class:`~edugate.common.security_events.SecurityEventFilter`, so only security events are sent.
"""

from __future__ import annotations

import datetime
import logging
import logging.handlers
import os
import re
import socket
import urllib.parse
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edugate.common.security_events import SECURITY_LOGGER, SecurityEventFilter

NILVALUE = "-"
BOM = "\ufeff"
MAX_MSG_BYTES = 8192
SD_NAME_BAD = re.compile(r'[^\x21-\x7e]|[= \]"]')
FACILITIES = logging.handlers.SysLogHandler.facility_names
SEVERITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

Facility = Literal["auth", "authpriv", "daemon", "local0", "local1", "local2", "local3", "local4", "local5",
                   "local6", "local7", "security", "user"]


class SyslogConfig(BaseModel):
    """Where security events go as RFC 5424 syslog lines (the ``syslog:`` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field("unix:///dev/log", description="unix:///dev/log (the local syslog daemon), "
                        "udp://HOST:PORT or tcp://HOST:PORT (the security monitoring's collector; 514 for UDP, "
                        "601 for TCP are usual).")
    facility: Facility = Field("auth", description="Syslog facility of the events.")
    app_name: str = Field("edugate", pattern=r"^[\x21-\x7e]{1,48}$", description="APP-NAME of each line.")
    hostname: str | None = Field(None, pattern=r"^[\x21-\x7e]{1,255}$", description="HOSTNAME of each line "
                                 "(default: this machine's name).")
    sd_id: str = Field("edugate@32473", pattern=r"^[^@=\]\" ]{1,32}@[0-9]+(\.[0-9]+)*$", description="SD-ID of "
                       "the structured data: name@<private enterprise number>. 32473 is the example number of "
                       "RFC 5612; use your organisation's.")

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        parse_target(value)
        return value


def parse_target(text: str) -> tuple[Literal["unix", "udp", "tcp"], str | tuple[str, int]]:
    """``unix:///dev/log`` -> ("unix", "/dev/log"); ``udp://host:514`` -> ("udp", ("host", 514)); else ValueError."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme == "unix" and parts.path.startswith("/") and not parts.netloc:
        return "unix", parts.path
    if parts.scheme in ("udp", "tcp") and parts.hostname and not parts.path.strip("/"):
        try:
            port = parts.port
        except ValueError:
            port = None
        if port:
            return parts.scheme, (parts.hostname, port)  # type: ignore[return-value]  # scheme checked above
    raise ValueError(f"syslog target {text!r}: expected unix:///path/to/socket, udp://HOST:PORT or tcp://HOST:PORT")


def _sd_value(value: object) -> str:
    text = str(value)[:256]
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _sd_name(name: str) -> str:
    return SD_NAME_BAD.sub("_", name)[:32] or "_"


def _header_field(value: str | None, limit: int) -> str:
    text = "".join(c for c in (value or "") if 0x21 <= ord(c) <= 0x7E)[:limit]
    return text or NILVALUE


class Rfc5424Formatter(logging.Formatter):
    """One RFC 5424 syslog message per record; the record's ``security`` dict (kind and fields) becomes MSGID
    and structured data."""

    def __init__(self, facility: str = "auth", app_name: str = "edugate", hostname: str | None = None,
                 sd_id: str = "edugate@32473") -> None:
        super().__init__()
        if facility not in FACILITIES:
            raise ValueError(f"unknown syslog facility {facility!r}")
        self.facility = FACILITIES[facility]
        self.app_name = _header_field(app_name, 48)
        self.hostname = _header_field(hostname or socket.gethostname(), 255)
        self.sd_id = sd_id

    def format(self, record: logging.LogRecord) -> str:
        severity = SEVERITY.get(record.levelno, 4 if record.levelno > logging.INFO else 6)
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="microseconds")
        event = getattr(record, "security", None) or {}
        msgid = _header_field(str(event.get("kind", "")), 32)
        params = " ".join(f'{_sd_name(str(k))}="{_sd_value(v)}"' for k, v in event.items() if v is not None)
        params = " ".join(filter(None, [params, f'logger="{_sd_value(record.name)}"']))
        structured = f"[{self.sd_id} {params}]"
        message = record.getMessage()
        if record.exc_info:
            message += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        body = message.encode("utf-8")[:MAX_MSG_BYTES].decode("utf-8", "ignore")
        return (f"<{self.facility * 8 + severity}>1 {stamp.replace('+00:00', 'Z')} {self.hostname} {self.app_name} "
                f"{os.getpid()} {msgid} {structured} {BOM}{body}")


class Rfc5424Handler(logging.handlers.SysLogHandler):
    """Sends the formatter's lines as they are (no BSD priority prefix): datagrams to a Unix socket or UDP,
    octet-counted frames over TCP. A lost connection is opened again for the next record."""

    def __init__(self, target: str) -> None:
        kind, address = parse_target(target)
        self.target = target
        self.dropped = 0  # messages that could not be sent (no socket, connection lost)
        socktype = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}.get(kind)  # unix: datagram, else stream
        super().__init__(address=address, socktype=socktype)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.format(record).encode("utf-8")
        except Exception:
            self.handleError(record)
            return
        try:
            self._send(data)
        except OSError:  # the collector is away: count it; the event is in the gateway's own log anyway
            self.dropped += 1
            sock = self._sock()
            if sock is not None and not self.unixsocket:
                sock.close()
                self.__dict__["socket"] = None  # opened again for the next record

    def _sock(self) -> Any:
        """The base class's socket (typeshed does not type it)."""
        return self.__dict__.get("socket")

    def _send(self, data: bytes) -> None:
        if self._sock() is None:
            self.createSocket()
        sock = self._sock()
        if sock is None:  # a Unix socket that is not there (yet)
            raise OSError(f"no syslog socket at {self.address}")
        if self.unixsocket:
            try:
                sock.send(data)
            except OSError:
                sock.close()
                self._connect_unixsocket(self.address)  # type: ignore[attr-defined]  # the base class's (private)
                self._sock().send(data)
        elif self.socktype == socket.SOCK_DGRAM:
            sock.sendto(data, self.address)
        else:
            sock.sendall(f"{len(data)} ".encode() + data)


def syslog_handler(cfg: SyslogConfig) -> Rfc5424Handler:
    """A handler for ``cfg`` that passes only security events. OSError when a TCP collector cannot be reached
    at start (later failures are retried per record)."""
    handler = Rfc5424Handler(cfg.target)
    handler.setFormatter(Rfc5424Formatter(cfg.facility, cfg.app_name, cfg.hostname, cfg.sd_id))
    handler.addFilter(SecurityEventFilter())
    handler.setLevel(logging.INFO)
    return handler


def install_syslog(cfg: SyslogConfig, logger: str = "edugate") -> Rfc5424Handler | None:
    """Attach :func:`syslog_handler` to ``logger``; a target that cannot be opened is logged, not raised (the
    gateway runs without syslog rather than not at all)."""
    try:
        handler = syslog_handler(cfg)
    except OSError as exc:
        logging.getLogger(__name__).error("syslog: cannot open %s (%s); security events go to the log only",
                                          cfg.target, exc.strerror or exc)
        return None
    logging.getLogger(logger).addHandler(handler)
    security = logging.getLogger(SECURITY_LOGGER)  # logins and admin actions are INFO: sent with --log-level WARNING
    if security.getEffectiveLevel() > logging.INFO:
        security.setLevel(logging.INFO)
    return handler
