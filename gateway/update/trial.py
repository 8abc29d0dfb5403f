"""A change on trial: a remote config (``config.apply``) or a new software version (``gateway.update``) is
kept only if the gateway comes back healthy within a deadline; otherwise it is undone automatically.

The state of a change lives in one small JSON journal next to the config file (``<config>.trial.json``),
rewritten atomically at every step, so that the outcome survives the restart the change needs (and a crash
or power cut in the middle)::

    pending      written by the gateway that accepted the command, just before it restarts
    trial        the restarted gateway runs the change and watches its health (deadline_s)
    rolled_back  the change was undone (why: ``reason``); the gateway restarts on the previous state

A gateway that starts and finds ``trial`` already set knows the previous trial process died (a crash, a
kill, a power cut): it undoes the change. Once running, the gateway reports the outcome as a durable event
through its outbox (``config.applied`` / ``config.rolled_back``, ``gateway.updated`` /
``gateway.update_rolled_back``; ``data.cmd_id`` names the command) and removes the journal.

What "undo" means is the change's own business (:class:`Undo` implementations: the config restores its
backup file, an update points ``current`` back at the previous version).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edugate.contract.state import DeviceState

if TYPE_CHECKING:
    from edugate.gateway.runtime.gateway import Gateway

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
PENDING, TRIAL, ROLLED_BACK = "pending", "trial", "rolled_back"
_REQUIRED = ("cmd_id", "phase", "deadline_s", "devices")


class TrialError(Exception):
    """The journal of a change cannot be read or written; the message names the file."""


def journal_path(config_path: Path) -> Path:
    """Where the journal of a change to the gateway configured by ``config_path`` lives."""
    return config_path.with_name(config_path.name + ".trial.json")


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, fsync of the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if mode is not None:
        tmp.chmod(mode)
    tmp.replace(path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Undo(Protocol):
    """How a kind of change is undone: returns the argv to restart the gateway with (None: this process's)."""

    def __call__(self, doc: Mapping[str, Any]) -> list[str] | None: ...


UNDO: dict[str, Undo] = {}
"""Change kind -> its undo, registered by the module that makes such changes (:data:`KINDS`)."""

APPLIED: dict[str, Callable[[Mapping[str, Any]], None]] = {}
"""Change kind -> what to do once a change is kept (e.g. remove versions older than the previous one)."""

KINDS = {"config": "edugate.gateway.downlink.config_apply", "update": "edugate.gateway.update.installer"}
"""Change kind -> the module that makes it and registers its undo (imported when a journal names it)."""


IN_PLACE: dict[str, Callable[[Mapping[str, Any]], str | None]] = {}
"""Change kind -> why a ``pending`` change is not in place (None: it is), for a start after a crash between
writing the journal and making the change."""


def not_in_place(kind: str, doc: Mapping[str, Any]) -> str | None:
    undo_for(kind)  # imports the kind's module, which registers its hooks
    check = IN_PLACE.get(kind)
    return check(doc) if check is not None else None


def undo_for(kind: str) -> Undo:
    if kind not in UNDO:
        importlib.import_module(KINDS[kind])
    return UNDO[kind]


def restart_argv(python: str | None = None) -> list[str]:
    """The command line that starts this gateway again (``edugate run ...`` with the same arguments), with
    ``python`` (another version's interpreter) or this one."""
    return [python or sys.executable, "-m", "edugate.cli", *sys.argv[1:]]


def reexec(argv: list[str]) -> None:
    """Replace this process by ``argv`` (same pid: systemd's ``Type=notify`` unit and a test's Popen keep it)."""
    log.warning("restarting: %s", " ".join(argv))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


@dataclass
class Trial:
    """The journal of one change; see the module doc."""

    path: Path
    doc: dict[str, Any]

    # ------------------------------------------------------------------ the journal

    @classmethod
    def begin(cls, config_path: Path, kind: str, cmd_id: str, deadline_s: float, devices: list[str],
              **details: Any) -> Trial:
        """Write a ``pending`` journal (the caller then makes the change and restarts the gateway)."""
        path = journal_path(config_path)
        if path.exists():
            raise TrialError(f"{path}: another change is still on trial; wait for its outcome")
        trial = cls(path, {"version": JOURNAL_VERSION, "kind": kind, "cmd_id": cmd_id, "phase": PENDING,
                           "deadline_s": deadline_s, "devices": sorted(devices), "reason": None,
                           "requested_at": int(time.time() * 1000), **details})
        trial.save()
        return trial

    @classmethod
    def read(cls, config_path: Path) -> Trial | None:
        path = journal_path(config_path)
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TrialError(f"{path}: cannot read the journal of a change on trial: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != JOURNAL_VERSION or doc.get("kind") not in KINDS:
            raise TrialError(f"{path}: not a change journal this EduGate reads (version {JOURNAL_VERSION}, kind "
                             f"one of {', '.join(sorted(KINDS))})")
        missing = [key for key in _REQUIRED if key not in doc]
        if missing:
            raise TrialError(f"{path}: the change journal lacks {', '.join(missing)}")
        return cls(path, doc)

    def save(self) -> None:
        try:
            atomic_write(self.path, json.dumps(self.doc, indent=1).encode())
        except OSError as exc:
            raise TrialError(f"{self.path}: cannot write the journal of a change: {exc}") from None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def phase(self) -> str:
        return str(self.doc["phase"])

    # ------------------------------------------------------------------ the steps

    @classmethod
    def resume(cls, config_path: Path) -> Trial | None:
        """At gateway start, before the config is read: None without a change in progress; else the trial,
        now in phase ``trial`` (this start runs the change) or ``rolled_back`` (the outcome is still to be
        reported). A trial whose process died is undone here, and the gateway restarted (never returns)."""
        try:
            trial = cls.read(config_path)
        except TrialError as exc:  # never written so (atomic writes): edited by hand. Start; do not guess
            aside = journal_path(config_path).with_suffix(".corrupt")
            log.error("%s; set aside as %s. Starting on the config as it is: check it, and whether a change from "
                      "central was on trial", exc, aside)
            with contextlib.suppress(OSError):
                journal_path(config_path).replace(aside)
            return None
        if trial is None:
            return None
        if trial.phase not in (PENDING, TRIAL, ROLLED_BACK):
            log.error("%s: unknown phase %r; removed. Starting on the config as it is", trial.path, trial.phase)
            trial.remove()
            return None
        if trial.phase == PENDING and (why := not_in_place(trial.kind, trial.doc)) is not None:
            log.error("%s change %s was interrupted before it was made (%s); nothing to undo", trial.kind,
                      trial.doc["cmd_id"], why)
            trial.doc["phase"], trial.doc["reason"] = ROLLED_BACK, f"interrupted before it was made: {why}"
            trial.save()
        elif trial.phase == PENDING:
            trial.doc["phase"] = TRIAL
            trial.save()
            log.warning("%s change %s on trial: kept if the gateway is healthy within %g s", trial.kind,
                        trial.doc["cmd_id"], trial.doc["deadline_s"])
        elif trial.phase == TRIAL:
            trial.undo("the gateway stopped during the trial (a crash, a kill or a power cut) before it was "
                       "healthy")
        return trial

    def undo(self, reason: str) -> None:
        """Undo the change, record why, and restart the gateway on the previous state (never returns)."""
        log.error("%s change %s rolled back: %s", self.kind, self.doc["cmd_id"], reason)
        try:
            argv = undo_for(self.kind)(self.doc)
        except OSError as exc:  # e.g. the backup is gone: run on as it is, and say so
            log.critical("%s change %s: cannot undo it (%s); the gateway runs on the changed state", self.kind,
                         self.doc["cmd_id"], exc)
            reason, argv = f"{reason}; BUT the undo failed ({exc}): the change is still in place", None
        self.doc["phase"], self.doc["reason"] = ROLLED_BACK, reason
        self.save()
        reexec(argv or restart_argv())

    async def watch(self, gateway: Gateway, *, poll_s: float = 0.1) -> None:
        """Run on the gateway's loop: keep the change once the gateway is healthy, undo it at the deadline;
        report the outcome as an event."""
        started, applied, rolled_back = EVENTS[self.kind]
        if self.phase == ROLLED_BACK:
            await self._report(gateway, rolled_back, reason=self.doc["reason"])
            self.remove()
            return
        await self._report(gateway, started, deadline_s=self.doc["deadline_s"])  # also proves the uplink works
        deadline = time.monotonic() + float(self.doc["deadline_s"])
        why = unhealthy(gateway, self.doc["devices"])
        while why is not None and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
            why = unhealthy(gateway, self.doc["devices"])
        if why is not None:
            reason = f"not healthy within {self.doc['deadline_s']:g} s: {why}"
            log.error("%s change %s failed its trial: %s", self.kind, self.doc["cmd_id"], reason)
            gateway.restart(lambda: self.undo(reason))
            return
        await self._report(gateway, applied)
        self.remove()
        if (kept := APPLIED.get(self.kind)) is not None:
            try:
                kept(self.doc)
            except OSError as exc:
                log.warning("%s change %s kept; tidying up after it failed: %s", self.kind, self.doc["cmd_id"], exc)

    async def _report(self, gateway: Gateway, event_type: str, **extra: Any) -> None:
        from edugate.contract.records import Event
        from edugate.gateway.runtime.pipeline import GATEWAY_DEVICE

        data = {"cmd_id": self.doc["cmd_id"], **dict(self.doc.get("report", {})), **extra}
        await gateway.emit(Event(GATEWAY_DEVICE, event_type, data))  # durable in the outbox once this returns
        log.warning("%s change %s: %s %s", self.kind, self.doc["cmd_id"], event_type,
                    json.dumps(extra, ensure_ascii=False) if extra else "")


EVENTS = {"config": ("config.trial", "config.applied", "config.rolled_back"),
          "update": ("gateway.update_trial", "gateway.updated", "gateway.update_rolled_back")}
"""Change kind -> the event types of its trial's start, its success and its rollback."""


def unhealthy(gateway: Gateway, devices: list[str]) -> str | None:
    """Why the gateway is not healthy yet (None: it is): the uplink is connected and has had a message
    acknowledged by the broker, and every device that was online before the change (and is still configured)
    is online again."""
    uplink = gateway.uplink
    if uplink is None or not uplink.stats.connected:
        error = uplink.stats.last_error if uplink is not None else None
        return "the uplink is not connected" + (f" ({error})" if error else "")
    if uplink.stats.published_messages == 0:
        return "the uplink is connected, but the broker has not acknowledged a message yet"
    missing = [d for d in devices if d in gateway.drivers and gateway.drivers[d].health.state != DeviceState.ONLINE]
    if missing:
        return "device(s) not back online: " + ", ".join(missing)
    return None

