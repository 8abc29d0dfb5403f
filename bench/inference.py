"""On-device model cost: inference time per window (p50/p99) and the gateway process's RSS with the models loaded.

    .venv/bin/python bench/inference.py [--calls 2000]

For every model shipped in ``ml_models/*/manifest.json``: load it as the gateway does
(``edugate.gateway.inference``: checksum, onnxruntime CPU, one thread), then time ``--calls`` single-window calls
two ways: ``session.run`` directly, and ``ModelRunner.infer`` from an asyncio loop (what the stage pays,
including the hop to the worker thread and back). The window's features are computed once per call too
(``features``). RSS: this process before importing onnxruntime, and after loading every model. Prints one JSON
line per model and one for memory.

Target (issue 14): anomaly ≤ 1 ms per window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

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


async def bench(calls: int) -> None:
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
    print(json.dumps({"rss_mb": {"before_import": before, "onnxruntime_imported": imported,
                                 "all_models_loaded": loaded, "models": len(specs)}}))
    for runner in runners.values():
        runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    asyncio.run(bench(parser.parse_args().calls))


if __name__ == "__main__":
    main()
