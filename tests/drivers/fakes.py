"""What the driver tests share: a fake ``emit`` that answers like the pipeline, and a condition wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from edugate.contract.records import Event, Item, Reading
from tests.helpers import wait_for_async


class FakeEmit:
    """Stands in for the pipeline: keeps every item and answers with a committed record.

    ``delay_s`` is how long "making it durable" takes; ``decision`` is what an access rule would add to a
    tap. ``returned_at`` (monotonic) and ``called_at`` (loop time) let tests check ordering and pacing.
    """

    def __init__(self, *, delay_s: float = 0.0, decision: str | None = None) -> None:
        self.items: list[Item] = []
        self.called_at: list[float] = []
        self.returned_at: list[float] = []
        self.delay_s = delay_s
        self.decision = decision
        self._queue: asyncio.Queue[Item] = asyncio.Queue()

    async def __call__(self, item: Item) -> dict[str, Any]:
        self.called_at.append(asyncio.get_running_loop().time())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # the outbox commit
        self.items.append(item)
        data = dict(item.data) if isinstance(item, Event) else {}
        if self.decision is not None:
            data["decision"] = self.decision
        self.returned_at.append(time.monotonic())
        self._queue.put_nowait(item)
        return {"seq": len(self.items), "data": data}

    async def next(self, within_s: float = 5.0) -> Item:
        async with asyncio.timeout(within_s):
            return await self._queue.get()

    def fresh(self) -> None:
        """Forget what ``next`` has not returned yet."""
        while not self._queue.empty():
            self._queue.get_nowait()

    @property
    def events(self) -> list[Event]:
        return [i for i in self.items if isinstance(i, Event)]

    def taps(self) -> list[Event]:
        return [i for i in self.events if i.type == "card_tap"]

    @property
    def readings(self) -> list[tuple[float, Reading]]:
        """(loop time of the call, reading) for every reading."""
        return [(t, i) for t, i in zip(self.called_at, self.items, strict=True) if isinstance(i, Reading)]


async def until(condition: Callable[[], Any], what: str = "the condition", within_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds, checked every 5 ms (driver health has no change notification to
    await), or fail naming ``what``. The suite's one wait helper (``tests.helpers.wait_for_async``), with the
    argument order and the short interval the driver tests use."""
    await wait_for_async(condition, within_s, what, interval=0.005)
