"""The operations centre in ``edugate demo``: central's open API beside the pages, a key for it, and the
supervision report of the demo schools.

:class:`DemoOperationsCentre` writes the demo's ``central.yaml`` (the demo's store and event store, its schools'
districts, the API on a free port), adds an API key (printed in the demo's banner), gives the ``edugate api``
command line for the demo to start, and writes the supervision report of the half year in progress.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from edugate.central.api import keys
from edugate.central.cli_common import central_config_or_exit
from edugate.central.config import CentralConfig
from edugate.central.indicators.compute import StoreUnavailable
from edugate.central.indicators.periods import PeriodError
from edugate.central.indicators.publish import figures_document
from edugate.central.reports.supervision import write_files
from edugate.simulators.servers import free_port

CONSUMER = "demo-ioc"


def current_half(tz: str, now: dt.datetime | None = None) -> str:
    """The half year in progress, e.g. ``2026-H2``."""
    today = (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(tz)).date()
    return f"{today.year}-H{1 if today.month <= 6 else 2}"


@dataclass
class DemoOperationsCentre:
    folder: Path
    store_url: str
    events_db: Path
    schools: Mapping[str, str]  # school -> its district
    health_interval_s: float
    timezone: str = "Asia/Ho_Chi_Minh"
    port: int = field(default_factory=free_port)
    key: str = ""

    @property
    def config_file(self) -> Path:
        return self.folder / "central.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self) -> Path:
        """Write central.yaml and a fresh API key for the consumer ``demo-ioc``; the config file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump({
            "store": {"url": self.store_url}, "events": {"db": str(self.events_db)},
            "pages": {"timezone": self.timezone, "data_dir": str(self.folder)},
            "api": {"host": "127.0.0.1", "port": self.port, "keys_file": "api-keys.json",
                    "districts": self.districts(),
                    "health_interval_s": self.health_interval_s, "cache_s": 5},
        }, sort_keys=False))
        self.key = keys.add(self.config().api.keys_file, CONSUMER)
        return self.config_file

    def districts(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for school, district in sorted(self.schools.items()):
            out.setdefault(district, []).append(school)
        return out

    def config(self) -> CentralConfig:
        return central_config_or_exit(self.config_file)

    def argv(self) -> list[str]:
        """``edugate api`` on this config."""
        return [sys.executable, "-m", "edugate.cli.main", "api", "--config", str(self.config_file)]

    def write_report(self, output_dir: Path, period: str | None = None) -> list[Path]:
        """The supervision report of ``period`` (default: the half year in progress) as HTML and XLSX; raises
        PeriodError, StoreUnavailable."""
        return write_files(figures_document(self.config(), period or current_half(self.timezone)), output_dir)

    def report_note(self, kept: bool) -> str:
        """Write the report (when the demo folder is ``kept``) and say where, or why not: never raises."""
        if not kept:
            return "supervision report: run the demo with --workdir DIR to keep it (DIR/central-ioc/reports)"
        try:
            written = self.write_report(self.folder / "reports")
        except (PeriodError, StoreUnavailable, OSError) as exc:
            return f"supervision report not written: {exc}"
        return "supervision report of the demo schools: " + ", ".join(str(p) for p in written)

    def banner(self) -> str:
        period = current_half(self.timezone)
        return (f"[bold]Operations centre[/] (open API, key of '{CONSUMER}': [bold]{self.key}[/])\n"
                f"  figures          curl -H 'X-API-Key: {self.key}' "
                f"'{self.url}/api/v1/figures?period={period}&level=district'\n"
                f"  report           edugate report supervision --period {period} -c {self.config_file} "
                f"-o {self.folder / 'reports'}   (written when the demo ends, with --workdir)")
