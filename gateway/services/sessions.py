"""Experiment sessions: a lab teacher records a named experiment on a set of devices, then plots and exports it.

Started and stopped on the live readings page (or by the signed commands ``sessions.start`` /
``sessions.stop``). While a session runs, every telemetry record of its devices carries the session's id
(``session``, see the contract) and its numeric values are kept in the session's file, so the session can be
plotted and downloaded (CSV, and a JSON with its metadata) on the gateway after the live window has moved on.
A device is in at most one running session.

Each start and stop is a ``session`` event per device (``action`` started/stopped, ``session``, ``name``;
stopped: ``rows``, ``duration_s``), so central finds a session's devices and times in its store and can
answer for a session by id (``edugate.central.sessions``).

On disk (``folder``, default ``sessions/`` next to the outbox): ``<id>.json`` (metadata, atomic replace) and
``<id>.jsonl`` (one row per reading: ``[ts_ms, device, {name: value}]``, appended, flushed every second).
A running session survives a gateway restart and goes on recording; a start or stop whose events were not yet
in the outbox when the gateway died (``unsent`` in the metadata) has them sent after the restart, with the
session's own times, so central still finds the session. At most ``max_rows`` rows per session
(beyond: counted, not kept; the outbox still has every reading) and the ``keep`` newest sessions are kept.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypedDict
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edugate.contract.records import SESSION_PATTERN, Emit, Event, Rejected
from edugate.drivers.base import ID_PATTERN, CommandError
from edugate.gateway.services.base import Command, Section, Select, Service, ServiceSetup

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,80}$")
FLUSH_S = 1.0


class SessionsConfig(BaseModel):  # the ``sessions:`` section (a docstring would enter the schema)
    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: Path | None = Field(None, description="Where sessions are kept (default: sessions/ next to the "
                                "outbox). Use an absolute path.")
    max_rows: int = Field(500_000, ge=100, le=10_000_000, description="Readings kept per session at most.")
    keep: int = Field(500, ge=1, le=100_000, description="Sessions kept; the oldest finished ones are deleted.")


class StartArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80, description="What the experiment is, e.g. 'Cooling water 10A'.")
    devices: list[str] = Field(min_length=1, max_length=64, description="The devices recorded.")
    by: str = Field("central", min_length=1, max_length=64, description="Who started it.")

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        value = value.strip()
        if not NAME_RE.match(value):
            raise ValueError("a session name is 1 to 80 printable characters")
        return value

    @field_validator("devices")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        bad = [d for d in value if not re.match(ID_PATTERN, d)]
        if bad:
            raise ValueError(f"not device ids: {bad}")
        return sorted(set(value))


class StopArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: str = Field(pattern=SESSION_PATTERN)
    by: str = Field("central", min_length=1, max_length=64)


class SessionError(CommandError):
    """A start or stop the service refuses (the message says why)."""


@dataclass
class Session:
    id: str
    name: str
    devices: list[str]
    started_at: int  # ms
    started_by: str
    stopped_at: int | None = None
    stopped_by: str | None = None
    rows: int = 0
    rows_dropped: int = 0
    values: list[str] = field(default_factory=list)  # value names seen, in order of first appearance
    rooms: dict[str, str | None] = field(default_factory=dict)
    unsent: list[str] = field(default_factory=list)  # actions (started/stopped) whose events are not in the outbox

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def meta(self) -> dict[str, Any]:
        meta = asdict(self) | {"running": self.running}
        del meta["unsent"]
        return meta


class SessionsStatus(TypedDict):
    running: list[dict[str, Any]]
    sessions: int
    rows: int


class SessionsService(Service):
    name = "sessions"
    order = 50  # after the alerts: a session records what was committed with its alert state decided
    section = Section("sessions", SessionsConfig, "Experiment sessions recorded from the live readings page.")
    observes = (Select(kinds=frozenset({"telemetry"})),)

    @classmethod
    def from_config(cls, setup: ServiceSetup) -> SessionsService | None:
        """On a gateway with a ``sessions:`` section (``sessions: {}`` is enough)."""
        section = setup.section
        if not isinstance(section, SessionsConfig):
            return None
        return cls(section.folder or setup.data_dir / "sessions", {d.id: d.room for d in setup.devices},
                   setup.timezone, max_rows=section.max_rows, keep=section.keep)

    def __init__(self, folder: Path, devices: dict[str, str | None], tz: str, max_rows: int = 500_000,
                 keep: int = 500) -> None:
        self.folder = Path(folder)
        self.devices = devices
        self.tz = tz
        self.max_rows = max_rows
        self.keep = keep
        self.sessions: dict[str, Session] = {}
        self.by_device: dict[str, Session] = {}  # device -> its running session
        self._files: dict[str, IO[str]] = {}
        self._queue: list[Event] = []
        self._wakeup: asyncio.Event | None = None
        self._load()

    # ------------------------------------------------------------------ starting and stopping

    def start(self, name: str, devices: list[str], by: str, now: float | None = None) -> Session:
        args = StartArgs(name=name, devices=devices, by=by)
        unknown = [d for d in args.devices if d not in self.devices]
        if unknown:
            raise SessionError(f"no device {', '.join(map(repr, unknown))} on this gateway")
        busy = {d: self.by_device[d].name for d in args.devices if d in self.by_device}
        if busy:
            raise SessionError("already recording: " + ", ".join(f"{d} in {n!r}" for d, n in busy.items())
                               + "; stop that session first")
        now = time.time() if now is None else now
        stamp = dt.datetime.fromtimestamp(now, ZoneInfo(self.tz)).strftime("%Y%m%d-%H%M%S")
        session = Session(id=f"s-{stamp}-{secrets.token_hex(2)}", name=args.name, devices=args.devices,
                          started_at=int(now * 1000), started_by=args.by,
                          rooms={d: self.devices.get(d) for d in args.devices}, unsent=["started"])
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sessions[session.id] = session
        for device in session.devices:
            self.by_device[device] = session
        self._save(session)
        self._files[session.id] = self._rows_path(session.id).open("a", encoding="utf-8")
        log.info("session %s %r started by %s on %s", session.id, session.name, args.by, ", ".join(args.devices))
        self._events(session, "started", now)
        self._prune()
        return session

    def stop(self, session_id: str, by: str, now: float | None = None) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionError(f"no session {session_id!r} on this gateway")
        if not session.running:
            raise SessionError(f"session {session_id} ({session.name!r}) is stopped already")
        now = time.time() if now is None else now
        session.stopped_at, session.stopped_by = int(now * 1000), by
        session.unsent.append("stopped")
        for device in session.devices:
            if self.by_device.get(device) is session:
                del self.by_device[device]
        fh = self._files.pop(session.id, None)
        if fh is not None:
            fh.close()
        self._save(session)
        log.info("session %s %r stopped by %s: %d rows", session.id, session.name, by, session.rows)
        self._events(session, "stopped", now)
        return session

    def _events(self, session: Session, action: str, now: float) -> None:
        for device in session.devices:
            data: dict[str, Any] = {"action": action, "session": session.id, "name": session.name,
                                    "by": session.started_by if action == "started" else session.stopped_by}
            if action == "stopped":
                data |= {"rows": session.rows, "duration_s": round((now * 1000 - session.started_at) / 1000, 1)}
            self._queue.append(Event(device, "session", data, ts=now))
        if self._wakeup is not None:
            self._wakeup.set()

    # ------------------------------------------------------------------ readings

    def stage(self, record: dict[str, Any]) -> dict[str, Any] | None:
        device = record.get("device")
        session = self.by_device.get(device) if isinstance(device, str) else None
        if session is None:
            return record
        record["session"] = session.id
        values = {k: v for k, v in (record.get("values") or {}).items()
                  if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        if not values:
            return record
        if session.rows >= self.max_rows:
            session.rows_dropped += 1
            return record
        for name in values:
            if name not in session.values:
                session.values.append(name)
        fh = self._files.get(session.id)
        if fh is not None:
            try:
                fh.write(json.dumps([record["ts"], device, values], separators=(",", ":")) + "\n")
            except OSError as exc:
                session.rows_dropped += 1
                log.error("session %s: cannot write %s: %s", session.id, self._rows_path(session.id), exc)
                return record
        session.rows += 1
        return record

    # ------------------------------------------------------------------ reading a session back

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def listing(self) -> list[Session]:
        """Newest first."""
        return sorted(self.sessions.values(), key=lambda s: s.started_at, reverse=True)

    def running_for(self, devices: list[str]) -> list[dict[str, Any]]:
        """The running sessions recording any of ``devices`` (the live page's panel)."""
        found = {self.by_device[d].id: self.by_device[d] for d in devices if d in self.by_device}
        return [s.meta() for s in sorted(found.values(), key=lambda s: s.started_at)]

    def free_of(self, devices: list[str]) -> list[str]:
        """Those of ``devices`` not in a running session."""
        return [d for d in devices if d not in self.by_device and d in self.devices]

    def rows(self, session_id: str) -> Iterator[tuple[int, str, dict[str, float]]]:
        """The session's readings, oldest first: (ts ms, device, values)."""
        fh = self._files.get(session_id)
        if fh is not None:
            fh.flush()
        try:
            with self._rows_path(session_id).open(encoding="utf-8") as src:
                for line in src:
                    try:
                        ts, device, values = json.loads(line)
                    except ValueError:  # a line cut short by a power cut: the rest is still good
                        continue
                    yield ts, device, values
        except FileNotFoundError:
            return

    def series(self, session_id: str, after: int = 0, max_rows: int = 20_000) -> dict[str, Any]:
        """For the plot: the rows from byte ``after`` of the session's file on (at most ``max_rows``), per device a
        time column (s) and one column per value (None where missing); ``next``: where the next call goes on.

        A page asks again with ``after=next`` every few seconds, so it reads only what is new."""
        out: dict[str, dict[str, Any]] = {}
        session = self.sessions[session_id]
        fh = self._files.get(session_id)
        if fh is not None:
            fh.flush()
        rows: list[tuple[int, str, dict[str, float]]] = []
        position = after
        try:
            with self._rows_path(session_id).open("rb") as src:
                src.seek(after)
                for raw in src:
                    if not raw.endswith(b"\n") or len(rows) >= max_rows:  # a row being written: next time
                        break
                    position += len(raw)
                    try:
                        ts, device, values = json.loads(raw)
                    except ValueError:  # cut short by a power cut: skipped
                        continue
                    rows.append((ts, device, values))
        except FileNotFoundError:
            pass
        for ts, device, values in rows:
            dev = out.setdefault(device, {"ts": [], "values": {}})
            n = len(dev["ts"])
            dev["ts"].append(ts / 1000)
            for name, value in values.items():
                dev["values"].setdefault(name, [None] * n).append(value)
            for col in dev["values"].values():
                if len(col) < n + 1:
                    col.append(None)
        return {"session": session.meta(), "devices": out, "next": position}

    def csv(self, session_id: str) -> str:
        """``time,ts_ms,device,room,<values...>`` in the school's time zone, one row per reading."""
        session = self.sessions[session_id]
        zone = ZoneInfo(self.tz)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["time", "ts_ms", "device", "room", *session.values])
        for ts, device, values in self.rows(session_id):
            writer.writerow([dt.datetime.fromtimestamp(ts / 1000, zone).isoformat(timespec="milliseconds"), ts,
                             device, session.rooms.get(device) or "",
                             *("" if (v := values.get(name)) is None else _number(v) for name in session.values)])
        return out.getvalue()

    # ------------------------------------------------------------------ the service's task, commands, status

    async def run(self, emit: Emit) -> None:
        self._wakeup = asyncio.Event()
        while True:
            emitted = bool(self._queue)
            while self._queue:
                try:
                    await emit(self._queue[0])
                except Rejected as exc:  # a bug: it would block the later events; logged, dropped
                    log.error("sessions: event refused by the pipeline (%s): dropped", exc)
                self._queue.pop(0)
            if emitted:
                self._sent()
            for fh in self._files.values():
                fh.flush()
            self._wakeup.clear()
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can drop a cancellation (gh-86296)
                async with asyncio.timeout(FLUSH_S):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def take_events(self) -> list[Event]:
        """Hand the start and stop events to the caller (tests that call :meth:`start` directly)."""
        events, self._queue = self._queue, []
        self._sent()
        return events

    def _sent(self) -> None:
        """Every queued start and stop event is in the outbox (or taken): no longer unsent, on disk too."""
        for session in self.sessions.values():
            if session.unsent:
                session.unsent = []
                self._save(session)

    def commands(self) -> dict[str, Command]:
        async def start(args: StartArgs) -> dict[str, Any]:
            return self.start(args.name, args.devices, args.by).meta()

        async def stop(args: StopArgs) -> dict[str, Any]:
            return self.stop(args.session, args.by).meta()

        return {"sessions.start": Command(StartArgs, start), "sessions.stop": Command(StopArgs, stop)}

    def status(self) -> SessionsStatus:
        running = [s for s in self.listing() if s.running]
        return {"running": [{"id": s.id, "name": s.name, "devices": s.devices, "rows": s.rows} for s in running],
                "sessions": len(self.sessions), "rows": sum(s.rows for s in running)}

    def state_files(self) -> list[Path]:
        return [self.folder]

    # ------------------------------------------------------------------ on disk

    def _meta_path(self, session_id: str) -> Path:
        return self.folder / f"{session_id}.json"

    def _rows_path(self, session_id: str) -> Path:
        return self.folder / f"{session_id}.jsonl"

    def _save(self, session: Session) -> None:
        path = self._meta_path(session.id)
        tmp = path.with_suffix(".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                json.dump(asdict(session), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.error("session %s: metadata cannot be written to %s: %s", session.id, path, exc)

    def _load(self) -> None:
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("s-*.json")):
            try:
                session = Session(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                log.error("session file %s unreadable (%s): skipped", path, exc)
                continue
            self.sessions[session.id] = session
            for action in session.unsent:  # started or stopped just before a crash: the events are sent now
                at = session.started_at if action == "started" else session.stopped_at or session.started_at
                self._events(session, action, at / 1000)
                log.info("session %s: its %s events from before the restart are sent now", session.id, action)
            if session.running:
                gone = [d for d in session.devices if d not in self.devices]
                for device in session.devices:
                    if device in self.devices and device not in self.by_device:
                        self.by_device[device] = session
                session.rows = _complete_rows(self._rows_path(session.id))
                self._files[session.id] = self._rows_path(session.id).open("a", encoding="utf-8")
                log.info("session %s %r goes on recording after the restart%s", session.id, session.name,
                         f" (devices no longer configured: {', '.join(gone)})" if gone else "")

    def _prune(self) -> None:
        finished = [s for s in sorted(self.sessions.values(), key=lambda s: s.started_at) if not s.running]
        for session in finished[: max(0, len(self.sessions) - self.keep)]:
            for path in (self._meta_path(session.id), self._rows_path(session.id)):
                path.unlink(missing_ok=True)
            del self.sessions[session.id]
            log.info("session %s %r deleted (more than %d sessions kept)", session.id, session.name, self.keep)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def _complete_rows(path: Path) -> int:
    """The rows of a running session's file after a restart. A last line cut short (a power cut or ``kill -9``
    in the middle of a write) is cut off, so the rows appended from now on start on a line of their own."""
    rows = 0
    with path.open("a+b") as fh:
        fh.seek(0)
        while chunk := fh.read(1 << 20):
            rows += chunk.count(b"\n")
        size = fh.tell()
        fh.seek(max(0, size - (1 << 16)))  # a row is far shorter than 64 kB
        tail = fh.read()
        if tail and not tail.endswith(b"\n"):
            cut = len(tail) - tail.rfind(b"\n") - 1
            fh.truncate(size - cut)
            log.warning("session file %s: a row cut short by the restart was dropped (%d bytes)", path, cut)
    return rows
