"""The outbox over its disk budget (issue 12): thinning keeps an even, coarser record of a long outage (never a
hole), the gateway's health records and every event stay, the files on disk stay within the budget, one
notice per episode and one summary log line per minute."""

from __future__ import annotations

import asyncio
import logging
from itertools import pairwise
from pathlib import Path
from statistics import median
from typing import Any

import orjson
import pytest

from edugate.contract.records import Kind
from edugate.contract.state import GATEWAY_DEVICE
from edugate.gateway.runtime.outbox import MIN_WAL_LIMIT, Outbox
from tests.helpers import wait_for_async

START = 1_700_000_000_000
DEVICES = ("lab-co2", "lab-temp", "hall-temp")
STEP_MS = 1000  # each device reads once a second (virtual time: the test runs much faster)


def reading(device: str, n: int) -> dict[str, Any]:
    return {"kind": "telemetry", "device": device, "ts": START + n * STEP_MS, "synced": True,
            "values": {"n": n, "co2_ppm": 400 + n % 300, "note": "x" * 60}}


def health(n: int) -> dict[str, Any]:
    return {"kind": "telemetry", "device": GATEWAY_DEVICE, "ts": START + n * STEP_MS, "synced": True,
            "values": {"uptime_s": n, "outbox_records": n}}


def tap(n: int) -> dict[str, Any]:
    return {"kind": "event", "device": "door-1", "ts": START + n * STEP_MS, "synced": True, "type": "card_tap",
            "data": {"n": n, "card": "p:3f9a1c"}}


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.name.endswith(("sqlite", "-wal")))


async def outage(box: Outbox, seconds: int, path: Path) -> tuple[int, int]:
    """``seconds`` of an outage: every device reads each second, a health record each minute, a tap each 30 s.
    Returns (the largest size of the files seen after any commit, records committed)."""
    largest = committed = 0
    for t in range(0, seconds, 10):  # ten seconds of readings commit together
        puts = [box.put(Kind.TELEMETRY, reading(d, n)) for n in range(t, t + 10) for d in DEVICES]
        puts += [box.put(Kind.TELEMETRY, health(n)) for n in range(t, t + 10) if n % 60 == 0]
        puts += [box.put(Kind.EVENT, tap(n)) for n in range(t, t + 10) if n % 30 == 0]
        committed += len(await asyncio.gather(*puts))
        largest = max(largest, disk_bytes(path))
    return largest, committed


async def queued(box: Outbox, kind: Kind) -> list[dict[str, Any]]:
    return [orjson.loads(p) for _, p in await box.fetch(kind, 0, 10_000_000, 1 << 40)]


async def test_a_long_outage_becomes_coarser_evenly_never_a_hole(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.gateway.runtime.outbox")
    budget = 1 << 20
    path = tmp_path / "outbox.sqlite"
    box = await Outbox.open(path, budget_bytes=budget)
    notices: list[dict[str, Any]] = []
    box.on_over_budget = notices.append
    seconds = 4 * 3600  # four hours of three devices: 43,200 readings, several times the budget
    largest, committed = await outage(box, seconds, path)
    await wait_for_async(lambda: not box.thinning, 30, "the pass under way to finish")  # it goes on alone
    largest = max(largest, disk_bytes(path))

    stats = box.stats
    readings = await queued(box, Kind.TELEMETRY)
    events = await queued(box, Kind.EVENT)
    assert stats.telemetry_thinned > 0 and stats.thin_passes >= 2
    assert len(readings) + len(events) + stats.telemetry_thinned == committed
    # the gateway's health records and every event are all still there
    assert [r["values"]["uptime_s"] for r in readings if r["device"] == GATEWAY_DEVICE] == list(range(0, seconds, 60))
    assert [e["data"]["n"] for e in events] == list(range(0, seconds, 30))
    # per device: the whole outage is there, at an even, coarser resolution
    for device in DEVICES:
        ts = sorted((r["ts"] - START) // STEP_MS for r in readings if r["device"] == device)
        assert ts[0] < 60, f"{device}: the start of the outage is gone (first reading at {ts[0]} s)"
        # the older nine tenths of the outage: one even, coarser resolution (re-thinning a coarse grid leaves
        # gaps of one or two of its steps); the newest readings may still be at full resolution (a pass leaves
        # the newest tenth of the backlog alone)
        older = [b - a for a, b in pairwise(ts) if b < seconds * 0.9]
        assert max(older) <= 2.5 * median(older), f"{device}: a hole of {max(older)} s (spacing {median(older)} s)"
        assert median(older) > 4, f"{device}: not thinned evenly, spacing {median(older)} s"
        bins = [0] * 10
        for t in ts:
            bins[t * 10 // seconds] += 1
        assert min(bins) > 0, f"{device}: a tenth of the outage has no reading: {bins}"
        assert max(bins[:8]) <= 2 * min(bins[:8]), f"{device}: uneven over the outage: {bins}"  # seen: 1.2-1.6
    # the files on disk (database + WAL) stay within the budget plus the stated margin
    margin = MIN_WAL_LIMIT + 64 * 1024
    assert largest <= budget + margin, f"{largest} bytes on disk for a budget of {budget}"
    assert stats.bytes <= budget and stats.disk_bytes == disk_bytes(path)
    # one notice for the episode (not one per commit), and a summary log line, not one per commit
    assert len(notices) == 1, notices
    assert notices[0]["budget_bytes"] == budget and notices[0]["telemetry_thinned"] >= 0
    lines = [r for r in caplog.records if "over its budget" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
    await box.close()


async def test_the_disk_bound_holds_through_drain_and_a_second_outage(tmp_path: Path) -> None:
    """After the backlog drains, a second outage starts at full resolution again and is again thinned; the
    files stay within the budget all along and the counters agree after a reopen."""
    budget = 512 * 1024
    path = tmp_path / "outbox.sqlite"
    box = await Outbox.open(path, budget_bytes=budget)
    largest, _ = await outage(box, 3600, path)
    first_passes = box.stats.thin_passes
    assert first_passes >= 1
    for kind in (Kind.TELEMETRY, Kind.EVENT):  # the broker came back: everything acknowledged
        box.ack(kind, [seq for seq, _ in await box.fetch(kind, 0, 10_000_000, 1 << 40)])
    await box.put(Kind.EVENT, tap(0))
    assert box.stats.records == {"telemetry": 0, "event": 1}
    second, _ = await outage(box, 3600, path)
    assert box.stats.thin_passes > first_passes
    assert max(largest, second) <= budget + MIN_WAL_LIMIT + 64 * 1024
    records = dict(box.stats.records)
    await box.close()
    reopened = await Outbox.open(path, budget_bytes=budget)
    assert reopened.stats.records == records
    assert reopened.stats.disk_bytes <= budget + MIN_WAL_LIMIT
    await reopened.close()
