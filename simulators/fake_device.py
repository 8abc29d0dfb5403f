"""The kernel side of a fake device that can be opened, unplugged and plugged back (evdev node, GPIO chip).

Simulators of hardware this machine lacks (a USB keyboard-wedge reader, a
Wiegand reader's GPIO lines) fake only the lowest layer: what opening the
device and reading from it returns. This base keeps track of the open handles
and makes reads fail with ENODEV on unplug, as the kernel does.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Generic, Protocol, TypeVar


class _Handle(Protocol):
    def put(self, item: object) -> None: ...


H = TypeVar("H", bound=_Handle)


class PluggableDevice(Generic[H]):
    def __init__(self) -> None:
        self.plugged = True
        self.opens = 0  # successful opens so far
        self._open: list[H] = []
        self._changed = asyncio.Event()

    def _attach(self, handle: H) -> H:
        """Record a successful open (subclasses' ``open`` check the path/plug first)."""
        self._open.append(handle)
        self.opens += 1
        self._wake()
        return handle

    def _closed(self, handle: H) -> None:
        if handle in self._open:
            self._open.remove(handle)
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return bool(self._open)

    async def wait_open(self, *, opens: int = 1, within_s: float = 5.0) -> None:
        """Wait until the device is open and has been opened at least ``opens`` times in all."""
        async with asyncio.timeout(within_s):
            while not (self._open and self.opens >= opens):
                await self._changed.wait()

    def unplug(self) -> None:
        """Pull the plug: reads on every open handle fail with ENODEV; opening fails until :meth:`plug`."""
        self.plugged = False
        for handle in list(self._open):
            handle.put(OSError(errno.ENODEV, "No such device"))

    def plug(self) -> None:
        """Plug it back in: the same path opens again."""
        self.plugged = True
