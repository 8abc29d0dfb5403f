"""What every serial card reader shares (EM4100, PN532): a serial port read on the event loop, and the reader.

:class:`SerialLink` is one serial port read on the event loop without threads;
:class:`SerialCardReader` opens the port, marks the device offline when it is
unplugged, reopens it with back-off and logs each problem once. A card UID is
never logged, not even from a bad frame: log lines give lengths and positions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
import time
from collections import deque
from typing import ClassVar, TypeVar

import serial
from pydantic import Field

from edugate.drivers.base import Backoff, DeviceState, SerialPortPath
from edugate.drivers.card_reader import CardReaderConfig, CardReaderDriver, Outcome

log = logging.getLogger(__name__)

IDLE_CHECK_S = 1.0
"""While a port is quiet, check this often that its path still names the device we have open."""


# ---------------------------------------------------------------- a serial port on the event loop


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
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
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


# ---------------------------------------------------------------- what serial card readers share


class SerialReaderConfig(CardReaderConfig):
    """Options of a card reader on a serial port (a USB-UART adapter, or the Pi's own UART)."""

    port: SerialPortPath
    baudrate: int = Field(9600, description="Line speed in bit/s.")
    reopen_max_s: float = Field(30.0, ge=0.1, le=3600, description="When the reader is unplugged, try to reopen "
                                "it after 0.5 s, then twice as long each time, up to this many seconds apart.")


S = TypeVar("S", bound=SerialReaderConfig)


class LogLimiter:
    """At most ``burst`` warnings per ``window_s``: a reader spewing garbage must not flood the journal."""

    def __init__(self, burst: int = 10, window_s: float = 60.0) -> None:
        self.burst = burst
        self.window_s = window_s
        self._times: deque[float] = deque()
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < self.burst:
            self._times.append(now)
            return True
        self.suppressed += 1
        return False


class SerialCardReader(CardReaderDriver[S]):
    """A card reader on a serial port: open with back-off, offline/online bookkeeping, problem logging.

    Subclasses implement :meth:`reads` with :meth:`_open` (waits until the port
    opens), :meth:`_online`, :meth:`_offline` and :meth:`_problem`.
    """

    technology: ClassVar[str]

    def __init__(self, config: S) -> None:
        super().__init__(config)
        self.where = f"{config.id} ({config.driver} reader on {config.port})"
        self.log = logging.getLogger(type(self).__module__)  # the driver's own module logger
        self._link: SerialLink | None = None
        self._offline_since: float | None = None
        self._offline_logged: str | None = None
        self._limiter = LogLimiter()

    def _backoff(self) -> Backoff:
        cap = self.config.reopen_max_s
        return Backoff(first=min(0.5, cap), cap=cap)

    async def _open(self, backoff: Backoff) -> SerialLink:
        """Open the port, retrying with back-off until it opens (the device stays OFFLINE meanwhile)."""
        while True:
            link = SerialLink(self.config.port, self.config.baudrate)
            try:
                link.open()
            except OSError as exc:
                self._offline(f"cannot open the serial port: {describe_open_error(exc)}")
                await backoff.sleep()
                continue
            self._link = link
            return link

    def _close_link(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def _online(self, detail: str = "") -> None:
        """The reader works: ONLINE, and one log line (INFO) saying so."""
        self.health.state = DeviceState.ONLINE
        extra = f" ({detail})" if detail else ""
        if self._offline_since is not None:
            down = time.monotonic() - self._offline_since
            self.log.info("%s: back online after %.1f s%s", self.where, down, extra)
        else:
            self.log.info("%s: reading cards%s", self.where, extra)
        self._offline_since = None
        self._offline_logged = None

    def _offline(self, message: str) -> None:
        """The reader does not work: OFFLINE with ``message`` in its health; logged once per distinct message."""
        text = f"{self.where}: {message}"
        was_online = self.health.state != DeviceState.OFFLINE
        self.health.error(text)
        self.health.count("errors")
        if self._offline_since is None:
            self._offline_since = time.monotonic()
        if was_online or message != self._offline_logged:
            self.log.warning("%s; retrying with back-off (up to %g s apart)", text, self.config.reopen_max_s)
            self._offline_logged = message
        else:
            self.log.debug("%s (still)", text)

    def _problem(self, kind: str, message: str, counter: str = "bad_frames") -> None:
        """A bad frame or a missed answer: counted (``counter`` and ``<counter>_<kind>``), logged, skipped."""
        text = f"{self.where}: {message}"
        self.health.count(counter)
        self.health.count(f"{counter}_{kind}")
        self.health.error(text, offline=False)
        if self._limiter.allow():
            if self._limiter.suppressed:
                text += f" ({self._limiter.suppressed} more were logged at DEBUG only)"
                self._limiter.suppressed = 0
            self.log.warning("%s", text)
        else:
            self.log.debug("%s", text)

    async def signal(self, outcome: Outcome) -> None:
        """This reader has no buzzer or LED: record the outcome (a GPIO output will show it later)."""
        self.health.count(f"signal_{outcome}")

    async def close(self) -> None:
        self._close_link()
        self.health.state = DeviceState.STOPPED


