"""Find drivers by name through the ``edugate.drivers`` entry points (one line per driver)."""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points

from drivers.base import Driver

log = logging.getLogger(__name__)


@cache
def _scan() -> tuple[dict[str, type[Driver]], dict[str, str]]:
    found: dict[str, type[Driver]] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group="edugate.drivers"):
        try:
            found[ep.name] = ep.load()
        except ImportError as exc:  # a driver whose library is missing must not take the others down
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("driver %r cannot be loaded: %s", ep.name, exc)
    return dict(sorted(found.items())), broken


def driver_classes() -> dict[str, type[Driver]]:
    return _scan()[0]


def broken_drivers() -> dict[str, str]:
    """Drivers that are registered but failed to import, with the reason."""
    return _scan()[1]


def driver_class(name: str) -> type[Driver]:
    classes, broken = _scan()
    if name in broken:
        raise KeyError(f"driver {name!r} is installed but cannot be loaded: {broken[name]}")
    try:
        return classes[name]
    except KeyError:
        raise KeyError(f"unknown driver {name!r} (known: {', '.join(classes) or 'none'})") from None
