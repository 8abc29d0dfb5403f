"""``edugate model train-anomaly``: a school's own anomaly model, learned from its readings in the central store
(a real VictoriaMetrics, written through its line-protocol API as the ingest workers write) or a CSV, installed
on the model stage by drop-in and by the ``models.install`` command."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edugate.gateway.inference import load_spec
from edugate.gateway.services.models import InstallArgs, ModelsConfig, ModelStage
from edugate.ml_models.anomaly.data import episode
from edugate.ml_models.anomaly.features import sliding_windows, window_features
from edugate.simulators.servers import VictoriaMetrics
from tests.helpers import REPO

SHIPPED = json.loads((REPO / "ml_models" / "anomaly" / "manifest.json").read_text())["models"]
WARMER = np.array([1.5, 10.0])  # this school's fridges run 1.5 °C warmer and draw 10 W more than the simulator's


def _fridges(days: float, seed: int = 42) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {dev: episode(rng, "fridge", None, days=days).values + WARMER for dev in ("bio-fridge", "chem-fridge")}


STORED_MINUTES = 2 * 1440  # the store holds the first two days; the third is what the fridges do next
FRIDGES = _fridges(3.0)


def _edugate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edugate.cli.main", *args], capture_output=True, text=True,
                          timeout=180, cwd=REPO)


def _scores(path: Path, windows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(["score_samples"], {"features": window_features(windows)})[0]
    return np.asarray(out).reshape(-1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> VictoriaMetrics:
    """A store holding two days of two fridges of school ``s-train`` (and a fridge of another school)."""
    vm = VictoriaMetrics(tmp_path_factory.mktemp("vm"))
    vm.start()
    start_ms = (int(time.time()) - 3 * 86400) // 60 * 60_000
    lines = []
    stored = {dev: v[:STORED_MINUTES] for dev, v in FRIDGES.items()}
    for dev, values in {**stored, "other": _fridges(0.5, seed=5)["bio-fridge"] + 50}.items():
        school = "s-other" if dev == "other" else "s-train"
        for i, (temp, power) in enumerate(values):
            lines.append(f"edugate,school={school},gateway=gw-1,device={dev},room=lab temp={temp:.4f},"
                         f"power={power:.1f} {(start_ms + 60_000 * i) * 1_000_000}")
    for i in range(0, len(lines), 5000):
        body = ("\n".join(lines[i:i + 5000]) + "\n").encode()
        urllib.request.urlopen(urllib.request.Request(f"{vm.url}/write", data=body, method="POST"), timeout=30).read()
    vm.flush()
    yield vm
    vm.stop()


def test_train_from_the_store_and_install_by_drop_in_and_by_command(store: VictoriaMetrics, tmp_path: Path) -> None:
    out = tmp_path / "school-models"
    result = _edugate("model", "train-anomaly", "--store-url", store.url, "--school", "s-train",
                      "--device", "bio-fridge=fridge", "--device", "chem-fridge=fridge", "--version", "school-1",
                      "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fridge-school-1.onnx: anomaly-fridge from bio-fridge, chem-fridge" in result.stdout
    assert "models.install" in result.stdout and "models.folder" in result.stdout

    folder = out / "anomaly"
    manifest = json.loads((folder / "manifest.json").read_text())["models"]
    fridge = manifest["anomaly-fridge"]
    assert fridge["version"] == "school-1" and fridge["file"] == "fridge-school-1.onnx" and fridge["ships"]
    assert fridge["sha256"] == hashlib.sha256((folder / fridge["file"]).read_bytes()).hexdigest()
    assert fridge["threshold"] == SHIPPED["anomaly-fridge"]["threshold"]  # the shift is inside the model
    assert fridge["trained_on"]["rows"] == {"bio-fridge": 2880, "chem-fridge": 2880}  # not the other school's
    assert manifest["anomaly-projector"] == SHIPPED["anomaly-projector"]  # kinds not retrained: the shipped ones
    assert (folder / "projector.onnx").read_bytes() == (REPO / "ml_models/anomaly/projector.onnx").read_bytes()
    report = json.loads((folder / "training.json").read_text())["models"]["anomaly-fridge"]
    assert report["held_out_false_alarm_share"] <= 0.02
    assert report["flagged_share_of_injected_fault_windows"]["spikes"] >= 0.5
    # the gateway's own loader verifies it
    spec = load_spec(folder / "manifest.json", "anomaly-fridge")
    assert spec.version == "school-1"

    # it knows this school: its fridges' next day passes, where the shipped model (trained on colder fridges) alarms
    threshold = fridge["threshold"]
    windows, _ = sliding_windows(FRIDGES["bio-fridge"][STORED_MINUTES:])
    assert (_scores(folder / fridge["file"], windows) < threshold).mean() <= 0.05  # measured: 2.5 %
    assert (_scores(REPO / "ml_models/anomaly/fridge.onnx", windows) < threshold).mean() >= 0.5  # measured: 99.6 %
    # and still sees a door left open
    door = episode(np.random.default_rng(3), "fridge", "door_open", days=1, start=600).values + WARMER
    door_windows, ends = sliding_windows(door)
    assert (_scores(folder / fridge["file"], door_windows)[ends >= 640] < threshold).mean() >= 0.8

    async def drop_in_and_command() -> None:
        devices = [{"device": "bio-fridge", "kind": "fridge"}]
        dropped = ModelStage(ModelsConfig.model_validate({"anomaly": devices, "folder": out}), tmp_path / "a")
        await dropped.refresh()
        status = dropped.status()["models"]["anomaly-fridge"]
        assert (status["loaded"], status["version"], status["sha256"]) == (True, "school-1", fridge["sha256"])
        dropped.close()

        shipped = ModelStage(ModelsConfig.model_validate({"anomaly": devices}), tmp_path / "installed")
        await shipped.refresh()
        assert shipped.status()["models"]["anomaly-fridge"]["version"] == SHIPPED["anomaly-fridge"]["version"]
        args = InstallArgs.model_validate_json((folder / "install-anomaly-fridge.json").read_text())
        answer = await shipped.install(args.name, args.version, args.sha256, args.data_b64)
        assert answer == {"ok": True, "name": "anomaly-fridge", "version": "school-1", "sha256": fridge["sha256"]}
        assert shipped.status()["models"]["anomaly-fridge"]["version"] == "school-1"
        # scored through the stage's runner, with the running spec's threshold: this school's normal is normal
        flagged = 0
        for w in windows[::12]:
            event = await shipped._anomaly("bio-fridge", shipped.tracks["bio-fridge"], w, 0)
            flagged += event is not None
        assert flagged <= 1
        shipped.close()

    asyncio.run(drop_in_and_command())


def test_train_from_a_csv_and_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "readings.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "device", "temperature", "power"])
        for dev, values in _fridges(1.5).items():
            for i, (temp, power) in enumerate(values):
                w.writerow([1_790_000_000 + 60 * i, dev, f"{temp:.4f}", f"{power:.1f}"])
    ok = _edugate("model", "train-anomaly", "--csv", str(path), "--device", "bio-fridge=fridge",
                  "--device", "chem-fridge=fridge", "--channel", "temp=temperature", "--out", str(tmp_path / "o"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    version = json.loads((tmp_path / "o/anomaly/manifest.json").read_text())["models"]["anomaly-fridge"]["version"]
    assert version.startswith("school-20")

    no_map = _edugate("model", "train-anomaly", "--csv", str(path), "--device", "bio-fridge=fridge",
                      "--out", str(tmp_path / "o2"))
    assert no_map.returncode == 1
    assert "device bio-fridge: no temp readings (it has: power, temperature); map names with --channel" in no_map.stderr

    short = tmp_path / "short.csv"
    short.write_text("time,device,temp,power\n" + "".join(f"{1_790_000_000 + 60 * i},f,4.0,{80 + i % 3}\n"
                                                          for i in range(300)))
    few = _edugate("model", "train-anomaly", "--csv", str(short), "--device", "f=fridge", "--out", str(tmp_path / "o3"))
    assert few.returncode == 1 and "fridge: 40 training and 10 calibration windows from f; at least 200" in few.stderr
    assert not (tmp_path / "o3/anomaly/manifest.json").exists()

    bad = tmp_path / "bad.csv"
    bad.write_text("time,device,temp,power\n1790000000,f,4.0,80\nyesterday,f,4.1,81\n")
    garbled = _edugate("model", "train-anomaly", "--csv", str(bad), "--device", "f=fridge", "--out", str(tmp_path))
    assert garbled.returncode == 1
    assert f"{bad}:3: time 'yesterday' is neither ISO 8601 nor a Unix time" in garbled.stderr

    unknown = _edugate("model", "train-anomaly", "--csv", str(path), "--device", "hood=fume_hood", "--out",
                       str(tmp_path))
    assert unknown.returncode == 1 and "device hood: no readings in" in unknown.stderr
    both = _edugate("model", "train-anomaly", "--csv", str(path), "--vm-export", str(path), "--device", "x=fridge")
    assert both.returncode == 2 and "give one source of readings" in both.stderr
