"""The service contract: school logic that sits on the gateway's pipeline (access, attendance, the bus, ...).

A service is a subclass of :class:`Service`. What it declares, on the class:

- ``name``: the registry name (also the key of its status on the pages and in ``edugate status``);
- ``order``: its place in the pipeline (lower runs first; models before rules before bookkeeping);
- ``section``: the config section it owns (:class:`Section`: key, pydantic model, required or not), or None.
  The gateway config gets one top-level key per registered service section; ``gateway/config.py`` never names
  a service.

What it does, once built by :meth:`Service.from_config` (which returns None when the config does not ask for it):

- :attr:`Service.observes`: the records it wants (:class:`Select`: kinds, event types, reader roles, devices);
  the runtime calls :meth:`Service.stage` only for those, in ``order``, before the record is committed;
- :meth:`Service.run`: its background task (emits its own events; restarted by the runtime if it fails);
- :meth:`Service.commands`: its downlink commands, name -> :class:`Command` (args model, async handler);
- :meth:`Service.status`: its status document for the pages (a ``TypedDict`` of its own);
- :meth:`Service.state_files`: the files it keeps across restarts (backed up, listed by ``doctor``).

Drivers never see services; a service never imports the runtime, the pages or another service.
Registration is in ``registry.py`` (entry point group ``edugate.services``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

from pydantic import BaseModel

from edugate.contract.records import Emit
from edugate.drivers.base import DeviceConfig

Record = dict[str, Any]


@dataclass(frozen=True)
class Section:
    """A top-level key of the gateway config that a service owns.

    ``required=False`` (the default): the key may be left out, and then the value is None (the service is
    off unless it has another reason to run). ``required=True``: left out, it takes the model's defaults.
    """

    key: str
    model: type[BaseModel]
    description: str | None = None
    required: bool = False


@dataclass(frozen=True)
class Select:
    """A kind of record a service wants; an empty field matches anything.

    ``roles`` match the reader role a card tap carries (``data.role``); ``devices`` the record's device id.
    """

    kinds: frozenset[str] = frozenset()  # "telemetry", "event"
    event_types: frozenset[str] = frozenset()  # e.g. "card_tap"
    roles: frozenset[str] = frozenset()  # e.g. "door", "bus"
    devices: frozenset[str] = frozenset()

    def matches(self, record: Record) -> bool:
        if self.kinds and record.get("kind") not in self.kinds:
            return False
        if self.event_types and record.get("type") not in self.event_types:
            return False
        if self.devices and record.get("device") not in self.devices:
            return False
        if self.roles:
            data = record.get("data")
            return isinstance(data, dict) and data.get("role") in self.roles
        return True


EVERY_RECORD: tuple[Select, ...] = (Select(),)


class SupportsCommand(Protocol):
    """A running device, as a service may act on it: its driver's ``command`` (``Driver.command``)."""

    async def command(self, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]: ...


DeviceLookup = Callable[[str], SupportsCommand | None]
"""Device id -> the running device (None: not configured or not enabled)."""


def card_taps_at(*roles: str) -> Select:
    """The ``card_tap`` events of readers with one of ``roles``."""
    return Select(kinds=frozenset({"event"}), event_types=frozenset({"card_tap"}), roles=frozenset(roles))


class Command(NamedTuple):
    """A downlink command a service handles: its arguments' model and the handler (returns the result)."""

    args: type[BaseModel]
    handler: Callable[[Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ServiceSetup:
    """What a service is built from: its own config section and the gateway's facts it may use."""

    section: BaseModel | None  # the value of the service's ``section`` (None: absent, or the service has none)
    devices: Sequence[DeviceConfig]  # the enabled devices
    timezone: str
    data_dir: Path  # the folder of the outbox: default place of state files
    roles: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)  # role -> device id -> room

    @classmethod
    def of(cls, section: BaseModel | None, devices: Sequence[DeviceConfig], timezone: str,
           data_dir: Path) -> ServiceSetup:
        roles: dict[str, dict[str, str | None]] = {}
        for dev in devices:
            role = getattr(dev, "role", None)
            if role:
                roles.setdefault(role, {})[dev.id] = dev.room
        return cls(section, devices, timezone, data_dir, roles)

    def readers(self, *roles: str) -> dict[str, str | None]:
        """Device id -> room of the enabled devices with one of ``roles``."""
        return {dev: room for role in roles for dev, room in self.roles.get(role, {}).items()}


class Service:
    """The base of every service; see the module docstring for the contract."""

    name: ClassVar[str] = "service"
    order: ClassVar[int] = 100
    section: ClassVar[Section | None] = None
    observes: tuple[Select, ...] = EVERY_RECORD

    @classmethod
    def from_config(cls, setup: ServiceSetup) -> Service | None:
        """The service for this gateway, or None if its config does not ask for it."""
        return None

    @classmethod
    def config_warnings(cls, section: BaseModel | None,
                        devices: Sequence[DeviceConfig]) -> list[tuple[tuple[str | int, ...], str]]:
        """What is valid but probably not meant in this config, as (location, message): ``edugate check`` prints
        each with its line, ``edugate run`` logs each. ``devices`` are all the config's devices, in order."""
        return []

    def wants(self, record: Record) -> bool:
        return any(select.matches(record) for select in self.observes)

    def stage(self, record: Record) -> Record | None:
        """Called for every record it ``observes`` before it is committed; return it (possibly annotated)."""
        return record

    async def run(self, emit: Emit) -> None:
        """Background work; the default has none."""
        await asyncio.Event().wait()

    def commands(self) -> dict[str, Command]:
        """Downlink commands this service handles."""
        return {}

    def status(self) -> Mapping[str, Any]:
        """The status document for the pages (each service declares its own ``TypedDict``)."""
        return {}

    def state_files(self) -> list[Path]:
        """Files this service keeps across restarts."""
        return []

    def use_devices(self, lookup: DeviceLookup) -> None:
        """The runtime hands every service the running devices, for a service that acts on them (the energy
        rule's switch-off); the default ignores them."""


def card_taps(record: Record, *roles: str) -> dict[str, Any] | None:
    """The data of a ``card_tap`` event from a reader with one of ``roles``, else None."""
    if record.get("type") != "card_tap":
        return None
    data = record.get("data") or {}
    return data if not roles or data.get("role") in roles else None
