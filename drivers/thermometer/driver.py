"""A serial line thermometer (driver ``thermometer``): one reading per line the probe prints.

The worked example of docs/drivers/README.md: everything a serial driver needs comes from the driver
base. :class:`~edugate.drivers.serial_link.ReopeningPort` opens the port with back-off and reopens it
after an unplug, :func:`~edugate.drivers.serial_link.decoded` turns bytes into items with the pure
decoder of :mod:`.codec`, :class:`~edugate.drivers.base.Outage` keeps the offline/online bookkeeping and
:class:`~edugate.common.ratelimit.LogLimiter` keeps bad lines from flooding the journal.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

from pydantic import Field

from edugate.common.ratelimit import LogLimiter
from edugate.contract.records import Emit, Reading, Rejected
from edugate.drivers.base import DeviceConfig, DeviceState, Driver, Outage, SerialPortPath
from edugate.drivers.serial_link import ReopeningPort, decoded
from edugate.drivers.thermometer.codec import BadLine, ThermometerDecoder

log = logging.getLogger(__name__)


class ThermometerConfig(DeviceConfig):
    """A probe on a serial line printing ``T=23.45`` (and optionally more ``key=value`` pairs) per line."""

    streams_on: ClassVar[str] = "port"  # sends without being asked: the doctor listens on this port

    driver: Literal["thermometer"]
    port: SerialPortPath
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = Field(
        9600, description="Line speed in bit/s (most probes: 9600).")
    names: dict[str, str] = Field({"T": "temperature"}, min_length=1, description="The probe's keys and the "
                                  "reading names they become, e.g. {T: temperature, H: humidity}.")
    line_timeout_s: float = Field(0.5, ge=0.02, le=10, description="A line begun but not ended within this time "
                                  "is dropped as partial.")
    reopen_max_s: float = Field(30.0, ge=0.1, le=3600, description="When the probe is unplugged, try to reopen "
                                "it after 0.5 s, then twice as long each time, up to this many seconds apart.")


class ThermometerDriver(Driver[ThermometerConfig]):
    """Emits one Reading per valid line; bad lines are counted and logged (rate-limited), never fatal."""

    config_model = ThermometerConfig

    def __init__(self, config: ThermometerConfig) -> None:
        super().__init__(config)
        self.where = f"{config.id} (thermometer on {config.port})"
        self.outage = Outage(self.health, log, self.where)
        self.port = ReopeningPort(config.port, config.baudrate, reopen_max_s=config.reopen_max_s,
                                  down=self.outage.down)
        self._limiter = LogLimiter()

    async def run(self, emit: Emit) -> None:
        cfg = self.config
        while True:
            async with self.port.session() as link:
                async for item in decoded(link, ThermometerDecoder(cfg.names), cfg.line_timeout_s):
                    if isinstance(item, BadLine):
                        self._bad(item)
                        continue
                    self.port.working()
                    self.outage.up()
                    try:
                        await emit(Reading(cfg.id, item))
                    except Rejected as exc:
                        self.health.count("rejected")
                        log.warning("%s: reading rejected: %s", self.where, exc)
                        continue
                    self.health.ok()

    def _bad(self, bad: BadLine) -> None:
        self.health.count("bad_lines")
        self.health.count(f"bad_lines.{bad.kind}")
        self.health.error(f"{self.where}: bad line ({bad.kind}): {bad.detail}", offline=False)
        held = self._limiter.allow(bad.kind)
        if held is not None:
            more = f" ({held} more of this kind were not logged)" if held else ""
            log.warning("%s: bad line (%s): %s%s", self.where, bad.kind, bad.detail, more)

    async def close(self) -> None:
        self.port.close()
        self.health.state = DeviceState.STOPPED
