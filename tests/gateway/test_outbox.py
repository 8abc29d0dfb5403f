"""The durable outbox: ordering, persistence, group commit, disk budget, kill -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson

from edugate.contract.records import Kind
from edugate.gateway.runtime.outbox import Outbox

REPO = Path(__file__).resolve().parents[2]


def telemetry(i: int, pad: int = 0) -> dict:
    return {"kind": "telemetry", "device": "d1", "ts": 1_700_000_000_000 + i, "synced": True,
            "values": {"i": i, "pad": "x" * pad}}


def event(i: int) -> dict:
    return {"kind": "event", "device": "door", "ts": 1_700_000_000_000 + i, "synced": True,
            "type": "card_tap", "data": {"i": i}}


async def test_sequence_is_shared_increasing_and_survives_reopen(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=10_000_000)
    seqs = [await box.put(Kind.TELEMETRY, telemetry(1)), await box.put(Kind.EVENT, event(2)),
            await box.put(Kind.TELEMETRY, telemetry(3))]
    assert seqs == [1, 2, 3]
    box.ack(Kind.TELEMETRY, [1, 3])
    await box.put(Kind.EVENT, event(4))  # the ack goes into this (or an earlier) commit
    await box.close()

    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=10_000_000)
    assert await box.fetch(Kind.TELEMETRY, 0, 100, 1 << 20) == []
    events = await box.fetch(Kind.EVENT, 0, 100, 1 << 20)
    assert [seq for seq, _ in events] == [2, 4]
    assert orjson.loads(events[0][1]) == event(2) | {"seq": 2}
    # every queued seq was acked: the next seq must still not repeat one already used
    assert await box.put(Kind.TELEMETRY, telemetry(5)) == 5
    await box.close()


async def test_sequence_continues_after_everything_was_acked(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=10_000_000)
    for i in range(10):
        await box.put(Kind.TELEMETRY, telemetry(i))
    box.ack(Kind.TELEMETRY, list(range(1, 11)))
    await box.close()
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=10_000_000)
    assert box.stats.records == {"telemetry": 0, "event": 0}
    assert await box.put(Kind.TELEMETRY, telemetry(11)) == 11
    await box.close()


async def test_fetch_respects_cursor_limit_and_bytes(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=10_000_000)
    await asyncio.gather(*(box.put(Kind.TELEMETRY, telemetry(i, pad=100)) for i in range(50)))
    first = await box.fetch(Kind.TELEMETRY, 0, 10, 1 << 20)
    assert [s for s, _ in first] == list(range(1, 11))
    after = await box.fetch(Kind.TELEMETRY, 10, 1000, 1 << 20)
    assert [s for s, _ in after] == list(range(11, 51))
    small = await box.fetch(Kind.TELEMETRY, 0, 1000, 500)
    assert 1 <= len(small) < 5
    await box.close()


async def test_group_commit_batches_concurrent_puts(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=100_000_000)
    seqs = await asyncio.gather(*(box.put(Kind.TELEMETRY, telemetry(i)) for i in range(3000)))
    assert sorted(seqs) == list(range(1, 3001))
    assert box.stats.committed == 3000
    assert box.stats.commits < 100, f"{box.stats.commits} commits for 3000 records: no group commit"
    await box.close()


async def test_budget_thins_telemetry_and_keeps_every_event(tmp_path: Path) -> None:
    budget = 60_000
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=budget)
    for i in range(0, 2000, 20):
        await asyncio.gather(*(box.put(Kind.TELEMETRY, telemetry(j, pad=50)) for j in range(i, i + 20)))
        await box.put(Kind.EVENT, event(i))
    stats = box.stats
    assert stats.bytes <= budget
    assert stats.records["event"] == 100
    assert stats.telemetry_thinned > 0
    assert stats.records["telemetry"] + stats.telemetry_thinned == 2000
    events = await box.fetch(Kind.EVENT, 0, 1000, 1 << 30)
    assert len(events) == 100
    kept = [orjson.loads(p)["values"]["i"] for _, p in await box.fetch(Kind.TELEMETRY, 0, 10_000, 1 << 30)]
    assert len(kept) == stats.records["telemetry"]
    # thinning keeps a coarser picture of the old data instead of a hole: the oldest survivor is old,
    # and the newest records are all still there
    assert min(kept) < 200
    assert kept[-20:] == list(range(1980, 2000))
    await box.close()
    # the counters on disk agree after a reopen
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=budget)
    assert box.stats.records == {"telemetry": len(kept), "event": 100}
    await box.close()


async def test_events_alone_over_budget_are_kept_and_reported(tmp_path: Path, caplog) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=5_000)
    for i in range(100):
        await box.put(Kind.EVENT, event(i))
    assert box.stats.records["event"] == 100
    assert box.stats.events_over_budget
    assert "events alone exceed the disk budget" in caplog.text
    await box.close()


WRITER = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from edugate.gateway.runtime.outbox import Outbox
from edugate.contract.records import Kind

async def main():
    box = await Outbox.open(Path({path!r}), budget_bytes=1 << 30)
    async def one(i):
        seq = await box.put(Kind.EVENT if i % 7 == 0 else Kind.TELEMETRY,
                            {{"kind": "x", "device": "d", "ts": i, "synced": True, "values": {{"i": i}}}})
        sys.stdout.write(f"{{seq}}\\n"); sys.stdout.flush()   # "acknowledged to the device"
    i = 0
    while True:
        await asyncio.gather(*(one(i + k) for k in range(50)))
        i += 50

asyncio.run(main())
"""


def test_kill_9_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    script = WRITER.format(repo=str(REPO), path=str(path))
    acknowledged: set[int] = set()
    rng = random.Random(7)
    for _round in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        deadline = time.monotonic() + rng.uniform(0.5, 1.5)
        first = None
        for line in proc.stdout:
            first = first or int(line)
            acknowledged.add(int(line))
            if time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert first is not None
        # sequence numbers continue from where the previous run left off
        assert first > max((s for s in acknowledged if s < first), default=0)
    conn = sqlite3.connect(path)
    stored = {s for (s,) in conn.execute("SELECT seq FROM telemetry UNION ALL SELECT seq FROM events")}
    conn.close()
    assert len(acknowledged) > 1000
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"


def reading(device: str, i: int) -> dict:
    return telemetry(i) | {"device": device}


async def _staggered_puts(box: Outbox, n: int, gap_s: float) -> list[int]:
    """``n`` devices, one reading each, ``gap_s`` apart (polls finishing one after another)."""
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(box.put(Kind.TELEMETRY, reading(f"dev-{i}", i))))
        await asyncio.sleep(gap_s)
    return list(await asyncio.gather(*tasks))


async def test_readings_arriving_one_by_one_share_commits(tmp_path: Path, monkeypatch) -> None:
    # Scaled up 50x so that a loaded test machine cannot blur it: puts 5 ms apart, gap 50 ms.
    monkeypatch.setattr("edugate.gateway.runtime.outbox.TELEMETRY_GAP_S", 0.05)
    box = await Outbox.open(tmp_path / "w.sqlite", budget_bytes=1 << 30, telemetry_commit_delay_s=2.0)
    assert await _staggered_puts(box, 20, 0.005) == list(range(1, 21))
    assert box.stats.commits <= 3, box.stats.as_dict()  # the first reading goes alone, the rest together
    await box.close()

    no_wait = await Outbox.open(tmp_path / "n.sqlite", budget_bytes=1 << 30, telemetry_commit_delay_s=0)
    await _staggered_puts(no_wait, 20, 0.005)
    assert no_wait.stats.commits >= 10, no_wait.stats.as_dict()  # each reading paid its own commit
    await no_wait.close()


async def test_one_fast_device_awaiting_each_commit_is_not_held(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("edugate.gateway.runtime.outbox.TELEMETRY_GAP_S", 0.05)
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30, telemetry_commit_delay_s=2.0)
    started = time.monotonic()
    for i in range(200):  # held, each would wait 50 ms: 10 s in all
        await box.put(Kind.TELEMETRY, reading("fast", i))
    assert time.monotonic() - started < 5
    await box.close()


async def test_an_event_never_waits_and_takes_held_readings_along(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("edugate.gateway.runtime.outbox.TELEMETRY_GAP_S", 30.0)
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30, telemetry_commit_delay_s=30.0)
    assert await box.put(Kind.TELEMETRY, reading("a", 1)) == 1  # alone: not held
    held = asyncio.create_task(box.put(Kind.TELEMETRY, reading("b", 2)))
    await asyncio.sleep(0.1)
    assert not held.done()  # another device's reading came just before: held for company
    started = time.monotonic()
    tap = await box.put(Kind.EVENT, event(3))
    assert time.monotonic() - started < 5  # not the 30 s the reading could have waited
    assert await held == 2 and tap == 3
    assert box.stats.commits == 2
    await box.close()


async def test_a_held_reading_waits_at_most_the_configured_delay(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("edugate.gateway.runtime.outbox.TELEMETRY_GAP_S", 30.0)
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30, telemetry_commit_delay_s=0.3)
    await box.put(Kind.TELEMETRY, reading("a", 1))
    started = time.monotonic()
    assert await box.put(Kind.TELEMETRY, reading("b", 2)) == 2
    assert 0.25 <= time.monotonic() - started < 10
    await box.close()
