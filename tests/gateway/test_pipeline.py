"""The pipeline: validation with clear reasons, enrichment, hooks, durability before return."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from edugate.contract.records import Event, Kind, Reading, Rejected
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline


@pytest.fixture
async def pipeline(tmp_path: Path):
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30)
    yield Pipeline(box, Clock("always"), {"lab1-th": "lab-1", "door-1": None})
    await box.close()


async def stored(p: Pipeline, kind: Kind) -> list[dict]:
    return [orjson.loads(payload) for _, payload in await p.outbox.fetch(kind, 0, 1000, 1 << 30)]


async def test_reading_is_enriched_and_durable_when_submit_returns(pipeline: Pipeline) -> None:
    committed = await pipeline.submit(Reading("lab1-th", {"temperature_c": 21.5, "ok": True}, ts=1_700_000_000.123))
    [record] = await stored(pipeline, Kind.TELEMETRY)
    assert record == committed
    assert record == {"seq": 1, "kind": "telemetry", "device": "lab1-th", "room": "lab-1",
                      "ts": 1_700_000_000_123, "synced": True, "values": {"temperature_c": 21.5, "ok": True}}


async def test_event_without_room_and_clock_flag(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30)
    p = Pipeline(box, Clock("never"), {"door-1": None})
    await p.submit(Event("door-1", "door_opened", {"by": "button"}))
    [record] = await stored(p, Kind.EVENT)
    assert "room" not in record
    assert record["synced"] is False
    assert record["type"] == "door_opened" and record["data"] == {"by": "button"}
    await box.close()


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (Reading("ghost", {"x": 1}), "'ghost': not a configured device"),
        (Reading("lab1-th", {"x": math.nan}), "x = nan is not a finite number"),
        (Reading("lab1-th", {"bad key": 1}), "value name 'bad key' must match"),
        (Reading("lab1-th", {}), "needs at least one value"),
        (Reading("lab1-th", {"x": [1, 2]}), "x has unsupported type list"),
        (Reading("lab1-th", {"x": 1}, ts=-5), "timestamp -5 is not a positive Unix time"),
        (Event("door-1", "Card Tap"), "event type 'Card Tap' must match"),
    ],
)
async def test_invalid_items_are_rejected_with_the_reason_and_counted(pipeline: Pipeline, item, reason) -> None:
    with pytest.raises(Rejected, match=None) as info:
        await pipeline.submit(item)
    assert reason in str(info.value)
    assert pipeline.stats.rejected == 1
    assert await stored(pipeline, Kind.TELEMETRY) == [] and await stored(pipeline, Kind.EVENT) == []
    # the pipeline keeps working after a rejection
    await pipeline.submit(Reading("lab1-th", {"x": 1}))
    assert len(await stored(pipeline, Kind.TELEMETRY)) == 1


async def test_hook_stages_can_transform_and_drop(pipeline: Pipeline) -> None:
    def scale(record: dict) -> dict:
        if "values" in record:
            record["values"] = {k: v * 10 for k, v in record["values"].items()}
        return record

    def drop_door(record: dict) -> dict | None:
        return None if record["device"] == "door-1" else record

    pipeline.rules.extend([scale, drop_door])
    assert await pipeline.submit(Event("door-1", "x")) is None
    await pipeline.submit(Reading("lab1-th", {"v": 2}))
    assert [r["values"] for r in await stored(pipeline, Kind.TELEMETRY)] == [{"v": 20}]
    assert await stored(pipeline, Kind.EVENT) == []
    assert pipeline.stats.dropped_by_stage == 1
