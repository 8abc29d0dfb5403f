"""What the attendance service costs a card tap on the event loop, as a period fills up with cards.

    .venv/bin/python bench/attendance_tally.py [--cards 1000] [--gap-ms 5 0] [--dir DIR]

One attendance service (a period open all day), its tally file in ``--dir`` (default: a temporary folder under
bench/results, on the gateway's disk rather than tmpfs). ``--cards`` unique cards tap one after another,
``--gap-ms`` apart (a busy door: a class of 40 arriving in a few seconds, 25 readers at once at the school gate);
each tap is a new card in the period, which is what makes the tally file be written. Measured per tap: how long
``stage()`` (the service's part of a tap, run on the event loop before the tap is committed) holds the loop.
Then: how long until the file holds every card, and how many times it was written. Two variants: ``loop``,
the write as it was before (the whole file rewritten and fsynced on the event loop at each new card: the
service's former ``_save``, copied here as :func:`save_on_the_loop`), and ``thread`` (the coalescing writer,
as the service runs). Prints one JSON line per variant and gap, the thread lines with ``stage_p50_ratio``:
loop p50 / thread p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edugate.gateway.services.attendance import Attendance, TimetableConfig

TZ = "Asia/Ho_Chi_Minh"
ALL_DAY = TimetableConfig.model_validate({
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "periods": [{"name": "day", "start": "00:00", "end": "23:59:59"}]})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def save_on_the_loop(att: Attendance) -> None:
    """The attendance service's ``_save`` before the coalescing writer (on the loop, at every new card)."""
    assert att.state_file is not None
    doc = {"tallies": [[d, p, r, t.cards] for (d, p, r), t in sorted(att.tallies.items())]}
    att.state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = att.state_file.with_suffix(".tmp")
    with tmp.open("w") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, att.state_file)
    att.writer.writes += 1  # type: ignore[union-attr]


def tap(n: int, ts_ms: int) -> dict[str, Any]:
    return {"kind": "event", "device": "gate", "ts": ts_ms, "synced": True, "type": "card_tap",
            "data": {"card": f"p:{n:012x}", "role": "attendance", "direction": "in"}}


async def measure(folder: Path, cards: int, gap_s: float, variant: str) -> dict[str, Any]:
    state = folder / f"attendance-tallies-{variant}-{gap_s}.json"
    att = Attendance(ALL_DAY, TZ, {"gate": "hall"}, state_file=state)
    writer = att.writer
    assert writer is not None
    if variant == "loop":  # before: every new card rewrote and fsynced the file on the loop
        writer.request = lambda: save_on_the_loop(att)  # type: ignore[method-assign]
    noon = dt.datetime.combine(dt.date.today(), dt.time(12), dt.datetime.now().astimezone().tzinfo)
    ts_ms = int(noon.timestamp() * 1000)
    costs: list[float] = []
    start = time.perf_counter()
    for n in range(cards):
        t0 = time.perf_counter()
        att.stage(tap(n, ts_ms + n))
        costs.append(time.perf_counter() - t0)
        await asyncio.sleep(gap_s)
    taps_done = time.perf_counter()
    await att.flush()
    durable = time.perf_counter()
    kept = Attendance(ALL_DAY, TZ, {"gate": "hall"}, state_file=state).tallies
    held = sum(len(t.cards) for t in kept.values())
    assert held == cards, f"the file holds {held} of {cards} cards"
    ms = [c * 1000 for c in costs]
    last = ms[-max(1, cards // 10):]
    return {
        "variant": variant, "cards": cards, "gap_ms": gap_s * 1000, "stage_ms_p50": round(statistics.median(ms), 3),
        "stage_ms_p99": round(percentile(ms, 99), 3), "stage_ms_max": round(max(ms), 3),
        "stage_ms_mean": round(statistics.fmean(ms), 3),
        "stage_ms_mean_last_tenth": round(statistics.fmean(last), 3),
        "taps_s": round(taps_done - start, 3), "flush_after_last_tap_ms": round((durable - taps_done) * 1000, 2),
        "file_writes": writer.writes, "file_bytes": state.stat().st_size,
        "python": platform.python_version(), "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--gap-ms", type=float, nargs="+", default=[5.0, 0.0])
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.dir is not None:
            folder = args.dir
            folder.mkdir(parents=True, exist_ok=True)
        else:
            results = Path(__file__).resolve().parent / "results"
            results.mkdir(exist_ok=True)
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=results)))
        for gap_ms in args.gap_ms:
            before = asyncio.run(measure(folder, args.cards, gap_ms / 1000, "loop"))
            print(json.dumps(before), flush=True)
            after = asyncio.run(measure(folder, args.cards, gap_ms / 1000, "thread"))
            after["stage_p50_ratio"] = round(before["stage_ms_p50"] / after["stage_ms_p50"], 1)
            print(json.dumps(after), flush=True)


if __name__ == "__main__":
    main()
