"""The shared serial link on a real pseudo-terminal: quiet spells reach the driver, stale input is dropped."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.drivers.serial_link import PortLost, SerialLink, decoded


class Lines:
    """A tiny line decoder (the :class:`StreamDecoder` protocol)."""

    def __init__(self) -> None:
        self.buffer = b""

    @property
    def pending(self) -> bool:
        return False

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return lines

    def flush(self, quiet_s: float) -> list[bytes]:
        return []


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A pty's master fd and a symlink naming its slave, as /dev/serial/by-id/... names an adapter."""
    master, slave = os.openpty()
    link = tmp_path / "ttyTEST"
    link.symlink_to(os.ttyname(slave))
    try:
        yield master, link
    finally:
        os.close(slave)
        os.close(master)


async def test_quiet_spells_call_on_quiet_and_input_from_before_is_dropped(pty: tuple[int, Path]) -> None:
    master, path = pty
    link = SerialLink(str(path), 9600)
    link.open()
    try:
        os.write(master, b"stale\n")
        await asyncio.sleep(0.05)  # let the line discipline hand the bytes to the slave side
        link.discard_input()
        quiet = asyncio.Event()
        items = decoded(link, Lines(), 0.02, idle_s=0.02, on_quiet=quiet.set)
        first = asyncio.create_task(anext(items))
        async with asyncio.timeout(5):
            await quiet.wait()  # nothing arrived: the driver got control anyway
        os.write(master, b"fresh\n")
        async with asyncio.timeout(5):
            assert await first == b"fresh"
        path.unlink()  # the adapter's name vanishes (unplugged)
        with pytest.raises(PortLost, match="vanished"):
            async with asyncio.timeout(5):
                await anext(items)
    finally:
        link.close()


async def test_decoded_refuses_a_zero_wait(pty: tuple[int, Path]) -> None:
    link = SerialLink(str(pty[1]), 9600)
    with pytest.raises(ValueError, match="idle_s"):
        await anext(decoded(link, Lines(), 0.5, idle_s=0))
