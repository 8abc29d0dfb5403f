#!/usr/bin/env python3
"""A longer fuzz campaign over every parser that takes outside bytes (the targets of tests/fuzz/targets.py):
coverage-guided with atheris (libFuzzer) when it is installed, hypothesis otherwise. One process per parser,
each with its share of the time; per parser it records the inputs run, how many were accepted and rejected
(with the parser's own clear error), and the findings: any other exception (type, place, the input in hex),
a rejection without a message, and hangs (an input taking longer than --timeout seconds).

    python scripts/fuzz.py --minutes 10 --out bench/results/fuzz      # all parsers, 10 minutes in total
    python scripts/fuzz.py --minutes 2 --only sip2 --only nmea
    python scripts/fuzz.py --engine hypothesis ...                    # force the engine

atheris: ``pip install atheris`` (a wheel for CPython 3.11 on x86-64 Linux). Results: ``<out>/<parser>.json``
(updated every second while it runs) and ``<out>/summary.json``; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Recorder:
    """Counts and findings of one parser, flushed to ``path`` at most once a second and at the end."""

    def __init__(self, name: str, engine: str, path: Path, slow_s: float) -> None:
        self.path = path
        self.slow_s = slow_s
        self.data: dict[str, Any] = {"parser": name, "engine": engine, "inputs": 0, "ok": 0, "rejected": 0,
                                     "findings": 0, "slowest_ms": 0.0, "seconds": 0.0, "examples": []}
        self._started = time.monotonic()
        self._flushed = 0.0
        self._seen: set[str] = set()

    def run(self, target: Any, data: bytes) -> None:
        start = time.perf_counter()
        try:
            outcome = target.check(data)
        except Exception as exc:  # a finding: any exception the parser does not own
            self._finding(type(exc).__name__, _place(exc), str(exc)[:200], data)
        else:
            self.data[outcome] += 1
        took = time.perf_counter() - start
        self.data["inputs"] += 1
        if took * 1000 > self.data["slowest_ms"]:
            self.data["slowest_ms"] = round(took * 1000, 3)
        if took > self.slow_s:  # a finding only if it is slow again (not a first import or a model built once)
            again = time.perf_counter()
            with contextlib.suppress(Exception):
                target.check(data)
            again = time.perf_counter() - again
            if again > self.slow_s:
                self._finding("Slow", f"{len(data)} bytes", f"one input took {took:.2f} s, again {again:.2f} s "
                              f"(limit {self.slow_s} s)", data)
            else:
                self.data["slow_once"] = self.data.get("slow_once", 0) + 1
        now = time.monotonic()
        if now - self._flushed > 1:
            self.flush()

    def _finding(self, kind: str, place: str, message: str, data: bytes) -> None:
        self.data["findings"] += 1
        key = f"{kind} at {place}"
        if key not in self._seen and len(self._seen) < 20:  # one example per distinct finding
            self._seen.add(key)
            self.data["examples"].append({"kind": kind, "where": place, "message": message,
                                          "input_hex": data[:512].hex()})

    def flush(self) -> None:
        self.data["seconds"] = round(time.monotonic() - self._started, 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)
        self._flushed = time.monotonic()


def _place(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    frame = frames[-1] if frames else None
    return f"{Path(frame.filename).name}:{frame.lineno} {frame.name}" if frame else "?"


# ---------------------------------------------------------------------- one parser (child process)


def child(name: str, engine: str, seconds: float, out: Path, slow_s: float) -> None:
    instrumented: Any = contextlib.nullcontext()
    if engine == "atheris":  # coverage feedback from EduGate's code and the parsing libraries it uses
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

        instrumented = atheris.instrument_imports(include=["edugate", "pynmea2", "yaml"])
    with instrumented:
        from tests.fuzz.targets import inputs, targets

        target = targets()[name]
        recorder = Recorder(name, engine, out / f"{name}.json", slow_s)
        for seed in target.seeds:  # the parser's modules are imported here (lazily), so instrumented
            recorder.run(target, seed)
    if engine == "atheris":
        _atheris(target, recorder, seconds, out)
    else:
        _hypothesis(target, recorder, seconds, inputs)
    recorder.flush()


def _atheris(target: Any, recorder: Recorder, seconds: float, out: Path) -> None:
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    corpus = out / "corpus" / target.name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(target.seeds):
        (corpus / f"seed-{i}").write_bytes(seed)
    deadline = time.monotonic() + seconds

    def one(data: bytes) -> None:
        recorder.run(target, data)
        if time.monotonic() > deadline:
            recorder.flush()
            os._exit(0)

    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={int(seconds) + 5}", "-max_len=4096",
                   "-rss_limit_mb=2048", f"-timeout={max(2, int(recorder.slow_s * 4))}",
                   f"-artifact_prefix={out}/{target.name}-"], one)
    atheris.Fuzz()


def _hypothesis(target: Any, recorder: Recorder, seconds: float, inputs: Any) -> None:
    from hypothesis import HealthCheck, given, settings

    deadline = time.monotonic() + seconds

    @settings(max_examples=1000, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(inputs(target))
    def batch(data: bytes) -> None:
        recorder.run(target, data)

    while time.monotonic() < deadline:
        batch()


# ---------------------------------------------------------------------- the campaign (parent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="Total time, shared by the parsers.")
    parser.add_argument("--only", action="append", help="Fuzz only this parser (repeat).")
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fuzz")
    parser.add_argument("--jobs", type=int, default=1, help="Parsers fuzzed at the same time.")
    parser.add_argument("--timeout", type=float, default=1.0, help="An input slower than this is a finding.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    if args.child:
        child(args.child, engine, args.seconds, args.out, args.timeout)
        return 0

    from tests.fuzz.targets import targets

    names = args.only or sorted(targets())
    unknown = set(names) - set(targets())
    if unknown:
        parser.error(f"unknown parser(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(targets()))}")
    share = args.minutes * 60 * args.jobs / len(names)
    print(f"fuzzing {len(names)} parsers with {engine}, {share:.0f} s each, {args.jobs} at a time -> {args.out}",
          flush=True)
    running: list[tuple[str, subprocess.Popen[bytes], Any]] = []
    exits: dict[str, int] = {}
    queue = list(names)
    while queue or running:
        while queue and len(running) < args.jobs:
            name = queue.pop(0)
            log = (args.out / f"{name}.log").open("wb")
            proc = subprocess.Popen([sys.executable, __file__, "--child", name, "--seconds", str(share),
                                     "--engine", engine, "--out", str(args.out), "--timeout", str(args.timeout)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            running.append((name, proc, log))
        for item in list(running):
            name, proc, log = item
            if proc.poll() is not None:
                exits[name] = proc.returncode
                log.close()
                running.remove(item)
        time.sleep(0.2)
    return report(names, exits, args.out, engine)


def report(names: list[str], exits: dict[str, int], out: Path, engine: str) -> int:
    rows: list[dict[str, Any]] = []
    for name in names:
        path = out / f"{name}.json"
        data: dict[str, Any] = (json.loads(path.read_text()) if path.exists()
                                else {"parser": name, "inputs": 0, "findings": 0})
        if exits.get(name, 0) != 0:  # libFuzzer stopped the process: a hang (timeout) or out of memory
            data["findings"] = data.get("findings", 0) + 1
            data.setdefault("examples", []).append({"kind": "ProcessExit", "where": f"exit {exits[name]}",
                                                    "message": f"see {name}.log"})
        rows.append(data)
    total = sum(r["inputs"] for r in rows)
    findings = sum(r["findings"] for r in rows)
    summary = {"engine": engine, "total_inputs": total, "total_findings": findings, "parsers": rows,
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{'parser':<18} {'inputs':>10} {'accepted':>9} {'rejected':>9} {'findings':>8} {'slowest ms':>10}")
    for r in rows:
        print(f"{r['parser']:<18} {r['inputs']:>10} {r.get('ok', 0):>9} {r.get('rejected', 0):>9} "
              f"{r['findings']:>8} {r.get('slowest_ms', 0):>10}")
        for example in r.get("examples", []):
            print(f"    {example['kind']} at {example['where']}: {example['message']}")
    print(f"{'total':<18} {total:>10} {'':>9} {'':>9} {findings:>8}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
