"""The card reader base: pseudonym at once, debounce, and feedback only after the tap is durable."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import orjson

from edugate.common.privacy import Pseudonymizer
from edugate.contract.records import Kind
from edugate.drivers.base import DriverContext
from edugate.drivers.card_reader import CardRead, CardReaderConfig, CardReaderDriver, Outcome
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.access import AccessControl, AllowList

UID = bytes.fromhex("04A22B1C")


class QueueReaderConfig(CardReaderConfig):
    driver: Literal["queue-reader"] = "queue-reader"


class QueueReader(CardReaderDriver[QueueReaderConfig]):
    """A reader whose 'hardware' is a queue of card reads; it records what the outbox held at each signal."""

    config_model = QueueReaderConfig

    def __init__(self, config: QueueReaderConfig, outbox_path: Path) -> None:
        super().__init__(config)
        self.queue: asyncio.Queue[CardRead] = asyncio.Queue()
        self.signals: list[tuple[Outcome, int]] = []
        self.signalled = asyncio.Event()
        self.outbox_path = outbox_path

    async def reads(self) -> AsyncIterator[CardRead]:
        while True:
            yield await self.queue.get()

    async def signal(self, outcome: Outcome) -> None:
        conn = sqlite3.connect(self.outbox_path)  # what a power cut right now would leave on disk
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
        conn.close()
        self.signals.append((outcome, count))
        self.signalled.set()


async def test_feedback_comes_after_the_tap_is_on_disk_and_holds_no_uid(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30)
    pseudonym = Pseudonymizer(b"k" * 32)
    access = AccessControl(tmp_path / "allow.json", {"door": "lab-1"})
    access.replace(AllowList(version=1, lists={"*": [pseudonym(UID)]}))
    pipe = Pipeline(box, Clock("always"), {"door": "lab-1"}, rules=[access.stage])
    reader = QueueReader(QueueReaderConfig(id="door", role="door", debounce_s=5), tmp_path / "o.sqlite")
    reader.ctx = DriverContext(pseudonymize=pseudonym)
    task = asyncio.create_task(reader.run(pipe.submit))
    for uid in (UID, UID, bytes.fromhex("04FFFFFF")):
        await reader.queue.put(CardRead(uid, "iso14443a"))
    async with asyncio.timeout(5):
        while len(reader.signals) < 2:
            await reader.signalled.wait()
            reader.signalled.clear()
    task.cancel()
    assert reader.signals == [("allow", 1), ("deny", 2)], "signal after commit; the repeat was debounced"
    assert reader.health.counters == {"taps": 2, "debounced": 1}
    rows = [orjson.loads(p) for _, p in await box.fetch(Kind.EVENT, 0, 10, 1 << 20)]
    assert [r["data"]["card"] for r in rows] == [pseudonym(UID), pseudonym(bytes.fromhex("04FFFFFF"))]
    assert "04a22b1c" not in repr(CardRead(UID, "x")).lower()
    await box.close()


async def test_a_refused_tap_signals_error(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30)
    pipe = Pipeline(box, Clock("always"), {})  # the reader is not configured: the pipeline refuses its taps
    reader = QueueReader(QueueReaderConfig(id="door"), tmp_path / "o.sqlite")
    reader.ctx = DriverContext(pseudonymize=Pseudonymizer(b"k" * 32))
    assert await reader.tap(CardRead(UID, "em4100"), pipe.submit) == "error"
    assert reader.signals == [("error", 0)] and reader.health.error_count == 1
    await box.close()

