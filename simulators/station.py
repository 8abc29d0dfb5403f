"""Simulated library gate and self-check station on a pseudo-terminal, speaking the station line protocol.

Both write real frames (``body*HH\\r\\n``) into a pty whose path the driver
opens, and keep every line the gateway writes back. In a test (one event loop)::

    async with GateSimulator(tmp_path / "ttyGATE") as gate:
        gate.tag("30112000000017", afi="07")      # an item in the gate
        gate.walk_in(); gate.walk_out(2)          # the people counter
        assert await gate.next_line() == "ALARM"
    async with StationSimulator(tmp_path / "ttySC") as station:
        station.card(bytes.fromhex("0A1B2C3D4E")); station.item("30112000000017"); station.done()
        await station.wait_line(lambda line: line == "CUT")

From a shell, for the demo (a gate that sees a few people and items)::

    python -m edugate.simulators.station gate --link /tmp/edugate/ttyGATE --item 30112000000017 --every 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from edugate.drivers.library.station_lines import BadLine, LineDecoder, encode_line
from edugate.simulators.serial_pty import PtyPort

log = logging.getLogger(__name__)


class _LineDevice:
    """A device at the far end of a pty: sends framed lines, collects the gateway's lines."""

    def __init__(self, link: str | Path) -> None:
        self.port = PtyPort(link, on_data=self._on_data)
        self.lines: list[str] = []  # every valid line from the gateway, in order
        self.bad: list[BadLine] = []
        self._decoder = LineDecoder()
        self._read = 0
        self._changed = asyncio.Event()

    @property
    def link(self) -> Path:
        return self.port.link

    async def __aenter__(self) -> Self:
        self.port.plug()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.port.unplug()

    def send(self, body: str) -> None:
        self.port.write(encode_line(body))

    def send_raw(self, data: bytes) -> None:
        self.port.write(data)

    def _on_data(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            (self.bad if isinstance(item, BadLine) else self.lines).append(item)  # type: ignore[arg-type]  # narrowed per list
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_line(self, predicate: Callable[[str], bool], within_s: float = 5.0) -> str:
        """The first line from the gateway (ever received) that matches; waits for it."""
        async with asyncio.timeout(within_s):
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                await self._changed.wait()

    async def next_line(self, within_s: float = 5.0) -> str:
        """The next line not yet taken by ``next_line``."""
        async with asyncio.timeout(within_s):
            while self._read >= len(self.lines):
                await self._changed.wait()
        self._read += 1
        return self.lines[self._read - 1]


class GateSimulator(_LineDevice):
    """An RFID security gate with a people counter."""

    def tag(self, item: str, afi: str = "07") -> None:
        self.send(f"TAG {item} AFI={afi}")

    def walk_in(self, n: int = 1) -> None:
        self.send("IN" if n == 1 else f"IN {n}")

    def walk_out(self, n: int = 1) -> None:
        self.send("OUT" if n == 1 else f"OUT {n}")

    def heartbeat(self) -> None:
        self.send("HB")


class StationSimulator(_LineDevice):
    """A self-check station: card reader, RFID pad, buttons, screen and receipt printer."""

    def card(self, uid: bytes) -> None:
        self.send(f"CARD {uid.hex().upper()}")

    def item(self, item: str) -> None:
        self.send(f"ITEM {item}")

    def scan(self, text: str) -> None:
        self.send(f"SCAN {text}")

    def press_return(self) -> None:
        self.send("RETURN")

    def done(self) -> None:
        self.send("DONE")

    def receipt(self) -> list[str]:
        """The lines of the last complete receipt (PRINT lines before the last CUT)."""
        if "CUT" not in self.lines:
            return []
        end = len(self.lines) - 1 - self.lines[::-1].index("CUT")
        start = end
        while start > 0 and self.lines[start - 1].startswith("PRINT "):
            start -= 1
        return [line[6:] for line in self.lines[start:end]]


async def _gate(args: argparse.Namespace) -> None:
    async with GateSimulator(args.link) as gate:
        print(f"gate simulator on {gate.link} -> {gate.port.slave_path}; Ctrl-C to stop", flush=True)
        rng = random.Random(7)
        while True:
            await asyncio.sleep(args.every)
            gate.walk_in(rng.randint(1, 3)) if rng.random() < 0.6 else gate.walk_out(rng.randint(1, 2))
            if args.item and rng.random() < 0.5:
                gate.tag(rng.choice(args.item), afi=rng.choice(["07", "C2"]))


async def _station(args: argparse.Namespace) -> None:
    async with StationSimulator(args.link) as station:
        print(f"self-check simulator on {station.link} -> {station.port.slave_path}; Ctrl-C to stop", flush=True)
        cards = [bytes.fromhex(c) for c in args.card] or [bytes.fromhex("0A1B2C3D4E")]
        rng = random.Random(11)
        while True:
            await asyncio.sleep(args.every)
            station.card(rng.choice(cards))
            for item in rng.sample(args.item, k=min(len(args.item), 2)) if args.item else []:
                await asyncio.sleep(1)
                station.item(item)
            await asyncio.sleep(1)
            station.done()
            await asyncio.sleep(args.every)
            station.press_return()
            for item in args.item[:2]:
                await asyncio.sleep(1)
                station.item(item)
            station.done()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edugate.simulators.station", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["gate", "selfcheck"])
    parser.add_argument("--link", required=True, help="path the driver opens (its 'port')")
    parser.add_argument("--item", action="append", default=[], help="an item id (repeatable)")
    parser.add_argument("--card", action="append", default=[], help="selfcheck: a card UID in hex (repeatable)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between events (default 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_gate(args) if args.kind == "gate" else _station(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
