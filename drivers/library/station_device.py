"""What library gates and self-check stations share: a serial line speaking the station line protocol.

:class:`StationDriver` opens the port (with back-off while it is missing),
splits what arrives into checked lines (:mod:`.station_lines`), hands
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

from edugate.common.ratelimit import LogLimiter
from edugate.contract.records import Emit
from edugate.drivers.base import DeviceConfig, DeviceState, Driver, Outage, SerialPortPath
from edugate.drivers.library.station_lines import BadLine, LineDecoder, encode_line
from edugate.drivers.serial_link import PortLost, ReopeningPort, decoded

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
        self.outage = Outage(self.health, log, self.where,
                             down_text=f"{{where}}: {{message}}; retrying with back-off (up to "
                                       f"{config.reopen_max_s:g} s apart)")
        self.port = ReopeningPort(config.port, config.baudrate, reopen_max_s=config.reopen_max_s,
                                  down=self.outage.down)
        self._limiter = LogLimiter()
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
        return self.port.link is not None

    def send(self, body: str) -> bool:
        """Write one line to the device; False (and counted) if the port is closed or the write failed."""
        link = self.port.link
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
        while True:
            async with self.port.session() as link:
                self.port.working()
                if self.outage.up() is None:
                    log.info("%s: port open", self.where)
                async for item in decoded(link, LineDecoder(), self.config.line_timeout_s):
                    if isinstance(item, BadLine):
                        self._problem(item.kind, item.detail)
                        continue
                    self.last_line_at = time.monotonic()
                    self.health.count("lines")
                    await self.on_line(item, emit)

    # ------------------------------------------------------------------ health and logging

    def _problem(self, kind: str, message: str) -> None:
        """A bad line or a refused command: counted, logged (rate-limited), skipped. No content in ``message``."""
        text = f"{self.where}: {message}"
        self.health.count("bad_lines")
        self.health.count(f"bad_lines_{kind}")
        self.health.error(text, offline=False)
        held = self._limiter.allow()
        if held is None:
            log.debug("%s", text)
            return
        log.warning("%s%s", text, f" ({held} more were logged at DEBUG only)" if held else "")

    async def close(self) -> None:
        self.port.close()
        self.health.state = DeviceState.STOPPED
