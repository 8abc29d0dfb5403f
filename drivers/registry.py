"""Find drivers by name through the ``edugate.drivers`` entry points (one line per driver).

A driver module is imported only when it is needed: a gateway loads the drivers
its config names (``load_drivers``), not every installed one, so that an unused
driver's libraries (pymodbus, pyserial, ...) cost no memory. The JSON schema and
error messages about unknown drivers load them all (``driver_classes``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from edugate.drivers.base import Driver

log = logging.getLogger(__name__)


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in sorted(entry_points(group="edugate.drivers"), key=lambda ep: ep.name)}


@cache
def _load(name: str) -> type[Driver[Any]] | str:
    """The driver class, or why it cannot be imported (a missing library must not take the others down)."""
    try:
        cls: type[Driver[Any]] = _entry_points()[name].load()
    except ImportError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("driver %r cannot be loaded: %s", name, reason)
        return reason
    return cls


def driver_names() -> list[str]:
    """Every registered driver name, sorted, without importing any driver."""
    return list(_entry_points())


def load_drivers(names: Iterable[str]) -> dict[str, type[Driver[Any]]]:
    """The classes of the registered, importable drivers among ``names`` (unknown names are skipped)."""
    found = {name: _load(name) for name in sorted(set(names)) if name in _entry_points()}
    return {name: cls for name, cls in found.items() if not isinstance(cls, str)}


def driver_classes() -> dict[str, type[Driver[Any]]]:
    """Every importable driver (imports them all)."""
    return load_drivers(driver_names())


def broken_drivers() -> dict[str, str]:
    """Drivers that are registered but failed to import, with the reason (imports them all)."""
    return {name: reason for name in driver_names() if isinstance(reason := _load(name), str)}


def driver_class(name: str) -> type[Driver[Any]]:
    if name not in _entry_points():
        raise KeyError(f"unknown driver {name!r} (known: {', '.join(driver_classes()) or 'none'})")
    cls = _load(name)
    if isinstance(cls, str):
        raise KeyError(f"driver {name!r} is installed but cannot be loaded: {cls}")
    return cls
