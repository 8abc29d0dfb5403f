"""A simulated 125 kHz EM4100 reader (RDM6300-style) on a pseudo-terminal.

It sends what the real reader sends: ``STX``, 10 upper-case hex characters
(the 5-byte UID), 2 hex characters of checksum (XOR of the 5 bytes), ``ETX``;
and it can misbehave on demand. In a test (one event loop)::

    async with EM4100Simulator(tmp_path / "ttyRFID") as sim:   # the driver opens that path
        sim.tap(bytes.fromhex("0A1B2C3D4E"))        # one frame
        await sim.hold(uid, 0.5)                    # repeated frames while the card stays
        sim.send_bad_checksum(uid); sim.send_garbled(uid); sim.send_partial(uid); sim.send_garbage()
        sim.unplug(); sim.replug()                  # same path, a new pty underneath

From a shell (a reader that shows a few cards in turn, for the demo)::

    python -m edugate.simulators.em4100 --link /tmp/edugate/ttyRFID --card 0A1B2C3D4E --card 0F00BA4411 --every 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Literal

from edugate.simulators.serial_pty import PtyDevice, PtyPort

log = logging.getLogger(__name__)

STX, ETX = b"\x02", b"\x03"
Framing = Literal["rdm6300", "crlf", "id12"]
"""``rdm6300``: STX data ETX. ``crlf``: the same followed by CR LF. ``id12``: STX data CR LF ETX (ID-12/ID-20)."""


def checksum(uid: bytes) -> int:
    """XOR of the 5 UID bytes."""
    value = 0
    for b in uid:
        value ^= b
    return value


def frame_text(uid: bytes, check: int | None = None) -> bytes:
    """The 12 ASCII hex characters between STX and ETX (``check`` overrides the checksum)."""
    if len(uid) != 5:
        raise ValueError(f"an EM4100 UID is 5 bytes, got {len(uid)}")
    value = checksum(uid) if check is None else check
    return (uid.hex() + f"{value:02x}").upper().encode("ascii")


def encode_frame(uid: bytes, framing: Framing = "rdm6300", *, check: int | None = None) -> bytes:
    """One whole frame as the reader sends it."""
    text = frame_text(uid, check)
    if framing == "id12":
        return STX + text + b"\r\n" + ETX
    frame = STX + text + ETX
    return frame + b"\r\n" if framing == "crlf" else frame


class EM4100Simulator(PtyDevice):
    """An RDM6300-style reader behind ``link`` (a symlink to the current pty; the driver's ``port``)."""

    def __init__(self, link: str | Path, *, framing: Framing = "rdm6300", repeat_interval_s: float = 0.1) -> None:
        self.port = PtyPort(link)
        self.framing: Framing = framing
        self.repeat_interval_s = repeat_interval_s
        self.frames_sent = 0
        self._holding: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        await self.release()
        self.port.unplug()

    # ------------------------------------------------------------ cards

    def tap(self, uid: bytes, *, repeats: int = 1) -> None:
        """Present a card briefly: ``repeats`` frames back to back (a quick tap gives 1 to 3)."""
        for _ in range(repeats):
            self._send_frame(encode_frame(uid, self.framing))

    async def hold(self, uid: bytes, seconds: float) -> None:
        """Keep a card in the field for ``seconds``: one frame every ``repeat_interval_s``."""
        self.present(uid)
        await asyncio.sleep(seconds)
        await self.release()

    def present(self, uid: bytes) -> None:
        """Put a card on the reader and leave it there (frames repeat) until :meth:`release`."""
        if self._holding is not None:
            self._holding.cancel()
        frame = encode_frame(uid, self.framing)
        self._holding = asyncio.get_running_loop().create_task(self._repeat(frame), name="em4100-sim-hold")

    async def release(self) -> None:
        """Take the held card away."""
        task, self._holding = self._holding, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _repeat(self, frame: bytes) -> None:
        while True:
            self._send_frame(frame)
            await asyncio.sleep(self.repeat_interval_s)

    def _send_frame(self, frame: bytes) -> None:
        if self.port.write(frame):
            self.frames_sent += 1

    # ------------------------------------------------------------ faults

    def send_raw(self, data: bytes) -> None:
        """Any bytes at all."""
        self.port.write(data)

    def send_bad_checksum(self, uid: bytes) -> None:
        """A well-formed frame whose checksum characters are wrong."""
        self.port.write(encode_frame(uid, self.framing, check=checksum(uid) ^ 0x5A))

    def send_garbled(self, uid: bytes, position: int = 4) -> None:
        """A frame with a non-hex character at ``position`` (1..12), as line noise makes."""
        text = bytearray(frame_text(uid))
        text[position - 1] = ord("?")
        self.port.write(STX + bytes(text) + ETX)

    def send_partial(self, uid: bytes, chars: int = 7) -> None:
        """STX and the first ``chars`` characters, then nothing (the card left mid-frame)."""
        self.port.write(STX + frame_text(uid)[:chars])

    def send_garbage(self, data: bytes = b"\x17\xff\x80 noise \x9c\x01") -> None:
        """Bytes outside any frame (no STX in the default), e.g. from a wrong baudrate or a loose wire."""
        self.port.write(data)

    def unplug(self) -> None:
        """Pull the USB cable: the driver reads end-of-file and the path vanishes."""
        if self._holding is not None:
            self._holding.cancel()
            self._holding = None
        self.port.unplug()

    def replug(self) -> None:
        """Plug the reader back in: a new pty under the same path."""
        self.port.replug()


# ---------------------------------------------------------------- command line


async def _serve(args: argparse.Namespace) -> None:
    cards = [bytes.fromhex(c) for c in args.card] or [bytes.fromhex("0A1B2C3D4E")]
    async with EM4100Simulator(args.link, framing=args.framing) as sim:
        print(f"EM4100 reader simulator on {sim.link} -> {sim.port.slave_path}; Ctrl-C to stop", flush=True)
        while True:
            for uid in cards:
                await asyncio.sleep(args.every)
                await sim.hold(uid, args.hold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edugate.simulators.em4100", description=__doc__.split("\n")[0])
    parser.add_argument("--link", required=True, help="path the driver opens (its 'port'), e.g. /tmp/edugate/ttyRFID")
    parser.add_argument("--card", action="append", default=[], help="a 5-byte UID in hex (repeatable)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between taps (default 5)")
    parser.add_argument("--hold", type=float, default=0.3, help="how long each card stays (default 0.3 s)")
    parser.add_argument("--framing", choices=["rdm6300", "crlf", "id12"], default="rdm6300")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
