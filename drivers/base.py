"""The driver contract.

A driver turns a device's bytes into :class:`~gateway.records.Reading` and
:class:`~gateway.records.Event` items and accepts commands back. It knows its
protocol and nothing else: no MQTT, no SQLite, no web. One driver instance
serves one configured device.

To add a driver: write ``drivers/<name>.py`` with a config model (a subclass of
:class:`DeviceConfig` with ``driver: Literal["<name>"]``) and a subclass of
:class:`Driver`, register it in ``pyproject.toml`` under
``[project.entry-points."edugate.drivers"]``, and add its simulator, tests and a
sample config. Nothing in ``gateway/`` changes.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from edugate.contract.records import Emit

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Ids end up in MQTT topics and series labels: lower-case letters, digits, '-' and '_'."""


def _device_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not a device path: give e.g. /dev/serial/by-id/usb-... or /dev/ttyUSB0")
    return value


SerialPortPath = Annotated[str, Field(min_length=1, max_length=256, description="Serial device, best the stable "
                                      "name /dev/serial/by-id/usb-... (or /dev/ttyUSB0, /dev/ttyAMA0)."),
                           AfterValidator(_device_path)]
"""The ``port`` option of a device on a serial line: an absolute device path."""


class DeviceConfig(BaseModel):
    """Fields every device entry has. Drivers subclass this with their own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN, description="Unique device id within this gateway.")
    driver: str = Field(description="Driver name (a key of the 'edugate.drivers' entry points).")
    room: str | None = Field(None, max_length=64, description="Room or place, e.g. 'lab-2' or 'library'.")
    enabled: bool = Field(True, description="Set false to keep the entry but not run it.")


class DeviceState(StrEnum):
    STARTING = "starting"
    ONLINE = "online"
    OFFLINE = "offline"  # unreachable or failing; the driver retries with back-off
    STOPPED = "stopped"


@dataclass
class DeviceHealth:
    """What a driver reports about its device; published in the gateway health record."""

    state: DeviceState = DeviceState.STARTING
    last_error: str | None = None
    last_error_at: float | None = None
    error_count: int = 0
    last_reading_at: float | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def ok(self) -> None:
        self.state = DeviceState.ONLINE
        self.last_reading_at = time.time()

    def error(self, message: str, *, offline: bool = True) -> None:
        self.last_error = message
        self.last_error_at = time.time()
        self.error_count += 1
        if offline:
            self.state = DeviceState.OFFLINE

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "error_count": self.error_count,
            "last_reading_at": self.last_reading_at,
            "counters": dict(self.counters),
        }


def _no_pseudonyms(raw: bytes) -> str:
    raise RuntimeError("this gateway has no pseudonymisation key configured (privacy.secret_file)")


@dataclass(frozen=True)
class DriverContext:
    """What the gateway lends a driver besides its config. Drivers must not reach for anything else."""

    pseudonymize: Callable[[bytes], str] = _no_pseudonyms
    """Raw personal identifier (a card UID, a patron barcode) -> keyed pseudonym. Call it at once and drop
    the raw value: it must never reach a log line, an event or the outbox."""


class CommandError(ValueError):
    """A command the driver refuses (unknown name, bad arguments, device says no)."""


C = TypeVar("C", bound=DeviceConfig)


class Driver(ABC, Generic[C]):
    """Base class of every driver. Subclasses set ``config_model`` and implement :meth:`run`."""

    config_model: ClassVar[type[DeviceConfig]]

    ctx: DriverContext = DriverContext()  # the runtime sets the gateway's context before run()

    def __init__(self, config: C) -> None:
        self.config = config
        self.health = DeviceHealth()

    @property
    def device_id(self) -> str:
        return self.config.id

    @abstractmethod
    async def run(self, emit: Emit) -> None:
        """Read the device until cancelled, awaiting ``emit`` for every item.

        Must never return on a device error: mark the device offline in
        :attr:`health`, log one clear message, and retry with back-off.
        """

    async def command(self, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Act on a command from the downlink. The default refuses every command."""
        raise CommandError(f"device {self.device_id!r} ({self.config.driver}) accepts no commands ({name!r})")

    async def close(self) -> None:
        """Release ports and connections. Called once after :meth:`run` is cancelled."""


class Backoff:
    """Capped exponential back-off for reconnect loops: 0.5 s, 1 s, 2 s ... up to ``cap``."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)
