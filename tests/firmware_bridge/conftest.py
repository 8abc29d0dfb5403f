"""Fixtures: the reference node on a pty, and the gateway's end of the line (the drivers' serial port code)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edugate.drivers.serial_link import PortLost, SerialLink
from edugate.firmware_bridge.host.session import KitSession
from edugate.simulators.kit_node import KitNodeProcess


@pytest.fixture
def make_kit(tmp_path: Path) -> Iterator[Callable[..., KitNodeProcess]]:
    kits: list[KitNodeProcess] = []

    def make(**kwargs: Any) -> KitNodeProcess:
        n = len(kits)
        kit = KitNodeProcess(tmp_path / f"ttyKIT{n}", tmp_path / f"kit{n}-state", **kwargs)
        kits.append(kit)
        return kit

    yield make
    for kit in kits:
        kit.close()


class Problems(list[tuple[str, str]]):
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self]


@asynccontextmanager
async def gateway_end(kit: KitNodeProcess) -> AsyncIterator[tuple[KitSession, Problems]]:
    """Open the kit's serial line as the gateway does, with a session pumping it."""
    link = SerialLink(str(kit.link), 115200)
    link.open()
    problems = Problems()
    session = KitSession(link, on_problem=lambda kind, msg: problems.append((kind, msg)))
    pump = asyncio.create_task(session.pump(0.5))
    try:
        yield session, problems
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, PortLost):
            await pump
        link.close()
