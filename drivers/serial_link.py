"""A serial port on the event loop, written once for every driver on a serial line.

:class:`SerialLink` is one open port read on the asyncio loop without threads;
:class:`ReopeningPort` keeps one port open: it opens it with back-off while it is
missing, reports each failure to the driver's outage bookkeeping, and reopens it
after it is lost; :func:`decoded` turns what arrives into a driver's items with its
decoder (partial frames flushed after a quiet spell, a vanished port noticed).
Nothing here logs device data: messages give lengths and positions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, TypeVar

import serial

from edugate.drivers.base import Backoff

IDLE_CHECK_S = 1.0
"""While a port is quiet, check this often that its path still names the device we have open."""


class PortLost(OSError):
    """The open port stopped working: end of file or I/O error (unplugged), or its path vanished."""


def describe_open_error(exc: OSError) -> str:
    """Why a serial port did not open, in words an IT person can act on."""
    if exc.errno == errno.ENOENT:
        return "no such serial port (reader unplugged, or a wrong 'port' in the config?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (add the gateway's user to the 'dialout' group)"
    if exc.errno in (errno.EBUSY, errno.EAGAIN):
        return "the port is in use by another program (a second gateway, ModemManager, a terminal?)"
    if exc.errno in (errno.ENOTTY, errno.EINVAL):
        return "not a serial port"
    if exc.errno == errno.ENXIO:
        return "the device behind this name is gone (reader unplugged?)"
    return exc.strerror or str(exc)


def _settle(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class SerialLink:
    """One serial port, read on the asyncio event loop (``add_reader``), so a read can be cancelled at once.

    pyserial opens and configures the port; reads and writes go to its file
    descriptor. :meth:`read` raises :class:`PortLost` when the device is gone.
    """

    def __init__(self, port: str, baudrate: int) -> None:
        self.port = port
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None

    def open(self) -> None:
        """Open and configure the port (raw, 8N1, exclusive). Raises OSError (``serial.SerialException``)."""
        ser = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=1.0, exclusive=True)
        try:
            fd = ser.fileno()
            attrs = termios.tcgetattr(fd)
            attrs[6][termios.VMIN] = 1  # so that a read with no data says EAGAIN, and 0 bytes means hang-up
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            os.set_blocking(fd, False)
        except (termios.error, OSError) as exc:
            ser.close()
            raise serial.SerialException(errno.ENOTTY, f"cannot configure {self.port}: {exc}") from None
        self._serial = ser

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def _fd(self) -> int:
        if self._serial is None:
            raise PortLost("the port is closed")
        return self._serial.fileno()

    async def read(self, wait_s: float) -> bytes:
        """The bytes that arrive within ``wait_s`` seconds (at most 4 KiB), or ``b""`` if none did."""
        fd = self._fd()
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _settle, ready)
        try:
            async with asyncio.timeout(max(wait_s, 0.0)):
                await ready
        except TimeoutError:
            return b""
        finally:
            loop.remove_reader(fd)
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            raise PortLost(f"read failed: {exc.strerror or exc}") from None
        if not data:
            raise PortLost("end of file on the serial port")
        return data

    def discard_input(self) -> None:
        """Drop what the kernel buffered before now (stale data from before the port was opened)."""
        if self._serial is not None:
            with contextlib.suppress(OSError, termios.error):
                self._serial.reset_input_buffer()

    def write(self, data: bytes) -> None:
        """Send ``data`` (small frames: returns once the kernel has them)."""
        if self._serial is None:
            raise PortLost("the port is closed")
        try:
            self._serial.write(data)
        except serial.SerialTimeoutException:
            raise PortLost("write timed out (flow control stuck, or the device is gone)") from None
        except (serial.SerialException, OSError) as exc:
            cause = exc.__context__ if isinstance(exc.__context__, OSError) else exc
            raise PortLost(f"write failed: {cause.strerror or exc}") from None

    def vanished(self) -> str | None:
        """Why the open descriptor no longer matches the port's path (unplugged, replaced), or None."""
        if self._serial is None:
            return "the port is closed"
        try:
            now = os.stat(self.port).st_rdev
        except FileNotFoundError:
            return f"{self.port} has vanished (unplugged?)"
        except OSError as exc:
            return f"{self.port} cannot be checked: {exc.strerror}"
        if now != os.fstat(self._serial.fileno()).st_rdev:
            return f"{self.port} now names another device (re-plugged?)"
        return None

    def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(OSError):
                self._serial.close()
            self._serial = None


T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class StreamDecoder(Protocol[T_co]):
    """A pure decoder of a byte stream: items (or problem markers) out, no I/O."""

    @property
    def pending(self) -> bool:
        """A frame has begun (or something waits to be reported): read with the short timeout."""
        ...

    def feed(self, data: bytes) -> Sequence[T_co]: ...

    def flush(self, quiet_s: float) -> Sequence[T_co]:
        """The line was quiet for ``quiet_s`` seconds: report what was left unfinished."""
        ...


async def decoded(link: SerialLink, decoder: StreamDecoder[T], quiet_s: float, *, idle_s: float = IDLE_CHECK_S,
                  on_quiet: Callable[[], object] | None = None) -> AsyncIterator[T]:
    """Everything ``decoder`` makes of the bytes on ``link``, until it raises :class:`PortLost`.

    A frame begun is flushed after ``quiet_s`` seconds without bytes; while nothing is pending the
    port's path is checked every ``idle_s`` seconds (an adapter unplugged or replaced). ``on_quiet``,
    if given, is called after each such quiet spell that yielded nothing, so that a driver watching
    for silence (a receiver that stopped talking) gets control while no bytes arrive.
    """
    if idle_s <= 0 or quiet_s <= 0:
        raise ValueError(f"quiet_s ({quiet_s}) and idle_s ({idle_s}) must be positive")
    while True:
        data = await link.read(quiet_s if decoder.pending else idle_s)
        items: Sequence[T]
        if data:
            items = decoder.feed(data)
        else:
            items = decoder.flush(quiet_s)
            if not items:
                if why := link.vanished():
                    raise PortLost(why)
                if on_quiet is not None:
                    on_quiet()
        for item in items:
            yield item


class ReopeningPort:
    """One serial port kept open for a driver: opened with back-off, reopened after it is lost.

    ``down`` is the driver's outage bookkeeping (usually :meth:`edugate.drivers.base.Outage.down`):
    it gets one message per failed open and per lost port. The driver calls :meth:`working` once the
    device answers (the back-off starts afresh). Use::

        while True:
            async with port.session() as link:
                ...  # read; PortLost ends the session, the next one opens after the back-off
    """

    def __init__(self, path: str, baudrate: int, *, reopen_max_s: float, down: Callable[[str], object],
                 lost: str = "device disconnected") -> None:
        self.path = path
        self.baudrate = baudrate
        self.backoff = Backoff(first=min(0.5, reopen_max_s), cap=reopen_max_s)
        self._down = down
        self._lost = lost
        self.link: SerialLink | None = None
        """The open link, None between sessions."""

    async def open(self) -> SerialLink:
        """Open the port, retrying with back-off until it opens (each failure goes to ``down``)."""
        while True:
            link = SerialLink(self.path, self.baudrate)
            try:
                link.open()
            except OSError as exc:
                self._down(f"cannot open the serial port: {describe_open_error(exc)}")
                await self.backoff.sleep()
                continue
            self.link = link
            return link

    def working(self) -> None:
        """The device answers: the next reopen starts with the shortest delay."""
        self.backoff.reset()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SerialLink]:
        """The port open until the body ends or raises :class:`PortLost` (reported); then closed and
        the back-off slept, so that a loop around it reopens the port at the right pace."""
        link = await self.open()
        try:
            yield link
        except PortLost as exc:
            self._down(f"{self._lost}: {exc}")
        finally:
            self.close()
        await self.backoff.sleep()

    def close(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close()
