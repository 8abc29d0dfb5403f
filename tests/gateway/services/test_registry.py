"""Services are found through the ``edugate.services`` entry points, like drivers.

The third-party tests install a real distribution: a ``.dist-info`` with an ``entry_points.txt`` and its
modules in a folder put on ``sys.path``, found by ``importlib.metadata`` as pip's would be.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.contract.records import Event, Reading
from edugate.gateway import config as gateway_config
from edugate.gateway.config import ConfigError, json_schema, parse_config
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.gateway import observing
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services import registry
from edugate.gateway.services.access import AccessConfig, AccessControl
from edugate.gateway.services.alerts import AlertsConfig, AlertsService
from edugate.gateway.services.assets import AssetsConfig, AssetsService
from edugate.gateway.services.attendance import Attendance
from edugate.gateway.services.base import Service, ServiceSetup
from edugate.gateway.services.bus import BusRoute
from edugate.gateway.services.library import LibraryService
from edugate.gateway.services.models import ModelsConfig, ModelStage
from edugate.gateway.services.sessions import SessionsConfig, SessionsService

BUILT_IN = {"access": AccessControl, "attendance": Attendance, "alerts": AlertsService, "bus": BusRoute,
            "library": LibraryService, "sessions": SessionsService, "assets": AssetsService, "models": ModelStage}

THIRD_PARTY = '''
    """A service from another package: counts the CO2 readings above its config's limit."""

    from __future__ import annotations

    from pydantic import BaseModel, ConfigDict, Field

    from edugate.gateway.services.base import Section, Select, Service, ServiceSetup


    class Co2Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        limit_ppm: int = Field(ge=400, le=5000)


    class Co2Alerts(Service):
        name = "co2"
        order = 50
        section = Section("co2_alerts", Co2Config, "CO2 alerts (a third-party service).")
        observes = (Select(kinds=frozenset({"telemetry"})),)

        @classmethod
        def from_config(cls, setup: ServiceSetup) -> Co2Alerts | None:
            return cls(setup.section) if isinstance(setup.section, Co2Config) else None

        def __init__(self, cfg: Co2Config) -> None:
            self.cfg = cfg
            self.seen = 0
            self.above = 0

        def stage(self, record):
            self.seen += 1
            if record["values"].get("co2", 0) > self.cfg.limit_ppm:
                self.above += 1
            return record

        def status(self):
            return {"above": self.above}
'''

CONFIG = """\
school: thpt-a
gateway: gw-1
storage:
  path: {data}/outbox.sqlite
devices:
  - id: door-1
    driver: em4100
    port: /dev/ttyUSB0
    role: door
"""


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution ``edugate-extras`` with a working service (co2) and one that cannot be imported."""
    site = tmp_path / "site"
    dist = site / "edugate_extras-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edugate-extras\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[edugate.services]\nco2 = edugate_extras_co2:Co2Alerts\nbroken = edugate_extras_broken:Broken\n"
        "notaservice = edugate_extras_co2:Co2Config\noptional = edugate_extras_broken:Broken [gpu]\n")
    (site / "edugate_extras_co2.py").write_text(textwrap.dedent(THIRD_PARTY))
    (site / "edugate_extras_broken.py").write_text("import edugate_no_such_library  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(site))
    _forget()
    yield tmp_path
    monkeypatch.undo()
    _forget()


def _forget() -> None:
    registry.clear_cache()
    gateway_config.gateway_config_model.cache_clear()


def test_the_school_services_are_registered_in_pipeline_order() -> None:
    assert registry.service_names() == ["access", "alerts", "assets", "attendance", "bus", "library", "models",
                                        "sessions"]
    assert registry.service_classes() == BUILT_IN
    assert list(registry.service_classes()) == ["models", "access", "attendance", "alerts", "bus", "library",
                                                "sessions", "assets"]
    assert registry.broken_services() == {}
    assert {key: s.model for key, s in registry.config_sections().items()} == {
        "access": AccessConfig, "timetable": Attendance.section.model, "alerts": AlertsConfig,
        "bus": BusRoute.section.model, "sessions": SessionsConfig, "assets": AssetsConfig,
        "models": ModelsConfig}


def test_an_unknown_service_is_named_with_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown service 'camera' \(known: models, access, attendance, alerts, bus, "
                                       r"library, sessions, assets\)"):
        registry.service_class("camera")


def test_the_config_builds_only_the_services_it_asks_for(tmp_path: Path) -> None:
    cfg = parse_config(CONFIG.format(data=tmp_path))
    services = registry.build_services(cfg)
    assert [type(s) for s in services] == [AccessControl]
    assert services[0].state_files() == [tmp_path / "allowlist.json"]
    with_bus = parse_config(CONFIG.format(data=tmp_path) + "bus:\n  route_end_times: ['17:30']\n")
    assert [s.name for s in registry.build_services(with_bus)] == ["access", "bus"]


async def test_a_service_sees_only_the_records_it_observes(tmp_path: Path) -> None:
    class Counting(Service):
        observes = AccessControl.observes

        def __init__(self) -> None:
            self.seen: list[str] = []

        def stage(self, record: dict) -> dict:
            self.seen.append(record.get("type") or "reading")
            return record

    service = Counting()
    outbox = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 26)
    try:
        pipe = Pipeline(outbox, Clock("always"), {"lab-1": None, "door-1": None}, rules=[observing(service)])
        await pipe.submit(Reading("lab-1", {"t": 21.5}))
        await pipe.submit(Event("door-1", "card_tap", {"card": "p1-" + "a" * 32, "role": "attendance"}))
        await pipe.submit(Event("door-1", "door_opened", {}))
        await pipe.submit(Event("door-1", "card_tap", {"card": "p1-" + "a" * 32, "role": "door"}))
    finally:
        await outbox.close()
    assert service.seen == ["card_tap"]


def test_a_third_party_service_is_picked_up_and_its_section_validated(installed: Path) -> None:
    classes = registry.service_classes()
    # by order (5, 10, 20, 30, 30, 40, 50, 50, 60), then name
    assert list(classes) == ["models", "access", "attendance", "alerts", "bus", "library", "co2", "sessions", "assets"]
    assert "co2_alerts" in json_schema()["properties"]
    text = CONFIG.format(data=installed) + "co2_alerts:\n  limit_ppm: 100\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "site.yaml")
    assert [str(p) for p in err.value.problems] == [
        "site.yaml:11: co2_alerts.limit_ppm: Input should be greater than or equal to 400"]
    cfg = parse_config(CONFIG.format(data=installed) + "co2_alerts:\n  limit_ppm: 1000\n")
    services = registry.build_services(cfg)
    assert [s.name for s in services] == ["access", "co2"]
    co2 = services[1]
    assert co2.wants({"kind": "telemetry", "values": {"co2": 1200}})
    assert not co2.wants({"kind": "event", "type": "card_tap", "data": {}})
    assert co2.stage({"kind": "telemetry", "values": {"co2": 1200}}) is not None and co2.status() == {"above": 1}


def test_a_service_that_cannot_be_imported_is_reported_and_the_others_work(installed: Path) -> None:
    broken = registry.broken_services()
    assert set(broken) == {"broken", "notaservice", "optional"}
    assert broken["broken"] == "ModuleNotFoundError: No module named 'edugate_no_such_library'"
    assert broken["notaservice"] == "edugate_extras_co2:Co2Config is not a Service subclass"
    with pytest.raises(KeyError, match="service 'broken' is installed but cannot be loaded: ModuleNotFoundError"):
        registry.service_class("broken")
    assert set(registry.service_classes()) == {*BUILT_IN, "co2"}
    cfg = parse_config(CONFIG.format(data=installed))  # the gateway still configures and builds
    assert [s.name for s in registry.build_services(cfg)] == ["access"]
    with pytest.raises(ConfigError) as err:  # a section nobody knows may be the broken service's: say so
        parse_config(CONFIG.format(data=installed) + "brokn: {}\n", "site.yaml")
    [problem] = err.value.problems
    assert str(problem).startswith("site.yaml:10: brokn: unknown key (a typo?, or the section of a service "
                                   "that cannot be loaded: broken: ModuleNotFoundError: No module named")


def test_service_setup_groups_readers_by_role(tmp_path: Path) -> None:
    cfg = parse_config(CONFIG.format(data=tmp_path))
    setup = ServiceSetup.of(None, cfg.devices, cfg.timezone, tmp_path)
    assert setup.readers("door") == {"door-1": None} and setup.readers("bus") == {}


def test_an_optional_service_without_its_extra_is_reported_quietly(installed: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A service registered with an extra (``models = ...:ModelStage [ml]``) whose library is not installed is
    expected on a small gateway: one INFO line naming the extra, not a warning; a plain import failure warns."""
    with caplog.at_level(logging.INFO, logger="edugate.gateway.services.registry"):
        broken = registry.broken_services()
    assert broken["optional"].startswith("needs the gpu extra (pip install 'edugate[gpu]'): No module named")
    levels = {r.getMessage().split("'")[1]: r.levelno for r in caplog.records if "service '" in r.getMessage()}
    assert levels["optional"] == logging.INFO
    assert levels["broken"] == logging.WARNING


def test_an_optional_service_is_imported_only_for_a_config_with_its_section(tmp_path: Path) -> None:
    """The ``models`` stage (registered with ``[ml]``) costs numpy and onnxruntime (~30 MB): a gateway whose config
    has no ``models:`` section must not import it, while building its services as usual."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import sys
        from edugate.gateway.config import parse_config
        from edugate.gateway.services.registry import build_services
        cfg = parse_config(sys.stdin.read())
        print([s.name for s in build_services(cfg)], 'onnxruntime' in sys.modules, 'numpy' in sys.modules)
    """)
    without = CONFIG.format(data=tmp_path)
    with_models = without + "models:\n  occupancy: [{device: door-1}]\n"
    outs = [subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True, check=True)
            .stdout.strip() for text in (without, with_models)]
    assert outs == ["['access'] False False", "['models', 'access'] True True"]


def test_a_section_of_an_optional_service_without_its_extra_says_which_extra(installed: Path) -> None:
    text = CONFIG.format(data=installed) + "optional: {}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "site.yaml")
    [problem] = err.value.problems
    assert str(problem).startswith("site.yaml:10: optional: the 'optional' section's service cannot be loaded: "
                                   "needs the gpu extra (pip install 'edugate[gpu]')")
