"""What library gates and self-check stations share: a serial line speaking the station line protocol.

:class:`StationDriver` opens the port (with back-off while it is missing),
splits what arrives into checked lines (:mod:`drivers.station_lines`), hands
each to :meth:`StationDriver.on_line`, counts and logs bad lines (lengths and
positions only), and runs the subclass's :meth:`~StationDriver.background`
tasks beside the reader. :meth:`~StationDriver.send` writes a line back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from collections.abc import Coroutine
from typing import Any, TypeVar

from pydantic import Field

from edugate.contract.records import Emit
from edugate.drivers.base import Backoff, DeviceConfig, DeviceState, Driver, SerialPortPath
from edugate.drivers.library.station_lines import BadLine, LineDecoder, encode_line
from edugate.drivers.serial_reader import IDLE_CHECK_S, LogLimiter, PortLost, SerialLink, describe_open_error

log = logging.getLogger(__name__)


class StationConfig(DeviceConfig):
    """A device on a serial port that speaks the station line protocol (docs/library.md)."""

    port: SerialPortPath
    baudrate: int = Field(115200, ge=1200, le=4_000_000, description="Line speed in bit/s.")
    line_timeout_s: float = Field(0.5, ge=0.02, le=10, description="A line begun but not ended within this time "
                                  "is dropped as partial.")
    reopen_max_s: float = Field(30.0, ge=0.1, le=3600, description="While the port is missing, try to reopen it "
                                "after 0.5 s, then twice as long each time, up to this many seconds apart.")


S = TypeVar("S", bound=StationConfig)


class StationDriver(Driver[S]):
    """Base of the library gate and self-check drivers."""

    kind = "station"

    def __init__(self, config: S) -> None:
        super().__init__(config)
        self.where = f"{config.id} ({config.driver} on {config.port})"
        self._link: SerialLink | None = None
        self._limiter = LogLimiter()
        self._outage: str | None = None
        self.last_line_at: float | None = None  # monotonic

    @abstractmethod
    async def on_line(self, body: str, emit: Emit) -> None:
        """Handle one checked line from the device."""

    def background(self, emit: Emit) -> list[Coroutine[Any, Any, None]]:
        """Tasks that run beside the reader (periodic counts, ILS keepalive). None by default."""
        return []

    async def run(self, emit: Emit) -> None:
        async with asyncio.TaskGroup() as tg:
            for i, coro in enumerate(self.background(emit)):
                tg.create_task(coro, name=f"{self.device_id}:background{i}")
            tg.create_task(self._read_forever(emit), name=f"{self.device_id}:reader")

    @property
    def port_open(self) -> bool:
        return self._link is not None

    def send(self, body: str) -> bool:
        """Write one line to the device; False (and counted) if the port is closed or the write failed."""
        link = self._link
        if link is None:
            self.health.count("writes_dropped")
            return False
        try:
            link.write(encode_line(body))
        except PortLost as exc:
            self.health.count("writes_dropped")
            self._problem("write", f"could not write to the device: {exc}")
            return False
        return True

    async def _read_forever(self, emit: Emit) -> None:
        cfg = self.config
        backoff = Backoff(first=min(0.5, cfg.reopen_max_s), cap=cfg.reopen_max_s)
        while True:
            link = SerialLink(cfg.port, cfg.baudrate)
            try:
                link.open()
            except OSError as exc:
                self._lost(f"cannot open the serial port: {describe_open_error(exc)}")
                await backoff.sleep()
                continue
            self._link = link
            backoff.reset()
            self._back()
            decoder = LineDecoder()
            try:
                while True:
                    data = await link.read(cfg.line_timeout_s if decoder.pending else IDLE_CHECK_S)
                    items: list[str | BadLine]
                    if data:
                        items = decoder.feed(data)
                    else:
                        items = [*decoder.flush()]
                        if not items and (why := link.vanished()):
                            raise PortLost(why)
                    for item in items:
                        if isinstance(item, BadLine):
                            self._problem(item.kind, item.detail)
                            continue
                        self.last_line_at = time.monotonic()
                        self.health.count("lines")
                        await self.on_line(item, emit)
            except PortLost as exc:
                self._lost(f"device disconnected: {exc}")
            finally:
                self._link = None
                link.close()
            await backoff.sleep()

    # ------------------------------------------------------------------ health and logging

    def _problem(self, kind: str, message: str) -> None:
        """A bad line or a refused command: counted, logged (rate-limited), skipped. No content in ``message``."""
        text = f"{self.where}: {message}"
        self.health.count("bad_lines")
        self.health.count(f"bad_lines_{kind}")
        self.health.error(text, offline=False)
        if self._limiter.allow():
            log.warning("%s", text)
        else:
            log.debug("%s", text)

    def _lost(self, what: str) -> None:
        self.health.error(f"{self.where}: {what}")
        if what != self._outage:
            log.warning("%s: %s; retrying with back-off (up to %g s apart)", self.where, what,
                        self.config.reopen_max_s)
        self._outage = what

    def _back(self) -> None:
        if self._outage is not None:
            log.info("%s: back online", self.where)
        else:
            log.info("%s: port open", self.where)
        self._outage = None
        self.health.state = DeviceState.ONLINE

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()
        self.health.state = DeviceState.STOPPED
