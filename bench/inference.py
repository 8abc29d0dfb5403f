"""On-device model cost: inference time per window (p50/p99) and the gateway process's RSS with the models loaded.

    .venv/bin/python bench/inference.py [--calls 2000]

For every model shipped in ``ml_models/*/manifest.json``: load it as the gateway does
(``edugate.gateway.inference``: checksum, onnxruntime CPU, one thread), then time ``--calls`` single-window calls
two ways: ``session.run`` directly, and ``ModelRunner.infer`` from an asyncio loop (what the stage pays,
including the hop to the worker thread and back). The window's features are computed once per call too
(``features``). RSS: this process before importing onnxruntime, and after loading every model. Prints one JSON
line per model and one for memory.

The person detector (``ml_models/people``, task ``people``) is timed per 640 × 480 frame instead (``--frames``
calls, cycling over the labelled frames of Debian's pedestrian video): the frame's preprocessing (resize to
300 × 300, BGR→RGB) plus ``session.run`` on one thread, and the same through ``ModelRunner.infer``; OpenCV's HOG
people detector (the baseline, OpenCV limited to one thread as the camera driver sets it) on the same frames
(``--hog-frames``). Wall time and the calling thread's CPU time (onnxruntime and HOG run on it, one thread), which
a busy machine does not inflate. Ratios: HOG's over the detector's.

The attendance checks' models (``ml_models/attendance``, task ``attendance``) are timed per case: one feature row
made by the check's own functions (a pair of taps for card sharing, a room's period for untapped heads).

Targets (issue 14): anomaly ≤ 1 ms per window; detector ≤ 40 ms per 640 × 480 frame on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    return round(psutil.Process(os.getpid()).memory_info().rss / 2**20, 1)


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.quantile(a, 0.5)), 4), "p99_ms": round(float(np.quantile(a, 0.99)), 4)}


def window_for(meta: dict[str, object]) -> tuple[np.ndarray, object]:
    """A realistic window for the model and the function that turns it into its features."""
    if meta["task"] == "anomaly":
        from edugate.ml_models.anomaly.data import episode
        from edugate.ml_models.anomaly.features import WINDOW, window_features

        e = episode(np.random.default_rng(0), str(meta["device_kind"]), None, days=0.1)
        return e.values[-WINDOW:], window_features
    from edugate.ml_models.occupancy.data import rooms
    from edugate.ml_models.occupancy.features import WINDOW, window_features

    return rooms(0, 1, 1)[0].values[500 - WINDOW:500], window_features


async def bench(calls: int, frames: int = 300, hog_frames: int = 40) -> None:
    before = rss_mb()
    from edugate.gateway.inference import ModelRunner, load, load_manifest

    imported = rss_mb()
    specs = {name: spec for m in sorted((REPO / "ml_models").glob("*/manifest.json"))
             for name, spec in load_manifest(m).items()}
    runners = {}
    for name, spec in specs.items():
        runners[name] = ModelRunner(name, budget_ms=1.0)
        await runners[name].swap(spec)
    loaded = rss_mb()
    for name, spec in specs.items():
        if spec.meta.get("task") not in ("anomaly", "occupancy"):  # windows of readings only; people: below
            continue
        model = load(spec)
        window, features = window_for(dict(spec.meta))
        feed_name = spec.inputs[0].name
        direct, feats, staged = [], [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            x = features(window)  # type: ignore[operator]
            t1 = time.perf_counter()
            model.run({feed_name: x}, [spec.meta["score_output"]])
            t2 = time.perf_counter()
            feats.append((t1 - t0) * 1000)
            direct.append((t2 - t1) * 1000)
        for _ in range(calls):
            t0 = time.perf_counter()
            await runners[name].infer({feed_name: x}, [spec.meta["score_output"]])
            staged.append((time.perf_counter() - t0) * 1000)
        print(json.dumps({"model": name, "version": spec.version, "calls": calls, "session_run": percentiles(direct),
                          "features": percentiles(feats), "runner_infer": percentiles(staged),
                          "overruns_over_1ms": runners[name].status()["overruns"]}))
    for name, spec in specs.items():
        if spec.meta.get("task") == "attendance":
            await bench_attendance(spec, runners[name], calls)
    for name, spec in specs.items():
        if spec.meta.get("task") == "people":
            await bench_detector(spec, runners[name], frames, hog_frames)
    print(json.dumps({"rss_mb": {"before_import": before, "onnxruntime_imported": imported,
                                 "all_models_loaded": loaded, "models": len(specs)}}))
    for runner in runners.values():
        runner.close()


async def bench_attendance(spec: Any, runner: Any, calls: int) -> None:
    """An attendance check's model per case (one pair of taps, or one period of a room), features made by the same
    functions the check uses, direct and through the runner."""
    from edugate.gateway.inference import load
    from edugate.ml_models.attendance.checks import sharing_features, untapped_features

    if spec.name.endswith("card-shared"):
        row = sharing_features(180.0, 40.0, 2, 3.0, 4.5)  # two taps 180 m apart, 40 s apart, two floors
    else:
        row = untapped_features(27, [31.0, 32.0, 30.0, 33.0, 31.0, 32.0], True, 1.0)
    x = np.asarray([row], dtype=np.float32)
    model = load(spec)
    feed, output = spec.inputs[0].name, spec.meta["score_output"]
    direct, features, staged = [], [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        row = sharing_features(180.0, 40.0, 2, 3.0, 4.5) if spec.name.endswith("card-shared") else \
            untapped_features(27, [31.0, 32.0, 30.0, 33.0, 31.0, 32.0], True, 1.0)
        t1 = time.perf_counter()
        model.run({feed: x}, [output])
        direct.append((time.perf_counter() - t1) * 1000)
        features.append((t1 - t0) * 1000)
    for _ in range(calls):
        t0 = time.perf_counter()
        await runner.infer({feed: x}, [output])
        staged.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"model": spec.name, "version": spec.version, "calls": calls, "session_run": percentiles(direct),
                      "features": percentiles(features), "runner_infer": percentiles(staged)}))


async def bench_detector(spec: Any, runner: Any, calls: int, hog_calls: int) -> None:
    """The person detector per 640 × 480 frame, direct and through the runner, and HOG on the same frames."""
    import cv2

    from edugate.drivers.camera.detector import INPUT_SIZE, HogDetector
    from edugate.gateway.inference import load
    from edugate.ml_models.people.frames import labelled_frames

    frames = [cv2.resize(f, (640, 480), interpolation=cv2.INTER_AREA) for _, f, _ in labelled_frames()]
    model = load(spec)
    feed = spec.inputs[0].name

    def prepare(frame: np.ndarray) -> np.ndarray:
        small = cv2.resize(frame, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)[np.newaxis]

    direct, cpu, staged, hog, hog_cpu = [], [], [], [], []
    for i in range(calls):
        t0, c0 = time.perf_counter(), time.thread_time()
        model.run({feed: prepare(frames[i % len(frames)])})
        direct.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    for i in range(calls):
        t0 = time.perf_counter()
        await runner.infer({feed: prepare(frames[i % len(frames)])})
        staged.append((time.perf_counter() - t0) * 1000)
    detector = HogDetector()
    for i in range(hog_calls):
        t0, c0 = time.perf_counter(), time.thread_time()
        detector.count(frames[i % len(frames)])
        hog.append((time.perf_counter() - t0) * 1000)
        hog_cpu.append((time.thread_time() - c0) * 1000)
    d, h, dc, hc = percentiles(direct), percentiles(hog), percentiles(cpu), percentiles(hog_cpu)
    print(json.dumps({"model": spec.name, "version": spec.version, "frame": "640x480", "calls": calls,
                      "preprocess_and_session_run": d, "cpu_time": dc, "runner_infer": percentiles(staged),
                      "overruns_over_40ms": sum(ms > 40 for ms in direct),
                      "hog_baseline": {"calls": hog_calls, **h, "cpu_time": hc},
                      "hog_over_detector": {"p50": round(h["p50_ms"] / d["p50_ms"], 1),
                                            "p99": round(h["p99_ms"] / d["p99_ms"], 1),
                                            "cpu_p50": round(hc["p50_ms"] / dc["p50_ms"], 1)},
                      "load_average_1min": round(os.getloadavg()[0], 1), "cpus": os.cpu_count()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=300, help="person detector calls (640x480 frames)")
    parser.add_argument("--hog-frames", type=int, default=40, help="HOG baseline calls (slow: ~0.1-0.3 s each)")
    args = parser.parse_args()
    asyncio.run(bench(args.calls, args.frames, args.hog_frames))


if __name__ == "__main__":
    main()
