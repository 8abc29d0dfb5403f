"""The model stage: turns devices' readings into ``anomaly`` and ``occupancy`` events with on-device ONNX models.

Config (top-level key ``models``)::

    models:
      anomaly:   [{device: lab1-fridge, kind: fridge}, {device: hood-2, kind: fume_hood,
                  channels: {face_velocity: v, fan_power: p}}]          # model channel -> reading value name
      occupancy: [{device: room-101-env}]                               # co2, temp, humidity, light readings

:meth:`ModelStage.stage` only appends a reading's values to the device's window (it never waits and never changes
the record); every ``stride`` readings a full window is queued. The background task (:meth:`ModelStage.run`)
computes the window's features and runs the model on its runner's worker thread
(:class:`~edugate.gateway.inference.ModelRunner`), so card taps and the outbox never wait for a model. It emits:

- ``anomaly`` (device = the equipment): ``{"state": "start"|"end", "model", "version", "score", "threshold"}``
  when a device's windows turn unusual, and when they are normal again for :data:`CLEAR_AFTER` windows;
- ``occupancy`` (device = the room sensor): ``{"occupied", "people", "model", "version"}`` when the room turns
  occupied or empty, and when the head count (median of the last :data:`COUNT_SMOOTHING` windows) moved by
  :data:`PEOPLE_STEP` or more, at most once per :data:`COUNT_UPDATE_MS`.

Models come from a manifest (``edugate.gateway.inference.manifest``): a model installed by the
``models.install`` command (kept under ``<data_dir>/models/<name>/``) wins over ``models.folder`` (a school's
retrained models), which wins over the ones shipped in ``edugate.ml_models``. A manifest or model file replaced
in place is noticed within ``watch_interval_s`` and swapped in once verified. A model whose evaluation did not
beat its baseline (``"ships": false``) is not loaded. A missing or bad model leaves its devices unscored (see
the status), and everything else runs on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import edugate.ml_models
from edugate.contract.records import Emit, Event
from edugate.gateway.inference import (
    InputSpec,
    ManifestError,
    ModelError,
    ModelRunner,
    ModelSpec,
    RunnerStatus,
    load_spec,
)
from edugate.gateway.inference.store import install
from edugate.gateway.inference.watch import FileWatch
from edugate.gateway.services.base import Command, Record, Section, Select, Service, ServiceSetup
from edugate.ml_models.anomaly import features as anomaly_features
from edugate.ml_models.occupancy import features as occupancy_features

log = logging.getLogger(__name__)

SHIPPED = Path(edugate.ml_models.__file__).resolve().parent
CLEAR_AFTER = 3  # normal windows in a row before an anomaly is declared over
PEOPLE_STEP = 3
COUNT_UPDATE_MS = 5 * 60_000  # a head-count-only change is reported at most this often
COUNT_SMOOTHING = 5  # the reported head count is the median of the last few windows
OCCUPANCY_CHANNELS = ("co2", "temp", "humidity", "light")
ANOMALY_CHANNELS = {"fridge": ("temp", "power"), "fume_hood": ("face_velocity", "fan_power"),
                    "projector": ("lamp_temp", "power", "fan_rpm")}
OCCUPIED, HEAD_COUNT = "occupancy-occupied", "occupancy-head-count"


def expected_input(model: str) -> InputSpec:
    """The input the stage feeds ``model``: the feature vector its ``features.py`` computes."""
    if model.startswith("anomaly-"):
        width = len(anomaly_features.feature_names(ANOMALY_CHANNELS[model.removeprefix("anomaly-")]))
    else:
        width = len(occupancy_features.FEATURES)
    return InputSpec("features", "float32", (None, width))


class AnomalyDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str = Field(description="The equipment's device id.")
    kind: Literal["fridge", "fume_hood", "projector"] = Field(description="Which model scores it.")
    channels: dict[str, str] = Field(default_factory=dict,
                                     description="Model channel -> the reading's value name, where they differ.")


class OccupancyRoom(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str = Field(description="The room's environment sensor (CO2, temperature, humidity, light).")
    channels: dict[str, str] = Field(default_factory=dict,
                                     description="co2/temp/humidity/light -> the reading's value name.")


class ModelsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    anomaly: list[AnomalyDevice] = Field(default_factory=list)
    occupancy: list[OccupancyRoom] = Field(default_factory=list)
    folder: Path | None = Field(None, description="A folder of model folders (anomaly/, occupancy/) with their "
                                                  "manifest.json; default: the models shipped with EduGate.")
    budget_ms: float = Field(5.0, gt=0, description="A call slower than this is counted as an overrun.")
    max_pending: int = Field(16, ge=1, description="Windows waiting for a model; more are dropped (counted).")
    watch_interval_s: float = Field(10.0, gt=0, description="How often a model replaced in place is looked for.")


class InstallArgs(BaseModel):
    """``models.install``: a new version of a model the stage runs, as base64 bytes with their SHA-256."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    version: str = Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    data_b64: str = Field(min_length=1)


@dataclass
class Track:
    """One device's recent readings and what its model last said."""

    task: str  # "anomaly" | "occupancy"
    model: str  # model name, e.g. "anomaly-fridge"
    values: tuple[str, ...]  # reading value names, in the model's channel order
    window: int
    stride: int
    rows: deque[tuple[float, ...]] = field(default_factory=deque)
    since: int = 0
    windows: int = 0
    incomplete: int = 0
    anomalous: bool = False
    normal_run: int = 0
    last_score: float | None = None
    occupied: bool | None = None
    people: int | None = None
    counts: deque[int] = field(default_factory=lambda: deque(maxlen=COUNT_SMOOTHING))
    reported_ts: int = 0


class ModelStageStatus(TypedDict):
    models: dict[str, RunnerStatus]
    devices: dict[str, dict[str, Any]]
    queued: int
    dropped: int  # windows dropped because max_pending were waiting
    unscored: int  # windows with no model to run them


class ModelStage(Service):
    name = "models"
    order = 5  # models before rules: their events reach alerts like any other
    section = Section("models", ModelsConfig, "On-device ONNX models: equipment anomalies, room occupancy.")

    @classmethod
    def from_config(cls, setup: ServiceSetup) -> ModelStage | None:
        cfg = setup.section
        if not isinstance(cfg, ModelsConfig) or not (cfg.anomaly or cfg.occupancy):
            return None
        return cls(cfg, setup.data_dir / "models")

    def __init__(self, cfg: ModelsConfig, installed: Path) -> None:
        self.cfg = cfg
        self.installed = installed
        self.tracks: dict[str, Track] = {}
        for dev in cfg.anomaly:
            channels = ANOMALY_CHANNELS[dev.kind]
            self.tracks[dev.device] = Track("anomaly", f"anomaly-{dev.kind}",
                                            tuple(dev.channels.get(c, c) for c in channels),
                                            anomaly_features.WINDOW, anomaly_features.STRIDE)
        for room in cfg.occupancy:
            self.tracks[room.device] = Track("occupancy", OCCUPIED,
                                             tuple(room.channels.get(c, c) for c in OCCUPANCY_CHANNELS),
                                             occupancy_features.WINDOW, 1)
        for track in self.tracks.values():
            track.rows = deque(maxlen=track.window)
        names = {t.model for t in self.tracks.values()} | ({HEAD_COUNT} if cfg.occupancy else set())
        self.runners = {n: ModelRunner(n, budget_ms=cfg.budget_ms, max_pending=cfg.max_pending,
                                       expected_inputs=[expected_input(n)])
                        for n in sorted(names)}
        self.specs: dict[str, ModelSpec] = {}
        self.watches: dict[str, tuple[Path, FileWatch]] = {}
        self.observes = (Select(kinds=frozenset({"telemetry"}), devices=frozenset(self.tracks)),)
        self.queue: asyncio.Queue[tuple[str, np.ndarray, int]] = asyncio.Queue(cfg.max_pending)
        self.dropped = self.unscored = 0

    # -- the pipeline side: never waits, never changes the record --------------------------------------------

    def stage(self, record: Record) -> Record | None:
        track = self.tracks.get(record.get("device", ""))
        values = record.get("values")
        if track is None or not isinstance(values, dict):
            return record
        try:
            row = tuple(float(values[name]) for name in track.values)
        except (KeyError, TypeError, ValueError):
            track.incomplete += 1  # a reading without every channel the model needs
            return record
        track.rows.append(row)
        track.since += 1
        if len(track.rows) == track.window and track.since >= track.stride:
            track.since = 0
            try:
                self.queue.put_nowait((record["device"], np.array(track.rows), int(record.get("ts", 0))))
            except asyncio.QueueFull:
                self.dropped += 1
        return record

    # -- the background side ---------------------------------------------------------------------------------

    def manifest_for(self, name: str) -> Path:
        """Where model ``name`` is read from: installed by command, then ``folder``, then shipped."""
        installed = self.installed / name / "manifest.json"
        if installed.exists():
            return installed
        task = name.split("-", 1)[0]
        if self.cfg.folder is not None and (self.cfg.folder / task / "manifest.json").exists():
            return self.cfg.folder / task / "manifest.json"
        return SHIPPED / task / "manifest.json"

    async def refresh(self) -> None:
        """Load every model whose manifest or file changed (the first call loads them all)."""
        for name, runner in self.runners.items():
            path = self.manifest_for(name)
            known = self.watches.get(name)
            if known is None or known[0] != path:  # first look, or a model was installed or removed
                spec_file = self._spec_file(path, name)
                known = (path, FileWatch(path, *([spec_file] if spec_file else [])))
                self.watches[name] = known
            if not known[1].changed():
                continue
            try:
                spec = load_spec(path, name)
            except ManifestError as exc:
                runner.record_error(str(exc))
                log.error("model stage: %s", exc)
                continue
            if spec.meta.get("ships") is False:
                runner.record_error(f"{name} {spec.version}: not loaded, its evaluation did not beat the baseline")
                continue
            if await runner.try_swap(spec):
                self.specs[name] = spec
            self.watches[name] = (path, FileWatch(path, spec.file))
            self.watches[name][1].changed()

    @staticmethod
    def _spec_file(path: Path, name: str) -> Path | None:
        try:
            return load_spec(path, name).file
        except ManifestError:
            return None

    async def run(self, emit: Emit) -> None:
        await self.refresh()
        watcher = asyncio.create_task(self._watch())
        try:
            while True:
                device, window, ts = await self.queue.get()
                try:
                    event = await self.score(device, window, ts)
                    if event is not None:
                        await emit(event)
                finally:
                    self.queue.task_done()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.watch_interval_s)
            await self.refresh()

    async def score(self, device: str, window: np.ndarray, ts: int) -> Event | None:
        """Run the device's model on one window; the event to emit, if its state changed."""
        track = self.tracks[device]
        if track.task == "anomaly":
            return await self._anomaly(device, track, window, ts)
        return await self._occupancy(device, track, window, ts)

    async def _run(self, name: str, x: np.ndarray) -> tuple[np.ndarray, ModelSpec] | None:
        spec, runner = self.specs.get(name), self.runners[name]
        current = runner.current
        if spec is None or current is None:
            self.unscored += 1
            return None
        spec = current.spec
        out = await runner.infer({spec.inputs[0].name: x}, [spec.meta["score_output"]])
        if out is None:
            self.unscored += 1
            return None
        return np.asarray(out[0]), spec

    async def _anomaly(self, device: str, track: Track, window: np.ndarray, ts: int) -> Event | None:
        result = await self._run(track.model, anomaly_features.window_features(window))
        if result is None:
            return None
        scores, spec = result
        score, threshold = float(scores.reshape(-1)[0]), float(spec.meta["threshold"])
        track.windows += 1
        track.last_score = round(score, 3)
        unusual = score < threshold if spec.meta.get("alarm_when", "below") == "below" else score > threshold
        data = {"model": spec.name, "version": spec.version, "score": round(score, 3), "threshold": threshold}
        if unusual:
            track.normal_run = 0
            if not track.anomalous:
                track.anomalous = True
                return Event(device, "anomaly", {"state": "start", **data}, ts / 1000 if ts else None)
        elif track.anomalous:
            track.normal_run += 1
            if track.normal_run >= CLEAR_AFTER:
                track.anomalous = False
                return Event(device, "anomaly", {"state": "end", **data}, ts / 1000 if ts else None)
        return None

    async def _occupancy(self, device: str, track: Track, window: np.ndarray, ts: int) -> Event | None:
        x = occupancy_features.window_features(window)
        occ = await self._run(OCCUPIED, x)
        if occ is None:
            return None
        proba, spec = occ
        occupied = bool(proba[0, int(spec.meta.get("positive_class", 1))] >= float(spec.meta.get("threshold", 0.5)))
        people = 0
        if occupied:
            count = await self._run(HEAD_COUNT, x)
            track.counts.append(max(0, round(float(count[0].reshape(-1)[0]))) if count is not None else 0)
            people = int(np.median(track.counts))
        else:
            track.counts.clear()
        track.windows += 1
        moved = abs(people - (track.people or 0)) >= PEOPLE_STEP and ts - track.reported_ts >= COUNT_UPDATE_MS
        if occupied == track.occupied and not moved:
            return None
        track.occupied, track.people, track.reported_ts = occupied, people, ts
        return Event(device, "occupancy", {"occupied": occupied, "people": people, "model": spec.name,
                                           "version": spec.version}, ts / 1000 if ts else None)

    # -- commands, status ------------------------------------------------------------------------------------

    def commands(self) -> dict[str, Command]:
        async def install_model(args: InstallArgs) -> dict[str, Any]:
            return await self.install(args.name, args.version, args.sha256, args.data_b64)

        return {"models.install": Command(InstallArgs, install_model)}

    async def install(self, name: str, version: str, sha256: str, data_b64: str) -> dict[str, Any]:
        """Verify, swap in and keep a new version of a running model; the old one runs on if it fails."""
        runner = self.runners.get(name)
        if runner is None:
            return {"ok": False, "error": f"no model {name!r} on this gateway (it runs {', '.join(self.runners)})"}
        current = runner.current
        if current is None:
            return {"ok": False, "error": f"{name}: no verified version is running to take the inputs from"}
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (binascii.Error, ValueError):
            return {"ok": False, "error": "data_b64 is not base64"}
        if hashlib.sha256(data).hexdigest() != sha256:
            return {"ok": False, "error": f"{name} {version}: the bytes' SHA-256 is not {sha256[:16]}…"}
        spec = current.spec.with_version(version, sha256, self.installed / name / f"{version}.onnx")
        try:
            await runner.swap(spec, data)
        except ModelError as exc:
            return {"ok": False, "error": str(exc), "running": current.spec.version}
        manifest = await asyncio.to_thread(install, self.installed, spec, data)
        self.specs[name] = spec
        self.watches[name] = (manifest, FileWatch(manifest, spec.file))
        self.watches[name][1].changed()
        return {"ok": True, "name": name, "version": version, "sha256": sha256}

    def status(self) -> ModelStageStatus:
        devices: dict[str, dict[str, Any]] = {}
        for device, t in self.tracks.items():
            info: dict[str, Any] = {"task": t.task, "model": t.model, "windows": t.windows,
                                    "incomplete_readings": t.incomplete}
            if t.task == "anomaly":
                info.update(anomalous=t.anomalous, last_score=t.last_score)
            else:
                info.update(occupied=t.occupied, people=t.people)
            devices[device] = info
        return {"models": {n: r.status() for n, r in self.runners.items()}, "devices": devices,
                "queued": self.queue.qsize(), "dropped": self.dropped, "unscored": self.unscored}

    def state_files(self) -> list[Path]:
        return sorted(p for p in self.installed.rglob("*") if p.is_file()) if self.installed.exists() else []

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()

