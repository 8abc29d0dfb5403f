"""Find services through the ``edugate.services`` entry points (one line per service), as drivers are found.

How to add a service (the alerts and model stages are the next):

1. write ``gateway/services/<name>.py`` with a :class:`~edugate.gateway.services.base.Service` subclass:
   ``name``, ``order``, its config ``section`` (a pydantic model under a top-level key, or None),
   ``observes``, ``from_config``, and what it needs of ``stage``/``run``/``commands``/``status``/``state_files``;
2. add one line to ``[project.entry-points."edugate.services"]`` in ``pyproject.toml``
   (``<name> = "edugate.gateway.services.<name>:<Class>"``) and reinstall (``pip install -e .``);
3. regenerate the config schema if it has a section (``edugate schema -o config/edugate.schema.json``);
4. test it in ``tests/gateway/services/test_<name>.py``.

A third-party package registers its service the same way, in its own metadata. A service that cannot be
imported (a missing library, a bug) is logged and reported (:func:`broken_services`, the config's errors)
and the others keep working.

A service registered with an extra (``models = "...:ModelStage [ml]"``) is *optional*: its libraries are
heavy (numpy and onnxruntime cost a gateway some 30 MB), so it is imported only for a config that has its
section, as drivers are imported only for the devices a config names. Its entry-point name must therefore be
its config key (:func:`config_sections` refuses one whose section key differs). Services without an extra are
imported always: they must stay cheap to import.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from edugate.gateway.services.base import Section, Service, ServiceSetup

if TYPE_CHECKING:
    from edugate.gateway.config import GatewayConfigBase

log = logging.getLogger(__name__)

GROUP = "edugate.services"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)}


@cache
def _load(name: str) -> type[Service] | str:
    """The service class, or why it cannot be used (a broken service must not take the others down)."""
    ep = _entry_points()[name]
    try:
        cls = ep.load()
    except ModuleNotFoundError as exc:
        if ep.extras:  # an optional service whose extra is not installed: expected on a small gateway, not a fault
            reason = f"needs the {','.join(ep.extras)} extra (pip install 'edugate[{','.join(ep.extras)}]'): {exc}"
            log.info("service %r is not available: %s", name, reason)
        else:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("service %r cannot be loaded: %s", name, reason)
        return reason
    except Exception as exc:  # an ImportError, or a bug at import time: either way only this one is lost
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("service %r cannot be loaded: %s", name, reason)
        return reason
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        reason = f"{_entry_points()[name].value} is not a Service subclass"
        log.warning("service %r cannot be loaded: %s", name, reason)
        return reason
    return cls


def clear_cache() -> None:
    """Forget what was found (tests that install a service at run time)."""
    _entry_points.cache_clear()
    _load.cache_clear()


def service_names() -> list[str]:
    """Every registered service name, sorted, without importing any."""
    return list(_entry_points())


def optional_service_names() -> frozenset[str]:
    """The services registered with an extra (each named as its config key), without importing any."""
    return frozenset(name for name, ep in _entry_points().items() if ep.extras)


def service_classes(keys: Collection[str] | None = None) -> dict[str, type[Service]]:
    """The importable services, in pipeline order (``order``, then name).

    ``keys``: the top-level keys of a config; an optional service is then imported only when its key is among
    them. None: every service (the JSON schema, the listings).
    """
    optional = optional_service_names()
    names = [name for name in service_names() if keys is None or name not in optional or name in keys]
    found = {name: _load(name) for name in names}
    classes = {name: cls for name, cls in found.items() if not isinstance(cls, str)}
    return dict(sorted(classes.items(), key=lambda item: (item[1].order, item[0])))


def broken_services() -> dict[str, str]:
    """Services that are registered but cannot be loaded, with the reason."""
    return {name: reason for name in service_names() if isinstance(reason := _load(name), str)}


def service_class(name: str) -> type[Service]:
    if name not in _entry_points():
        raise KeyError(f"unknown service {name!r} (known: {', '.join(service_classes()) or 'none'})")
    cls = _load(name)
    if isinstance(cls, str):
        raise KeyError(f"service {name!r} is installed but cannot be loaded: {cls}")
    return cls


def config_sections(reserved: Collection[str] = (), keys: Collection[str] | None = None) -> dict[str, Section]:
    """The config sections the importable services declare: key -> section (first service wins a key;
    ``reserved``: the gateway's own keys, which no service may take; ``keys``: see :func:`service_classes`)."""
    sections: dict[str, Section] = {}
    optional = optional_service_names()
    for name, cls in service_classes(keys).items():
        section = cls.section
        if section is None:
            continue
        if name in optional and section.key != name:
            log.error("service %r is registered with an extra, so its config key must be %r, not %r: ignored",
                      name, name, section.key)
            continue
        if section.key in sections or section.key in reserved:
            log.error("service %r declares the config key %r, already taken: ignored", name, section.key)
            continue
        sections[section.key] = section
    return sections


def build_services(cfg: GatewayConfigBase) -> list[Service]:
    """The services this gateway's config asks for, in pipeline order."""
    devices = [d for d in cfg.devices if d.enabled]
    data_dir = Path(cfg.storage.path).parent
    services: list[Service] = []
    for cls in service_classes(type(cfg).model_fields).values():
        value = getattr(cfg, cls.section.key, None) if cls.section is not None else None
        service = cls.from_config(ServiceSetup.of(value, devices, cfg.timezone, data_dir))
        if service is not None:
            services.append(service)
    return services
