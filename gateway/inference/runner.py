"""Run one model off the event loop: a single worker thread, a bounded queue, a time budget, atomic swaps.

The gateway's asyncio loop also beeps card taps, commits the outbox and feeds the uplink, so a model never
runs on it. :meth:`ModelRunner.infer` hands the call to the runner's one worker thread (onnxruntime itself is
limited to one intra-op thread) and awaits it; at most ``max_pending`` calls wait, further ones are skipped and
counted. A call slower than ``budget_ms`` still returns its result, and is counted as an overrun.

A new version is loaded and verified on a second thread while the current one keeps serving; only when it is
ready does one assignment make it current (calls already running finish on the old one). If it fails, the old
one stays and the error is kept in :meth:`status`. With no usable model, ``infer`` returns None and the stage
goes on without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict

import numpy as np

from edugate.gateway.inference.errors import ModelError
from edugate.gateway.inference.loader import LoadedModel, load
from edugate.gateway.inference.manifest import InputSpec, ModelSpec

log = logging.getLogger(__name__)


class RunnerStatus(TypedDict):
    """What the health record and the status page show of one model."""

    name: str
    loaded: bool
    version: str | None
    sha256: str | None
    file: str | None
    error: str | None  # why the last load or swap failed (None: it did not)
    calls: int
    overruns: int  # calls slower than the budget
    skipped: int  # calls refused because max_pending were already waiting
    failures: int  # calls that raised inside onnxruntime
    budget_ms: float
    p50_ms: float | None
    p99_ms: float | None
    swaps: int
    failed_swaps: int


class ModelRunner:
    """One named model slot; see the module docstring."""

    def __init__(self, name: str, *, budget_ms: float = 5.0, max_pending: int = 8,
                 expected_inputs: Sequence[InputSpec] | None = None) -> None:
        self.name = name
        self.budget_ms = budget_ms
        self.max_pending = max_pending
        self.expected_inputs = tuple(expected_inputs) if expected_inputs is not None else None
        self._current: LoadedModel | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-load-{name}")
        self._swap_lock = asyncio.Lock()
        self._pending = 0
        self._durations: deque[float] = deque(maxlen=2000)
        self._error: str | None = None
        self.calls = self.overruns = self.skipped = self.failures = self.swaps = self.failed_swaps = 0

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    async def swap(self, spec: ModelSpec, data: bytes | None = None) -> LoadedModel:
        """Load, verify and make ``spec`` current (from its file, or ``data``); on failure raise
        :class:`ModelError` and keep the model that was running."""
        async with self._swap_lock:
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(self._loader, load, spec, self.expected_inputs, data)
            except ModelError as exc:
                self.failed_swaps += 1
                self._error = str(exc)
                kept = f"; still running {self._current.spec.version}" if self._current else "; no model running"
                log.error("%s%s", exc, kept)
                raise
            old, self._current = self._current, new
            self.swaps += 1
            self._error = None
            log.info("model %s: %s -> %s (sha256 %s…)", self.name, old.spec.version if old else "none",
                     spec.version, spec.sha256[:12])
            return new

    async def try_swap(self, spec: ModelSpec, data: bytes | None = None) -> bool:
        """:meth:`swap` that reports failure as False (the error is in :meth:`status`)."""
        try:
            await self.swap(spec, data)
        except ModelError:
            return False
        return True

    def _timed_run(self, model: LoadedModel, feeds: Mapping[str, np.ndarray],
                   outputs: Sequence[str] | None) -> tuple[list[Any], float]:
        start = time.perf_counter()
        result = model.run(feeds, outputs)
        return result, (time.perf_counter() - start) * 1000.0

    async def infer(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[Any] | None:
        """The model's outputs for ``feeds``, computed on the worker thread; None when there is no model, the
        queue is full, or onnxruntime failed on this input (each counted)."""
        model = self._current
        if model is None:
            return None
        if self._pending >= self.max_pending:
            self.skipped += 1
            return None
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            result, ms = await loop.run_in_executor(self._worker, self._timed_run, model, feeds, outputs)
        except Exception as exc:  # a bad input for this model: count it, the stage goes on
            self.failures += 1
            log.warning("model %s %s failed on an input: %s", self.name, model.spec.version, exc)
            return None
        finally:
            self._pending -= 1
        self.calls += 1
        self._durations.append(ms)
        if ms > self.budget_ms:
            self.overruns += 1
        return result

    def record_error(self, message: str) -> None:
        """Keep an error found before loading (a bad manifest) for :meth:`status`."""
        self._error = message

    def status(self) -> RunnerStatus:
        model = self._current
        times = np.fromiter(self._durations, dtype=np.float64)
        return RunnerStatus(
            name=self.name,
            loaded=model is not None,
            version=model.spec.version if model else None,
            sha256=model.spec.sha256 if model else None,
            file=str(model.spec.file) if model else None,
            error=self._error,
            calls=self.calls,
            overruns=self.overruns,
            skipped=self.skipped,
            failures=self.failures,
            budget_ms=self.budget_ms,
            p50_ms=round(float(np.quantile(times, 0.5)), 3) if len(times) else None,
            p99_ms=round(float(np.quantile(times, 0.99)), 3) if len(times) else None,
            swaps=self.swaps,
            failed_swaps=self.failed_swaps,
        )

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
