"""The runner: off the event loop, bounded, timed, swapped atomically under load, safe with no model."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edugate.gateway.inference import ChecksumMismatch, ModelCorrupt, ModelRunner, load_spec
from edugate.gateway.inference.store import install
from edugate.gateway.inference.watch import FileWatch
from tests.gateway.inference.onnx_builders import adder, slow, steps_for, write_model

X = np.zeros((1, 4), dtype=np.float32)


async def test_no_model_means_no_result_and_a_clear_status(tmp_path: Path) -> None:
    runner = ModelRunner("m")
    spec = load_spec(write_model(tmp_path, "m", "1", adder(1.0)), "m")
    spec.file.unlink()
    assert not await runner.try_swap(spec)
    assert await runner.infer({"x": X}) is None
    status = runner.status()
    assert status["loaded"] is False and status["version"] is None
    assert status["error"] is not None and "is missing" in status["error"]
    assert status["failed_swaps"] == 1
    write_model(tmp_path, "m", "1", adder(1.0))
    assert await runner.try_swap(spec)
    result = await runner.infer({"x": X})
    assert result is not None and result[0].tolist() == [[1.0] * 4]
    status = runner.status()
    assert status["loaded"] and status["version"] == "1" and status["error"] is None
    assert status["sha256"] == hashlib.sha256(adder(1.0)).hexdigest()
    runner.close()


async def test_inference_runs_on_the_worker_thread(tmp_path: Path) -> None:
    runner = ModelRunner("m")
    await runner.swap(load_spec(write_model(tmp_path, "m", "1", adder(1.0)), "m"))
    threads: list[str] = []
    model = runner.current
    assert model is not None
    original = model.session.run

    def spy(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    model.session.run = spy  # type: ignore[method-assign]
    await runner.infer({"x": X})
    assert threads and threads[0].startswith("model-m") and threads[0] != threading.main_thread().name
    runner.close()


async def test_the_loop_stays_responsive_while_a_slow_model_runs(tmp_path: Path) -> None:
    """A 5 ms timer keeps firing on time while a model takes hundreds of milliseconds on the worker thread."""
    runner = ModelRunner("slow", budget_ms=50.0)
    spec = load_spec(write_model(tmp_path, "slow", "1", slow(steps=steps_for(0.5)), shape=[1, 1]), "slow")
    await runner.swap(spec)
    lateness: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            due = time.perf_counter() + 0.005
            await asyncio.sleep(0.005)
            lateness.append(time.perf_counter() - due)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    result = await runner.infer({"x": np.ones((1, 1), dtype=np.float32)})
    took = time.perf_counter() - start
    stop.set()
    await task
    assert result is not None
    assert took > 0.2, f"the slow model took only {took:.3f} s: the test would prove nothing"
    assert len(lateness) >= took / 0.005 / 3, f"only {len(lateness)} ticks in {took:.3f} s"
    assert max(lateness) < min(0.1, took / 4), f"a timer fired {max(lateness) * 1000:.0f} ms late"
    assert runner.status()["overruns"] == 1
    runner.close()


async def test_overruns_are_counted(tmp_path: Path) -> None:
    spec = load_spec(write_model(tmp_path, "m", "1", adder(1.0)), "m")
    strict, relaxed = ModelRunner("m", budget_ms=0.0), ModelRunner("m", budget_ms=10_000.0)
    for runner in (strict, relaxed):
        await runner.swap(spec)
        for _ in range(5):
            assert await runner.infer({"x": X}) is not None
    assert (strict.status()["calls"], strict.status()["overruns"]) == (5, 5)
    assert (relaxed.status()["calls"], relaxed.status()["overruns"]) == (5, 0)
    assert relaxed.status()["p99_ms"] is not None
    strict.close()
    relaxed.close()


async def test_calls_beyond_the_bound_are_skipped_and_counted(tmp_path: Path) -> None:
    runner = ModelRunner("slow", max_pending=1)
    await runner.swap(load_spec(write_model(tmp_path, "slow", "1", slow(512, 4), shape=[1, 1]), "slow"))
    one = np.ones((1, 1), dtype=np.float32)
    results = await asyncio.gather(*(runner.infer({"x": one}) for _ in range(3)))
    assert sum(r is not None for r in results) == 1
    assert runner.status()["skipped"] == 2
    runner.close()


async def test_a_bad_input_is_counted_and_the_model_keeps_serving(tmp_path: Path) -> None:
    runner = ModelRunner("m")
    await runner.swap(load_spec(write_model(tmp_path, "m", "1", adder(1.0)), "m"))
    assert await runner.infer({"x": np.zeros((1, 3), dtype=np.float32)}) is None
    assert await runner.infer({"x": X}) is not None
    assert runner.status()["failures"] == 1
    runner.close()


async def test_swap_under_load_loses_no_call_and_keeps_the_old_model_when_the_new_one_fails(tmp_path: Path) -> None:
    runner = ModelRunner("m", max_pending=64)
    v1 = load_spec(write_model(tmp_path / "v1", "m", "1", adder(1.0)), "m")
    v2 = load_spec(write_model(tmp_path / "v2", "m", "2", adder(2.0)), "m")
    bad = load_spec(write_model(tmp_path / "v3", "m", "3", adder(3.0)), "m")
    bad.file.write_bytes(adder(3.0)[:-30])  # truncated after the manifest was written
    await runner.swap(v1)
    seen: list[list[float]] = [[] for _ in range(4)]
    done, warmed = asyncio.Event(), asyncio.Event()

    async def client(i: int) -> None:
        while not done.is_set() or len(seen[i]) < 200:
            result = await runner.infer({"x": X})
            assert result is not None, "a call was lost"
            seen[i].append(float(result[0][0, 0]))
            if min(len(s) for s in seen) >= 50:
                warmed.set()

    clients = [asyncio.create_task(client(i)) for i in range(4)]
    await warmed.wait()
    await runner.swap(v2)
    with pytest.raises(ChecksumMismatch):
        await runner.swap(bad)
    done.set()
    await asyncio.gather(*clients)
    for values in seen:
        assert set(values) <= {1.0, 2.0}
        first_v2 = values.index(2.0)
        assert values[:first_v2] == [1.0] * first_v2 and values[first_v2:] == [2.0] * (len(values) - first_v2)
    status = runner.status()
    assert status["version"] == "2" and status["swaps"] == 2 and status["failed_swaps"] == 1
    assert status["error"] is not None and "truncated" in status["error"]
    assert status["calls"] == sum(len(s) for s in seen) and status["skipped"] == 0
    runner.close()


async def test_a_corrupt_new_version_keeps_the_old_one(tmp_path: Path) -> None:
    runner = ModelRunner("m")
    await runner.swap(load_spec(write_model(tmp_path / "v1", "m", "1", adder(1.0)), "m"))
    corrupt = load_spec(write_model(tmp_path / "v2", "m", "2", os.urandom(500)), "m")
    with pytest.raises(ModelCorrupt):
        await runner.swap(corrupt)
    result = await runner.infer({"x": X})
    assert result is not None and result[0][0, 0] == 1.0
    runner.close()


async def test_a_file_dropped_in_place_is_noticed_and_swapped_in(tmp_path: Path) -> None:
    manifest = write_model(tmp_path, "m", "1", adder(1.0), file="m.onnx")
    watch = FileWatch(manifest, tmp_path / "m.onnx")
    runner = ModelRunner("m")
    assert watch.changed()
    await runner.swap(load_spec(manifest, "m"))
    assert not watch.changed()
    staged = write_model(tmp_path / "staging", "m", "2", adder(2.0), file="m.onnx")
    os.replace(staged.parent / "m.onnx", tmp_path / "m.onnx")
    assert watch.changed()
    with pytest.raises(ChecksumMismatch):  # the model file came first, its manifest not yet
        await runner.swap(load_spec(manifest, "m"))
    os.replace(staged, manifest)
    assert watch.changed()
    await runner.swap(load_spec(manifest, "m"))
    result = await runner.infer({"x": X})
    assert result is not None and result[0][0, 0] == 2.0
    runner.close()


async def test_a_model_sent_as_bytes_is_verified_stored_and_loads_after_a_restart(tmp_path: Path) -> None:
    v1 = load_spec(write_model(tmp_path / "shipped", "m", "1", adder(1.0)), "m")
    runner = ModelRunner("m")
    await runner.swap(v1)
    data = adder(5.0)
    with pytest.raises(ChecksumMismatch):
        await runner.swap(v1.with_version("5", hashlib.sha256(b"other").hexdigest()), data)
    new = v1.with_version("5", hashlib.sha256(data).hexdigest())
    await runner.swap(new, data)
    manifest = install(tmp_path / "installed", new, data)
    runner.close()
    again = ModelRunner("m")
    await again.swap(load_spec(manifest, "m"))
    result = await again.infer({"x": X})
    assert result is not None and result[0][0, 0] == 5.0
    assert again.status()["version"] == "5"
    assert not list(manifest.parent.glob(".*.tmp"))
    again.close()
