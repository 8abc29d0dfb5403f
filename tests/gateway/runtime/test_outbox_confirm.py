"""The outbox side of the end-to-end acknowledgement: central's confirmed seq ranges delete exactly those records,
the outbox remembers that central confirms, and records the broker acknowledged but central has not confirmed
still count toward the disk budget and may be thinned (counted apart), while records in flight never are."""

from __future__ import annotations

from pathlib import Path

from edugate.contract.records import Kind
from edugate.gateway.runtime.outbox import Outbox
from tests.gateway.test_outbox_budget import outage, queued, reading
from tests.helpers import wait_for_async


async def seqs(box: Outbox, kind: Kind) -> list[int]:
    return [seq for seq, _ in await box.fetch(kind, 0, 1_000_000, 1 << 40)]


async def test_confirmed_ranges_are_deleted_and_central_confirms_is_remembered(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = await Outbox.open(path, budget_bytes=10_000_000)
    assert not box.central_confirms
    for n in range(10):  # seqs 1..10: telemetry, but 4 and 8 are events
        kind = Kind.EVENT if n in (3, 7) else Kind.TELEMETRY
        await box.put(kind, reading("lab-co2", n) if kind is Kind.TELEMETRY else
                      {"kind": "event", "device": "door-1", "ts": 1, "synced": True, "type": "card_tap", "data": {}})
    box.confirm(Kind.TELEMETRY, [(1, 5), (9, 9)])  # telemetry 1-3, 5 and 9 stored; the event 4 is not touched
    await box.put(Kind.TELEMETRY, reading("lab-co2", 10))  # the confirmation goes into this (or an earlier) commit
    assert await seqs(box, Kind.TELEMETRY) == [6, 7, 10, 11]
    assert await seqs(box, Kind.EVENT) == [4, 8]
    assert box.stats.confirmed == 5 and box.stats.acked == 0 and box.stats.records == {"telemetry": 4, "event": 2}
    assert await box.oldest(Kind.TELEMETRY) == 6 and await box.oldest(Kind.EVENT) == 4
    await box.close()
    box = await Outbox.open(path, budget_bytes=10_000_000)
    assert box.central_confirms  # persisted: a restarted gateway keeps waiting for confirmations
    # a resend reads only up to a seq, and leaves the bookkeeping of what is in flight alone
    assert [s for s, _ in await box.fetch(Kind.TELEMETRY, 0, 100, 1 << 20, upto=7)] == [6, 7]
    await box.close()


async def test_unconfirmed_records_count_toward_the_budget_and_are_thinned_but_not_those_in_flight(
        tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = await Outbox.open(path, budget_bytes=1 << 20)
    # 20 minutes of readings while central's worker is down: the uplink sent them all (the broker PUBACKed them),
    # nothing was confirmed. The last 100 are still in flight.
    await outage(box, 1200, path)
    await wait_for_async(lambda: not box.thinning, 30, "the pass under way to finish")
    sent = await box.fetch(Kind.TELEMETRY, 0, 10_000_000, 1 << 40)
    last = sent[-1][0]
    box.handed(sent[-101][0])
    in_flight = {seq for seq, _ in sent[-100:]}
    await outage(box, 2400, path)  # 40 minutes more: over the budget
    await wait_for_async(lambda: not box.thinning, 30, "the pass under way to finish")
    left = {r["seq"] for r in await queued(box, Kind.TELEMETRY)}
    assert in_flight <= left  # in flight: never thinned (it may arrive centrally: it is not counted as thinned)
    assert box.stats.telemetry_thinned > 0 and box.stats.thinned_unconfirmed > 0
    assert box.stats.thinned_unconfirmed == len({s for s, _ in sent[:-100]} - left)  # counted apart, exactly
    assert box.stats.bytes <= box.data_target
    assert sum(1 for s in left if s <= last) < len(sent)  # thinned evenly, as any backlog
    await box.close()
