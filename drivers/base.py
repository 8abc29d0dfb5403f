"""The driver contract.

A driver turns a device's bytes into :class:`~edugate.contract.records.Reading` and
:class:`~edugate.contract.records.Event` items and accepts commands back. It knows its
protocol and nothing else: no MQTT, no SQLite, no web. One driver instance
serves one configured device.

To add a driver: a folder ``drivers/<name>/`` with a config model (a subclass of
:class:`DeviceConfig` with ``driver: Literal["<name>"]``), a subclass of
:class:`Driver`, ``sample.yaml``, ``README.md`` and ``testcases/``; one line in
``pyproject.toml`` under ``[project.entry-points."edugate.drivers"]``; its
simulator and tests. Nothing in ``gateway/`` changes (docs/drivers/README.md).
Device outages are kept by :class:`Outage`, serial ports by
:mod:`edugate.drivers.serial_link`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    model_validator,
)

from edugate.common.card_identity import CardIdentityRule, ReaderIdentity, canonical
from edugate.contract.ids import ID_PATTERN as ID_PATTERN  # the wire contract's, re-exported for the drivers
from edugate.contract.records import Emit
from edugate.contract.state import DeviceState as DeviceState  # the wire contract's, re-exported for the drivers


def _device_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not a device path: give e.g. /dev/serial/by-id/usb-... or /dev/ttyUSB0")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{value!r} has a control character (a NUL, a tab, a line break) in it: not a device path")
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

    renamed: ClassVar[Mapping[str, str]] = {}
    """Old option name -> its name now (issue 19: one name per setting across drivers). The old name is still
    accepted, and ``edugate check`` and the gateway's log report it as deprecated, at its line."""
    _old_names_used: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _accept_old_names(cls, data: Any, handler: ModelWrapValidatorHandler[DeviceConfig]) -> DeviceConfig:
        used: list[str] = []
        if cls.renamed and isinstance(data, Mapping):
            data = dict(data)
            for old, new in cls.renamed.items():
                if old not in data:
                    continue
                if new in data:
                    raise ValueError(f"{old!r} and {new!r} are one setting ({old!r} is its old name): keep {new!r}")
                data[new] = data.pop(old)
                used.append(old)
        model = handler(data)
        model._old_names_used = tuple(used)
        return model

    def deprecated_names(self) -> list[tuple[str, str]]:
        """The old option names this entry used, each with its name now."""
        return [(old, self.renamed[old]) for old in self._old_names_used]


@dataclass
class DeviceHealth:
    """What a driver reports about its device: state, error count and last error in the retained state document;
    everything, with the counters, on the local status page (``/api/status``)."""

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


class Outage:
    """Offline/online bookkeeping of one device, written once for every driver.

    :meth:`down` marks the device OFFLINE with the message in its health; the first call of an
    outage starts it (``since``, ``count`` and the health counter ``counter``) and logs one WARNING,
    later calls log again only when the cause (``key``, by default the message) changes, else at
    DEBUG (``still_text``). :meth:`up` marks it ONLINE and, if an outage was running, logs one INFO line with its
    length. The texts are format strings with the fields ``where``, ``message``, ``down`` (seconds
    offline) and ``outages`` (how many so far), plus any passed to :meth:`up`.
    """

    def __init__(self, health: DeviceHealth, log: logging.Logger, where: str, *,
                 health_text: str = "{where}: {message}",
                 down_text: str = "{where}: {message}; retrying with back-off",
                 still_text: str = "{where}: {message} (still)",
                 up_text: str = "{where}: back online after {down:.1f} s",
                 counter: str = "outages",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.health = health
        self.log = log
        self.where = where
        self.health_text = health_text
        self.down_text = down_text
        self.still_text = still_text
        self.up_text = up_text
        self.counter = counter
        self._clock = clock
        self.since: float | None = None
        """When the running outage began (monotonic clock), None while the device works."""
        self.count = 0
        """Outages so far."""
        self._logged: Hashable | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def down(self, message: str, *, key: Hashable | None = None, **extra: object) -> bool:
        """The device does not work. True if this call began the outage. ``extra``: more fields for the texts."""
        fields = {**extra, "where": self.where, "message": message}
        self.health.error(self.health_text.format(**fields))
        key = message if key is None else key
        began = self.since is None
        if began:
            self.since = self._clock()
            self.count += 1
            self.health.count(self.counter)
        if began or key != self._logged:
            self.log.warning("%s", self.down_text.format(**fields, down=self.seconds(), outages=self.count))
            self._logged = key
        else:
            self.log.debug("%s", self.still_text.format(**fields, down=self.seconds(), outages=self.count))
        return began

    def up(self, **fields: object) -> float | None:
        """The device works: ONLINE. Returns the length of the outage that ended (logged once), or None."""
        self.health.state = DeviceState.ONLINE
        if self.since is None:
            return None
        down = self.seconds()
        self.log.info("%s", self.up_text.format(where=self.where, down=down, outages=self.count, **fields))
        self.since = None
        self._logged = None
        return down

    def seconds(self) -> float:
        """How long the running outage has lasted (0 when none is running)."""
        return 0.0 if self.since is None else self._clock() - self.since


def _no_pseudonyms(raw: bytes) -> str:
    raise RuntimeError("this gateway has no pseudonymisation key configured (privacy.secret_file)")


@dataclass(frozen=True)
class DriverContext:
    """What the gateway lends a driver besides its config. Drivers must not reach for anything else."""

    pseudonymize: Callable[[bytes], str] = _no_pseudonyms
    """Raw personal identifier (a card UID, a patron barcode) -> keyed pseudonym. Call it at once and drop
    the raw value: it must never reach a log line, an event or the outbox."""
    card_rule: CardIdentityRule | None = None
    """The school's card identity rule (``privacy.card_identity``; None: cards as read)."""

    def card_pseudonym(self, raw: bytes, technology: str, reader: ReaderIdentity | None = None) -> str:
        """A card read -> its pseudonym under the school's rule: the read mapped to the card's canonical number
        first (raises :class:`~edugate.common.card_identity.CardIdentityError`, without card data, if it cannot)."""
        return self.pseudonymize(canonical(raw, technology, self.card_rule, reader))


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
