"""Students tapping their cards at simulated readers (EM4100, PN532, serial desk readers over ptys), for the demo
and benchmarks.

Runs the reader simulators on its own event loop in a thread, so synchronous
code (the demo) can start it and carry on::

    flow = StudentFlow({"gate-in": ("em4100", "/tmp/d/ttyGATE"), "c10a": ("pn532", "/tmp/d/ttyC10A")},
                       cards=StudentFlow.make_cards(30), every_s=1.5)
    flow.start(); ...; flow.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from pathlib import Path
from typing import Any, Literal

from edugate.simulators.em4100 import EM4100Simulator
from edugate.simulators.pn532 import PN532Simulator
from edugate.simulators.wedge_serial import WedgeSerialSimulator

ReaderKind = Literal["em4100", "pn532", "wedge"]
Simulator = EM4100Simulator | PN532Simulator | WedgeSerialSimulator


class StudentFlow:
    def __init__(self, readers: dict[str, tuple[ReaderKind, str | Path]], cards: list[bytes], *,
                 every_s: float = 2.0, seed: int | None = None,
                 wedges: dict[str, dict[str, Any]] | None = None) -> None:
        """``wedges``: per ``wedge`` reader, its gateway config entry (format, byte order, width, family)."""
        self.readers = readers
        self.wedges = wedges or {}
        self.cards = cards
        self.every_s = every_s
        self.rng = random.Random(seed)
        self.taps = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    @staticmethod
    def make_cards(n: int, seed: int = 7) -> list[bytes]:
        """``n`` card UIDs: 5-byte EM4100 numbers and 4-/7-byte ISO 14443A UIDs, mixed."""
        rng = random.Random(seed)
        return [bytes([rng.randrange(256) for _ in range((5, 4, 7)[i % 3])]) for i in range(n)]

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stopping = asyncio.Event()
            loop.run_until_complete(self._run(ready))
            loop.close()

        self._thread = threading.Thread(target=main, name="student-flow", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _run(self, ready: threading.Event) -> None:
        sims: dict[str, Simulator] = {}
        for name, (kind, link) in self.readers.items():
            sim: Simulator
            if kind == "wedge":
                sim = WedgeSerialSimulator.for_device(link, self.wedges.get(name, {}))
            else:
                sim = EM4100Simulator(link) if kind == "em4100" else PN532Simulator(link)
            await sim.start()
            sims[name] = sim
        ready.set()
        assert self._stopping is not None
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.rng.expovariate(1 / self.every_s))
                if self._stopping.is_set():
                    break
                name = self.rng.choice(list(sims))
                await self.tap(sims[name])
        finally:
            for sim in sims.values():
                await sim.stop()

    async def tap(self, sim: Simulator) -> None:
        """A student whose card suits this reader (125 kHz EM4100: 5 bytes; NFC: 4 or 7) taps it."""
        if isinstance(sim, WedgeSerialSimulator):
            sim.tap(self.rng.choice([c for c in self.cards if sim.reads(c)]))
            self.taps += 1
            return
        em = isinstance(sim, EM4100Simulator)
        card = self.rng.choice([c for c in self.cards if (len(c) == 5) == em])
        if isinstance(sim, EM4100Simulator):
            sim.tap(card, repeats=self.rng.randint(1, 3))
        else:
            sim.present_card(card)
            await asyncio.sleep(0.4)  # a card held to an NFC reader for a moment
            sim.remove_card()
        self.taps += 1
