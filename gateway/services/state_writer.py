"""A service's state file, written off the event loop and coalesced.

:meth:`StateWriter.request` (on the event loop) returns at once; a write runs in a worker thread: the document
goes to a temporary file next to the state file, is fsynced, renamed over it, and the folder is fsynced, so
the file holds the old state or the new one, whole, whatever happens. While a write is on its way, any number
of further requests make ONE pending write, of the state as it is when that write starts: at most one write
runs and at most one waits, however fast the state changes (a thousand card taps cost a handful of writes, not
a thousand fsyncs on the loop). :meth:`StateWriter.flush` waits until the file holds the state as of the call;
a service awaits it when it stops.

What this trades: after a crash (kill -9, power cut) the file may lack the changes of the last write or two
(milliseconds); a service whose records carry the same facts durably (the outbox) loses nothing it cannot tell
from them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class StateWriter:
    """Writes ``snapshot()`` (a JSON-able document the event loop will not change afterwards) to ``path``."""

    def __init__(self, path: Path, snapshot: Callable[[], Any], what: str) -> None:
        self.path = path
        self.what = what  # in the log, e.g. "attendance state"
        self.writes = 0  # files written (for benchmarks and the status)
        self._snapshot = snapshot
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        """The state changed: have it written soon (returns at once). Without a running event loop (a tool, a
        synchronous test) the file is written before this returns."""
        self._dirty = True
        if self._task is not None and not self._task.done():
            return  # the running write, or the one it starts after it, takes this change along
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._dirty = False
            self._write(self._snapshot())
            return
        self._task = loop.create_task(self._drain(), name=f"state-writer:{self.path.name}")

    async def flush(self) -> None:
        """Wait until the file holds the state as of this call (the write under way and the one pending)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        while self._dirty:
            self._dirty = False
            document = self._snapshot()  # on the loop: the state as it is now, while the loop cannot change it
            try:
                await asyncio.to_thread(self._write, document)
            except Exception:  # a bug (a value json cannot write): the next change tries again
                log.exception("%s %s: writing failed", self.what, self.path)

    def _write(self, document: Any) -> None:
        """Temporary file, fsync, rename, fsync of the folder (worker thread, or the caller without a loop)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as fh:
                json.dump(document, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:  # the service goes on; its records are in the outbox
            log.error("%s %s cannot be written: %s", self.what, self.path, exc)
            return
        self.writes += 1
