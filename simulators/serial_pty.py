"""The device end of a serial cable, as a pseudo-terminal behind a stable name.

A simulated serial device holds the master side of a pty; the driver opens the
slave side like a USB-serial adapter, through a symlink that stays the same
across unplug/replug (real readers come back under the same
``/dev/serial/by-id/...`` name, usually on a different ``/dev/ttyUSBn``)::

    port = PtyPort("/tmp/x/ttyRFID", on_data=handle_host_bytes)
    port.plug()          # a new /dev/pts/N, symlinked from /tmp/x/ttyRFID
    port.write(b"...")   # bytes the driver reads
    port.unplug()        # the driver sees end-of-file; the symlink goes away
    port.plug()          # a new pty under the same name

Runs on the event loop that calls :meth:`PtyPort.plug` (``on_data`` is called
from it). The simulator keeps its own descriptor of the slave open while
plugged, so the pty exists even before the driver opens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)


class PtyPort:
    """One simulated serial port. ``link`` is the path drivers open (a symlink to the current pty)."""

    def __init__(self, link: str | Path, on_data: Callable[[bytes], None] | None = None) -> None:
        self.link = Path(link)
        self.on_data = on_data
        self.slave_path = ""
        self.plugs = 0
        self._master = -1
        self._slave = -1
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    def plug(self) -> None:
        """Create a new pty and point :attr:`link` at it (atomically). No-op if already plugged."""
        if self.plugged:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before the driver configures the port
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.slave_path)
        tmp.replace(self.link)
        if self.on_data is not None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(master, self._readable)
        self.plugs += 1
        log.debug("pty %s plugged in as %s", self.link, self.slave_path)

    def unplug(self) -> None:
        """Close the pty: the driver's next read sees end-of-file, and the name vanishes."""
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        if self._loop is not None:
            self._loop.remove_reader(self._master)
            self._loop = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.plugged:
            log.debug("pty %s (%s) unplugged", self.link, self.slave_path)
        self._master = self._slave = -1

    def replug(self) -> None:
        """Unplug, then plug in again under the same name (a new pty underneath)."""
        self.unplug()
        self.plug()

    def write(self, data: bytes) -> bool:
        """Send bytes to the driver. Returns False (and drops them) while unplugged."""
        if not self.plugged:
            return False
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:  # the driver is not reading and the tty buffer is full: like a UART, drop
                log.debug("pty %s: buffer full, %d bytes dropped", self.link, len(view))
                return False
            view = view[n:]
        return True

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # cannot happen while we hold the slave open; be safe
            return
        if data and self.on_data is not None:
            self.on_data(data)


class PtyDevice:
    """The shared shell of a simulated serial device: its :class:`PtyPort` in ``self.port``; ``async with`` plugs
    it in (``start``) and pulls it out (``stop``). Subclasses add what the device says and does."""

    port: PtyPort

    @property
    def link(self) -> Path:
        """The stable name the driver opens (``port:`` in the gateway config)."""
        return self.port.link

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        self.port.plug()

    async def stop(self) -> None:
        self.port.unplug()
