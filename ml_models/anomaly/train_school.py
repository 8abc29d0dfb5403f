"""``edugate model train-anomaly``: learn one school's normal equipment behaviour and write versioned models.

The shipped anomaly models (``train.py``) learned simulated fridges, fume hoods and projectors. A school's own
devices differ (another fridge, another setpoint, a sensor in another place): this retrains the same method
(window features -> StandardScaler -> Gaussian mixture, ``train.fit``'s pipeline) on the school's readings,
taken from

- the central store: VictoriaMetrics' export API (``/api/v1/export``), series ``edugate_<value>`` with the
  ``school`` and ``device`` labels the ingest workers write; or a file saved from that API (JSON lines); or
- a CSV file: a ``time`` column (ISO 8601, or Unix seconds or milliseconds), a ``device`` column, and one
  column per value (e.g. ``time,device,temp,power``).

The readings are taken as normal behaviour: train on a period without known faults. They are resampled to one
row a minute (what the models expect; ``--resample 0`` keeps them as they come), gaps of up to
:data:`MAX_FILL` minutes are interpolated and longer ones split the series. Per device kind, the first
:data:`TRAIN_SHARE` of each series trains the model and the rest calibrates its alarm threshold at the same
false-alarm rate as the shipped models (``train.FALSE_ALARM_RATE``).

Output: ``OUT/anomaly/`` with ``<kind>-<version>.onnx`` per trained kind, ``manifest.json`` (what the gateway
verifies and loads: the shipped models for the kinds not retrained are copied in, so the folder is complete),
``MODEL.sha256``, ``training.json`` (data, held-out false alarms, simulated sensor faults injected into held-out data)
and ``install-anomaly-<kind>.json`` (the arguments of the ``models.install`` command). The model's score is
shifted in the ONNX graph so that its alarm threshold equals the shipped model's: a version installed by
command keeps the running version's threshold, and stays right.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from edugate.ml_models.anomaly import baseline
from edugate.ml_models.anomaly.data import KINDS, _sensor_fault
from edugate.ml_models.anomaly.features import WINDOW, feature_names, sliding_windows, window_features
from edugate.ml_models.anomaly.train import COMPONENTS, FALSE_ALARM_RATE, HERE, SCORE_OUTPUT, export, manifest_entry
from edugate.ml_models.metrics import threshold_for
from edugate.ml_models.packaging import stable_bytes, trained_with

TRAIN_SHARE: Final = 0.75
MAX_FILL: Final = 3  # rows (minutes) a gap may span and still be interpolated
MIN_TRAIN_WINDOWS: Final = 200  # per kind: about 17 hours of one device at one reading a minute
MIN_CALIBRATION_WINDOWS: Final = 50
CHECK_SEED: Final = 11  # the faults injected into the held-out readings to check the new model


class TrainingDataError(ValueError):
    """The readings cannot train a model (too few, a device without a channel, an unreadable file)."""


@dataclass
class DeviceSeries:
    """One device's readings: channel -> {time (ms) -> value}."""

    device: str
    channels: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))


# ------------------------------------------------------------------------------------------------ reading data


def _time_ms(text: str, where: str) -> int:
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise TrainingDataError(f"{where}: time {text!r} is neither ISO 8601 nor a Unix time") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return int(stamp.timestamp() * 1000)
    return int(number if number > 1e11 else number * 1000)  # milliseconds, or seconds


def read_csv(path: Path) -> dict[str, DeviceSeries]:
    """``time,device,<value>...`` rows (empty cells are missing values)."""
    out: dict[str, DeviceSeries] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        time_col = next((c for c in ("time", "timestamp", "ts") if c in columns), None)
        if time_col is None or "device" not in columns:
            raise TrainingDataError(f"{path}:1: the header needs a 'time' and a 'device' column (has: "
                                    f"{', '.join(columns) or 'nothing'})")
        values = [c for c in columns if c not in (time_col, "device")]
        for line, row in enumerate(reader, start=2):
            ts = _time_ms(row[time_col] or "", f"{path}:{line}")
            series = out.setdefault(row["device"], DeviceSeries(row["device"]))
            for name in values:
                cell = (row.get(name) or "").strip()
                if not cell:
                    continue
                try:
                    series.channels[name][ts] = float(cell)
                except ValueError:
                    raise TrainingDataError(f"{path}:{line}: {name} {cell!r} is not a number") from None
    return out


def read_vm_export(lines: Iterable[bytes | str], where: str) -> dict[str, DeviceSeries]:
    """VictoriaMetrics' ``/api/v1/export`` JSON lines: ``{"metric": {...}, "values": [...], "timestamps": [...]}``."""
    out: dict[str, DeviceSeries] = {}
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            metric, values, stamps = item["metric"], item["values"], item["timestamps"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TrainingDataError(f"{where}: line {n} is not a VictoriaMetrics export line ({exc})") from None
        device = metric.get("device")
        name = str(metric.get("__name__", ""))
        if not device or not name.startswith("edugate_"):
            continue
        series = out.setdefault(device, DeviceSeries(device))
        channel = series.channels[name.removeprefix("edugate_")]
        for ts, value in zip(stamps, values, strict=False):
            if value is not None:
                channel[int(ts)] = float(value)
    return out


def vm_export(url: str, school: str, devices: list[str], values: list[str], start: str | None = None,
              end: str | None = None, timeout: float = 60) -> dict[str, DeviceSeries]:
    """The readings of ``devices`` (value names ``values``) of ``school`` from the store's export API."""
    match = (f'{{__name__=~"edugate_({"|".join(values)})",school="{school}",'
             f'device=~"{"|".join(devices)}"}}')
    query = {"match[]": match, **({"start": start} if start else {}), **({"end": end} if end else {})}
    full = f"{url.rstrip('/')}/api/v1/export?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:
            return read_vm_export(resp.read().splitlines(), full)
    except OSError as exc:
        raise TrainingDataError(f"{full}: the store did not answer: {exc}") from None


# ------------------------------------------------------------------------------------------------ shaping it


def to_rows(series: DeviceSeries, channels: tuple[str, ...], resample_s: float) -> list[np.ndarray]:
    """The device's readings as rows [T, C] in ``channels`` order: one a ``resample_s`` (mean within each
    step; short gaps interpolated), or as they come when ``resample_s`` is 0. Split at long gaps."""
    missing = [c for c in channels if not series.channels.get(c)]
    if missing:
        raise TrainingDataError(f"device {series.device}: no {', '.join(missing)} readings (it has: "
                                f"{', '.join(sorted(series.channels)) or 'none'}); map names with --channel")
    if resample_s <= 0:
        stamps = sorted(set.intersection(*(set(series.channels[c]) for c in channels)))
        if not stamps:
            return []
        return [np.array([[series.channels[c][t] for c in channels] for t in stamps])]
    step = int(resample_s * 1000)
    buckets: list[dict[int, float]] = []
    for c in channels:
        sums: dict[int, list[float]] = defaultdict(list)
        for ts, v in series.channels[c].items():
            sums[ts // step].append(v)
        buckets.append({b: float(np.mean(vs)) for b, vs in sums.items()})
    common = sorted(set.intersection(*(set(b) for b in buckets)))
    segments: list[list[int]] = []
    for b in common:
        if segments and b - segments[-1][-1] <= MAX_FILL + 1:
            segments[-1].append(b)
        else:
            segments.append([b])
    out = []
    for seg in segments:
        grid = np.arange(seg[0], seg[-1] + 1)
        cols = [np.interp(grid, seg, [buckets[i][b] for b in seg]) for i in range(len(channels))]
        out.append(np.stack(cols, axis=1))
    return out


def _split(rows: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    train, calibrate = [], []
    for r in rows:
        cut = int(len(r) * TRAIN_SHARE)
        if cut >= WINDOW:
            train.append(r[:cut])
        if len(r) - cut >= WINDOW:
            calibrate.append(r[cut:])
    return train, calibrate


def _windows(rows: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    per = [sliding_windows(r) for r in rows if len(r) >= WINDOW]
    if not per:
        return np.zeros((0, 1)), []
    return np.concatenate([window_features(w) for w, _ in per]), [(r, ends) for r, (_, ends) in zip(
        [r for r in rows if len(r) >= WINDOW], per, strict=True)]


# ------------------------------------------------------------------------------------------------ the model


def fit_windows(x: np.ndarray) -> Pipeline:
    """``train.fit``'s pipeline on the given window features."""
    model = Pipeline([
        ("scale", StandardScaler()),
        ("mixture", GaussianMixture(COMPONENTS, covariance_type="full", reg_covar=1e-2, random_state=0)),
    ])
    with threadpool_limits(1):
        return model.fit(x)


def shifted(model: ModelProto, shift: float) -> ModelProto:
    """``model`` with ``shift`` added to its score output (same name), so that its threshold moves by it."""
    graph = model.graph
    raw = f"{SCORE_OUTPUT}_raw"
    for node in graph.node:  # the raw score keeps feeding whatever used it (skl2onnx derives labels from it)
        node.output[:] = [raw if o == SCORE_OUTPUT else o for o in node.output]
        node.input[:] = [raw if i == SCORE_OUTPUT else i for i in node.input]
    graph.initializer.append(numpy_helper.from_array(np.array([shift], dtype=np.float32), "score_shift"))
    graph.node.append(helper.make_node("Add", [raw, "score_shift"], [SCORE_OUTPUT], name="school_threshold_shift"))
    onnx.checker.check_model(model)
    return model


def _check_on_injected_faults(kind: str, series: list[np.ndarray], score: Any, threshold: float) -> dict[str, float]:
    """Share of fault windows the new model flags when the simulators' sensor faults (``data._sensor_fault``:
    drift, stuck, spikes) are injected half-way into the school's own held-out readings. Indicative: real faults
    of the school's devices may look otherwise."""
    rng = np.random.default_rng(CHECK_SEED)
    out: dict[str, float] = {}
    for fault in ("drift", "stuck", "spikes"):
        hit = total = 0
        for values in series:
            if len(values) < 3 * WINDOW:
                continue
            both = _sensor_fault(rng, kind, values.copy(), fault, len(values) // 2)
            windows, ends = sliding_windows(both[:, :-1])
            active = both[ends, -1].astype(bool)
            flagged = score(window_features(windows)) < threshold
            hit, total = hit + int(flagged[active].sum()), total + int(active.sum())
        if total:
            out[fault] = round(hit / total, 3)
    return out


def train_kind(kind: str, rows: dict[str, list[np.ndarray]], shipped_threshold: float,
               version: str, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, calibrate and export one kind from its devices' rows; returns (manifest entry, report)."""
    train_rows, cal_rows = [], []
    for device_rows in rows.values():
        t, c = _split(device_rows)
        train_rows += t
        cal_rows += c
    x_train, _ = _windows(train_rows)
    x_cal, cal_series = _windows(cal_rows)
    if len(x_train) < MIN_TRAIN_WINDOWS or len(x_cal) < MIN_CALIBRATION_WINDOWS:
        raise TrainingDataError(
            f"{kind}: {len(x_train)} training and {len(x_cal)} calibration windows from "
            f"{', '.join(rows)}; at least {MIN_TRAIN_WINDOWS} and {MIN_CALIBRATION_WINDOWS} are needed (about "
            f"{(MIN_TRAIN_WINDOWS * 5 + WINDOW) / TRAIN_SHARE / 60:.0f} hours of one-a-minute readings in all)")
    model = fit_windows(x_train)
    raw_scores = -model.score_samples(x_cal)
    raw_threshold = -threshold_for(raw_scores, FALSE_ALARM_RATE)
    shift = shipped_threshold - raw_threshold
    file = f"{kind}-{version}.onnx"
    n_features = len(feature_names(list(KINDS[kind].channels)))
    data = stable_bytes(shifted(export(model, n_features), shift))
    (out / file).write_bytes(data)

    floors = baseline.std_floors([r for r, _ in cal_series])
    base = np.concatenate([baseline.window_scores(r, ends, WINDOW, floors) for r, ends in cal_series])
    entry = manifest_entry(kind, file, {"model_threshold": shipped_threshold,
                                        "baseline_threshold": threshold_for(base, FALSE_ALARM_RATE),
                                        "baseline_std_floors": [round(float(f), 6) for f in floors]})

    def score(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.score_samples(x)) + shift

    held_out = float((score(x_cal) < shipped_threshold).mean())
    report = {
        "devices": sorted(rows),
        "rows": {d: int(sum(len(r) for r in rs)) for d, rs in rows.items()},
        "training_windows": len(x_train),
        "calibration_windows": len(x_cal),
        "held_out_false_alarm_share": round(held_out, 4),
        "target_false_alarm_share": FALSE_ALARM_RATE,
        "flagged_share_of_injected_fault_windows": _check_on_injected_faults(kind, [r for r, _ in cal_series], score,
                                                                             shipped_threshold),
    }
    entry.update(version=version, threshold=round(shipped_threshold, 6), ships=True,
                 trained_on={"school_data": True, **{k: report[k] for k in ("devices", "rows")}})
    return entry, report


def default_version() -> str:
    return "school-" + datetime.now(UTC).strftime("%Y.%m.%d.%H%M")


def train_school(data: dict[str, DeviceSeries], devices: dict[str, str], out: Path, *,
                 channel_map: dict[str, str] | None = None, resample_s: float = 60.0,
                 version: str | None = None, source: str = "") -> dict[str, Any]:
    """Train every kind named in ``devices`` (device id -> kind) into ``out/anomaly``; the result summary."""
    version = version or default_version()
    channel_map = channel_map or {}
    folder = out / "anomaly"
    folder.mkdir(parents=True, exist_ok=True)
    shipped = json.loads((HERE / "manifest.json").read_text())["models"]
    per_kind: dict[str, dict[str, list[np.ndarray]]] = defaultdict(dict)
    for device, kind in devices.items():
        if kind not in KINDS:
            raise TrainingDataError(f"device {device}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        if device not in data:
            raise TrainingDataError(f"device {device}: no readings in {source or 'the data'} (devices there: "
                                    f"{', '.join(sorted(data)) or 'none'})")
        names = tuple(channel_map.get(c, c) for c in KINDS[kind].channels)
        per_kind[kind][device] = to_rows(data[device], names, resample_s)
    entries: dict[str, dict[str, Any]] = {}
    reports: dict[str, Any] = {}
    for kind, rows in sorted(per_kind.items()):
        name = f"anomaly-{kind}"
        entries[name], reports[name] = train_kind(kind, rows, float(shipped[name]["threshold"]), version, folder)
        entries[name]["trained_with"] = trained_with()
    existing = folder / "manifest.json"
    before = json.loads(existing.read_text())["models"] if existing.exists() else {}
    for name, entry in shipped.items():  # the kinds not retrained: the school's earlier version, or the shipped one
        if name in entries:
            continue
        if name in before and (folder / before[name]["file"]).exists():
            entries[name] = before[name]
        else:
            shutil.copyfile(HERE / entry["file"], folder / entry["file"])
            entries[name] = entry
    for entry in entries.values():
        entry["sha256"] = hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest()
    for name in reports:
        args = {"name": name, "version": version, "sha256": entries[name]["sha256"],
                "data_b64": base64.b64encode((folder / entries[name]["file"]).read_bytes()).decode()}
        (folder / f"install-{name}.json").write_text(json.dumps(args) + "\n")
    (folder / "training.json").write_text(json.dumps({"version": version, "source": source, "resample_s": resample_s,
                                                      "models": reports}, indent=2, sort_keys=True) + "\n")
    # the manifest last: a gateway watching this folder sees the new version only once its file is complete
    (folder / "MODEL.sha256").write_text("".join(sorted(f"{e['sha256']}  {e['file']}\n" for e in entries.values())))
    tmp = folder / ".manifest.json.tmp"
    tmp.write_text(json.dumps({"format": 1, "models": entries}, indent=2, sort_keys=True) + "\n")
    tmp.replace(existing)
    return {"folder": folder, "version": version, "models": reports, "entries": entries}


def install_hint(result: dict[str, Any]) -> Iterator[str]:
    folder: Path = result["folder"]
    yield f"wrote {folder}/manifest.json (version {result['version']}) and:"
    for name, report in result["models"].items():
        entry = result["entries"][name]
        yield (f"  {entry['file']}: {name} from {', '.join(report['devices'])}, {report['training_windows']} "
               f"windows; false alarms on held-out readings {100 * report['held_out_false_alarm_share']:.2f} % "
               f"(target {100 * FALSE_ALARM_RATE:.1f} %)")
    yield "Install it on the gateway, either way:"
    yield (f"  drop-in: copy the .onnx files, then manifest.json, into the folder the gateway's config names in "
           f"models.folder, under anomaly/ (e.g. rsync -a {folder}/ gateway:/var/lib/edugate/school-models/anomaly/); "
           f"it is verified and swapped in within models.watch_interval_s")
    for name in result["models"]:
        yield (f"  by command: edugate send --key central-cmd.pem --school SCHOOL --gateway GATEWAY --name "
               f"models.install --args \"$(cat {folder}/install-{name}.json)\"")
