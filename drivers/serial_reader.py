"""What every serial card reader shares (EM4100, PN532): the port kept open, outages, problems logged once.

:class:`SerialCardReader` keeps its port open with :class:`~edugate.drivers.serial_link.ReopeningPort`
(back-off while it is unplugged), keeps the device's outages with
:class:`~edugate.drivers.base.Outage` and logs bad frames through one
:class:`~edugate.common.ratelimit.LogLimiter`. A card UID is never logged, not even
from a bad frame: log lines give lengths and positions only.
"""

from __future__ import annotations

import logging
from typing import ClassVar, TypeVar

from pydantic import Field

from edugate.common.ratelimit import LogLimiter
from edugate.drivers.base import DeviceState, Outage, SerialPortPath
from edugate.drivers.card_reader import CardReaderConfig, CardReaderDriver, Outcome
from edugate.drivers.serial_link import ReopeningPort

log = logging.getLogger(__name__)


class SerialReaderConfig(CardReaderConfig):
    """Options of a card reader on a serial port (a USB-UART adapter, or the Pi's own UART)."""

    port: SerialPortPath
    baudrate: int = Field(9600, description="Line speed in bit/s.")
    reopen_max_s: float = Field(30.0, ge=0.1, le=3600, description="When the reader is unplugged, try to reopen "
                                "it after 0.5 s, then twice as long each time, up to this many seconds apart.")


S = TypeVar("S", bound=SerialReaderConfig)


class SerialCardReader(CardReaderDriver[S]):
    """A card reader on a serial port: the port kept open, offline/online bookkeeping, problem logging.

    Subclasses implement :meth:`reads` as ``while True: async with self.port.session() as link: ...``,
    calling :meth:`_online` once the reader works, :meth:`_offline` when it does not and
    :meth:`_problem` for a bad frame.
    """

    technology: ClassVar[str]

    def __init__(self, config: S) -> None:
        super().__init__(config)
        self.where = f"{config.id} ({config.driver} reader on {config.port})"
        self.log = logging.getLogger(type(self).__module__)  # the driver's own module logger
        self.outage = Outage(self.health, self.log, self.where,
                             down_text=f"{{where}}: {{message}}; retrying with back-off (up to "
                                       f"{config.reopen_max_s:g} s apart)",
                             up_text="{where}: back online after {down:.1f} s{detail}")
        self.port = ReopeningPort(config.port, config.baudrate, reopen_max_s=config.reopen_max_s,
                                  down=self._offline, lost="reader disconnected")
        self._limiter = LogLimiter()

    def _online(self, detail: str = "") -> None:
        """The reader works: ONLINE, the back-off starts afresh, and one log line (INFO) saying so."""
        self.port.working()
        extra = f" ({detail})" if detail else ""
        if self.outage.up(detail=extra) is None:
            self.log.info("%s: reading cards%s", self.where, extra)

    def _offline(self, message: str) -> None:
        """The reader does not work: OFFLINE with ``message`` in its health; logged once per distinct message."""
        self.health.count("errors")
        self.outage.down(message)

    def _problem(self, kind: str, message: str, counter: str = "bad_frames") -> None:
        """A bad frame or a missed answer: counted (``counter`` and ``<counter>_<kind>``), logged, skipped."""
        text = f"{self.where}: {message}"
        self.health.count(counter)
        self.health.count(f"{counter}_{kind}")
        self.health.error(text, offline=False)
        held = self._limiter.allow()
        if held is None:
            self.log.debug("%s", text)
            return
        if held:
            text += f" ({held} more were logged at DEBUG only)"
        self.log.warning("%s", text)

    async def signal(self, outcome: Outcome) -> None:
        """This reader has no buzzer or LED: record the outcome (a GPIO output will show it later)."""
        self.health.count(f"signal_{outcome}")

    async def close(self) -> None:
        self.port.close()
        self.health.state = DeviceState.STOPPED
