"""A card tap is beeped on time while the model stage runs a slow model: a real gateway in this process (EM4100
reader on a pty, fed from another thread; synthetic telemetry scored by a deliberately slow anomaly model)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edugate.drivers.card_reader import Outcome
from edugate.drivers.em4100.driver import EM4100Driver
from edugate.gateway import config as gateway_config
from edugate.gateway.config import parse_config
from edugate.gateway.inference.loader import LoadedModel
from edugate.gateway.runtime.gateway import Gateway
from edugate.gateway.services import registry
from edugate.gateway.services.models import SHIPPED, ModelStage
from edugate.simulators.em4100 import EM4100Simulator
from edugate.simulators.servers import Mosquitto
from tests.gateway.inference.onnx_builders import slow_scorer, steps_for
from tests.helpers import wait_for_async

TAPS = 10


@pytest.fixture
def models_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The ``models`` service registered as an installed distribution would register it (entry point)."""
    if "models" not in registry.service_names():
        site = tmp_path / "site"
        dist = site / "edugate_models_test-1.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edugate-models-test\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(
            "[edugate.services]\nmodels = edugate.gateway.services.models:ModelStage\n")
        monkeypatch.syspath_prepend(str(site))
    registry.clear_cache()
    gateway_config.gateway_config_model.cache_clear()
    yield
    monkeypatch.undo()
    registry.clear_cache()
    gateway_config.gateway_config_model.cache_clear()


def slow_fridge_model(folder: Path) -> None:
    """``folder/anomaly``: the shipped manifest, with the fridge model replaced by a slow one."""
    shutil.copytree(SHIPPED / "anomaly", folder / "anomaly")
    data = slow_scorer(18, steps=steps_for(0.5))
    (folder / "anomaly" / "slow.onnx").write_bytes(data)
    manifest = json.loads((folder / "anomaly" / "manifest.json").read_text())
    manifest["models"]["anomaly-fridge"].update(file="slow.onnx", sha256=hashlib.sha256(data).hexdigest(),
                                                version="slow-1")
    (folder / "anomaly" / "manifest.json").write_text(json.dumps(manifest))


class Reader(threading.Thread):
    """An EM4100 reader on its own thread and loop, so that a blocked gateway loop cannot delay the taps."""

    def __init__(self, link: Path) -> None:
        super().__init__(daemon=True)
        self.loop = asyncio.new_event_loop()
        self.sim = EM4100Simulator(link)
        self.written: list[float] = []

    def run(self) -> None:
        self.loop.run_forever()

    def open(self) -> None:
        self.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(10)

    def tap_series(self, taps: int, interval_s: float) -> None:
        """Tap ``taps`` cards ``interval_s`` apart, timed by this thread alone (returns when done)."""
        async def series() -> None:
            for n in range(taps):
                self.written.append(time.perf_counter())
                self.sim.tap((0x4200000000 + n).to_bytes(5, "big"))
                await asyncio.sleep(interval_s)
        asyncio.run_coroutine_threadsafe(series(), self.loop).result(taps * interval_s + 10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


async def test_taps_are_beeped_on_time_while_a_slow_model_runs(
        models_service: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_fridge_model(tmp_path / "school-models")
    feedback: list[float] = []
    original = EM4100Driver.signal

    async def timed_signal(self: EM4100Driver, outcome: Outcome) -> None:
        feedback.append(time.perf_counter())
        await original(self, outcome)

    monkeypatch.setattr(EM4100Driver, "signal", timed_signal)
    busy: list[tuple[float, float]] = []  # when the model was computing (on its worker thread)
    run = LoadedModel.run

    def timed_run(self: LoadedModel, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return run(self, *args, **kwargs)
        finally:
            busy.append((start, time.perf_counter()))

    monkeypatch.setattr(LoadedModel, "run", timed_run)
    broker = Mosquitto(tmp_path / "mqtt", persistence=False)
    broker.start()
    reader = Reader(tmp_path / "ttyDOOR")
    reader.open()
    cfg = parse_config(yaml.safe_dump({
        "school": "s", "gateway": "gw-models", "uplink": {"port": broker.port},
        "storage": {"path": str(tmp_path / "outbox.sqlite")}, "privacy": {"secret_file": str(tmp_path / "k")},
        "models": {"anomaly": [{"device": "fridge", "kind": "fridge", "channels": {"temp": "v0", "power": "v1"}}],
                   "folder": str(tmp_path / "school-models"), "budget_ms": 50, "max_pending": 2},
        "devices": [{"id": "fridge", "driver": "synthetic", "values": 2, "interval_s": 0.02},
                    {"id": "door", "driver": "em4100", "role": "attendance", "port": str(reader.sim.link),
                     "debounce_s": 0}]}))
    gw = Gateway(cfg)
    task = asyncio.create_task(gw.run())
    stage: ModelStage | None = None
    try:
        stage = next(s for s in gw.services if isinstance(s, ModelStage))
        runner = stage.runners["anomaly-fridge"]
        await wait_for_async(lambda: runner.calls >= 1, 30, "the slow model to finish a first call")
        assert runner.status()["version"] == "slow-1"
        slowest = runner.status()["p50_ms"]
        assert slowest is not None and slowest > 200, f"the model takes only {slowest} ms: proves nothing"
        await asyncio.to_thread(reader.tap_series, TAPS, 0.15)  # the gateway's loop is free to run meanwhile
        await wait_for_async(lambda: len(feedback) >= TAPS, 10, "every tap's feedback")
        during = [w for w in reader.written if any(a <= w <= b for a, b in busy)]
        assert len(during) >= TAPS // 2, f"only {len(during)} of {TAPS} taps came while the model was computing"
        latencies = [1000 * (f - w) for w, f in zip(reader.written, feedback, strict=True)]
        assert max(latencies) < min(150.0, slowest / 2), f"tap feedback took {max(latencies):.0f} ms"
        assert runner.status()["overruns"] >= 2 and stage.status()["dropped"] > 0
    finally:
        gw.stop()
        await task
        if stage is not None:
            stage.close()
        reader.close()
        broker.stop()
