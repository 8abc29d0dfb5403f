"""The model stage as a service: readings in, ``anomaly``/``occupancy`` events out, bad models fail safe, a new
version installed by command. Real shipped models, real onnxruntime; the pipeline is played by the test."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edugate.contract.records import Event, Item
from edugate.gateway.services.models import SHIPPED, ModelsConfig, ModelStage
from edugate.ml_models.anomaly.data import episode
from edugate.ml_models.occupancy.data import rooms

T0_MS = 1_780_000_000_000


class Stage:
    """A running ModelStage and the events it emitted."""

    def __init__(self, stage: ModelStage) -> None:
        self.stage = stage
        self.events: list[Event] = []
        self.task: asyncio.Task[None] | None = None

    async def emit(self, item: Item) -> dict[str, Any] | None:
        assert isinstance(item, Event)
        self.events.append(item)
        return {"seq": len(self.events)}

    async def feed(self, device: str, names: tuple[str, ...], values: np.ndarray) -> None:
        """Each row as a telemetry record through ``stage``, letting the model keep up (as real time would)."""
        for minute, row in enumerate(values):
            record = {"kind": "telemetry", "device": device, "ts": T0_MS + minute * 60_000,
                      "values": dict(zip(names, map(float, row), strict=True))}
            assert self.stage.stage(record) is record
            await self.stage.queue.join()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[[ModelsConfig], Any]]:
    started: list[Stage] = []

    async def start(cfg: ModelsConfig) -> Stage:
        s = Stage(ModelStage(cfg, tmp_path / "data" / "models"))
        await s.stage.refresh()  # what run() does first; done here so the test knows the models are loaded
        s.task = asyncio.create_task(s.stage.run(s.emit))
        started.append(s)
        return s

    yield start
    for s in started:
        assert s.task is not None
        s.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await s.task
        s.stage.close()


async def test_a_fridge_left_open_raises_an_anomaly_after_it_opens(running: Any) -> None:
    s = await running(ModelsConfig(anomaly=[{"device": "fridge1", "kind": "fridge",
                                             "channels": {"temp": "t", "power": "p"}}]))
    e = episode(np.random.default_rng(21), "fridge", "door_open", days=0.5, start=480)
    await s.feed("fridge1", ("t", "p"), e.values)
    starts = [ev for ev in s.events if ev.data["state"] == "start"]
    assert starts, f"no anomaly in {s.stage.status()}"
    assert starts[0].device == "fridge1" and starts[0].type == "anomaly"
    assert starts[0].ts is not None and starts[0].ts * 1000 >= T0_MS + 480 * 60_000
    assert starts[0].ts * 1000 <= T0_MS + (480 + 30) * 60_000, "detected more than 30 minutes late"
    assert starts[0].data["model"] == "anomaly-fridge" and starts[0].data["score"] < starts[0].data["threshold"]
    status = s.stage.status()
    model = status["models"]["anomaly-fridge"]
    manifest = json.loads((SHIPPED / "anomaly" / "manifest.json").read_text())["models"]["anomaly-fridge"]
    assert (model["version"], model["sha256"]) == (manifest["version"], manifest["sha256"])
    assert status["devices"]["fridge1"]["anomalous"] is True and status["dropped"] == 0


async def test_a_normal_fridge_stays_quiet(running: Any) -> None:
    s = await running(ModelsConfig(anomaly=[{"device": "fridge1", "kind": "fridge"}]))
    e = episode(np.random.default_rng(22), "fridge", None, days=0.5)
    await s.feed("fridge1", ("temp", "power"), e.values)
    assert s.stage.status()["devices"]["fridge1"]["windows"] == (720 - 30) // 5 + 1
    assert len([ev for ev in s.events if ev.data["state"] == "start"]) <= 1


async def test_a_class_arriving_and_leaving_gives_occupancy_events(running: Any) -> None:
    s = await running(ModelsConfig(occupancy=[{"device": "r101"}]))
    (room,) = rooms(23, 1, 1)
    first = int(np.flatnonzero(room.people > 0)[0])
    await s.feed("r101", ("co2", "temp", "humidity", "light"), room.values[first - 60:first + 120])
    occupied = [ev for ev in s.events if ev.data["occupied"]]
    assert occupied, s.events
    assert occupied[0].ts is not None and (occupied[0].ts * 1000 - T0_MS) / 60_000 >= 60 - 5
    assert max(ev.data["people"] for ev in occupied) >= 0.5 * room.people[first + 30]
    assert {ev.data["model"] for ev in s.events} == {"occupancy-occupied"}
    left = first + int(np.flatnonzero(room.people[first:] == 0)[0])  # the class leaves for the break
    minutes = [(ev.ts or 0) * 1000 for ev in s.events if not ev.data["occupied"]]
    fed_minute = [(ms - T0_MS) / 60_000 + first - 60 for ms in minutes]
    assert any(left <= m <= left + 10 for m in fed_minute), (left, fed_minute)
    assert len(s.events) <= 3 + 180 // 5, "the head count is reported too often"


async def test_a_missing_model_leaves_the_readings_alone_and_says_why(running: Any, tmp_path: Path) -> None:
    folder = tmp_path / "school-models"
    shutil.copytree(SHIPPED / "anomaly", folder / "anomaly")
    (folder / "anomaly" / "fridge.onnx").unlink()
    s = await running(ModelsConfig(anomaly=[{"device": "f", "kind": "fridge"}], folder=folder))
    e = episode(np.random.default_rng(24), "fridge", "stuck", days=0.2, start=60)
    await s.feed("f", ("temp", "power"), e.values)
    status = s.stage.status()
    assert status["models"]["anomaly-fridge"]["loaded"] is False
    assert "fridge.onnx is missing" in str(status["models"]["anomaly-fridge"]["error"])
    assert s.events == [] and status["unscored"] > 0
    shutil.copy(SHIPPED / "anomaly" / "fridge.onnx", folder / "anomaly" / "fridge.onnx")  # dropped in place
    await s.stage.refresh()
    assert s.stage.status()["models"]["anomaly-fridge"]["loaded"] is True


async def test_a_model_that_did_not_beat_its_baseline_is_not_loaded(running: Any, tmp_path: Path) -> None:
    folder = tmp_path / "school-models"
    shutil.copytree(SHIPPED / "anomaly", folder / "anomaly")
    manifest = json.loads((folder / "anomaly" / "manifest.json").read_text())
    manifest["models"]["anomaly-projector"]["ships"] = False
    (folder / "anomaly" / "manifest.json").write_text(json.dumps(manifest))
    s = await running(ModelsConfig(anomaly=[{"device": "p", "kind": "projector"}], folder=folder))
    status = s.stage.status()["models"]["anomaly-projector"]
    assert status["loaded"] is False and "did not beat the baseline" in str(status["error"])


async def test_install_by_command_swaps_keeps_and_refuses_bad_bytes(running: Any, tmp_path: Path) -> None:
    s = await running(ModelsConfig(anomaly=[{"device": "f", "kind": "fridge"}]))
    install = s.stage.commands()["models.install"]
    data = (SHIPPED / "anomaly" / "fridge.onnx").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    bad = await install.handler(install.args(name="anomaly-fridge", version="9", sha256=digest,
                                             data_b64=base64.b64encode(data[:-100]).decode()))
    assert bad["ok"] is False and "SHA-256" in bad["error"]
    garbage = b"not a model"
    corrupt = await install.handler(install.args(
        name="anomaly-fridge", version="9", sha256=hashlib.sha256(garbage).hexdigest(),
        data_b64=base64.b64encode(garbage).decode()))
    assert corrupt["ok"] is False and "onnxruntime cannot load" in corrupt["error"]
    assert s.stage.status()["models"]["anomaly-fridge"]["version"] == "2026.12.0"
    good = await install.handler(install.args(name="anomaly-fridge", version="2026.12.1", sha256=digest,
                                              data_b64=base64.b64encode(data).decode()))
    assert good["ok"] is True
    assert s.stage.status()["models"]["anomaly-fridge"]["version"] == "2026.12.1"
    kept = tmp_path / "data" / "models" / "anomaly-fridge"
    assert (kept / "2026.12.1.onnx").read_bytes() == data
    assert s.stage.manifest_for("anomaly-fridge") == kept / "manifest.json"
    assert kept / "manifest.json" in s.stage.state_files()
    e = episode(np.random.default_rng(25), "fridge", "door_open", days=0.3, start=200)
    await s.feed("f", ("temp", "power"), e.values)
    assert any(ev.data["version"] == "2026.12.1" for ev in s.events)


async def test_a_model_with_other_inputs_than_the_stage_feeds_is_refused(running: Any, tmp_path: Path) -> None:
    """A school's model trained on other features (here: the projector's 27 inputs for a fridge) is not loaded."""
    folder = tmp_path / "school-models"
    shutil.copytree(SHIPPED / "anomaly", folder / "anomaly")
    manifest = json.loads((folder / "anomaly" / "manifest.json").read_text())
    projector = manifest["models"]["anomaly-projector"]
    manifest["models"]["anomaly-fridge"].update(file=projector["file"], sha256=projector["sha256"],
                                                inputs=projector["inputs"])
    (folder / "anomaly" / "manifest.json").write_text(json.dumps(manifest))
    s = await running(ModelsConfig(anomaly=[{"device": "f", "kind": "fridge"}], folder=folder))
    status = s.stage.status()["models"]["anomaly-fridge"]
    assert status["loaded"] is False
    assert "input features has shape [?, 27], the stage feeds features: float32[?, 18]" in str(status["error"])
