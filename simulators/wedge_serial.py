"""A simulated USB desk reader switched to its virtual serial port (USB CDC), on a pseudo-terminal.

Such a reader sends, per card, the text it would type as a keyboard wedge, then CR LF: the UID in hex, or as a
decimal number (in card or reversed byte order, a fixed number of digits), or a barcode's text. The driver is
``wedge`` with ``source: serial`` (docs/drivers/wedge-wiegand.md). In a test (one event loop)::

    async with WedgeSerialSimulator(tmp_path / "ttyDESK", format="decimal", byte_order="little") as desk:
        desk.tap(bytes.fromhex("04A22B1C"))     # "0472621572\\r\\n"
        desk.send_line("not a card"); desk.send_raw(b"\\x00\\xff"); desk.send_partial("0472")
        desk.unplug(); desk.replug()            # same path, a new pty underneath

From a shell (a desk reader that shows a few cards in turn)::

    edugate sim wedge-serial --link /tmp/edugate/ttyDESK --card 04A22B1C --format hex --every 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from edugate.simulators.serial_pty import PtyDevice, PtyPort

WedgeFormat = Literal["hex", "decimal"]
ByteOrder = Literal["big", "little"]


def card_text(uid: bytes, format: WedgeFormat = "hex", byte_order: ByteOrder = "big") -> str:
    """What a reader sends for card ``uid`` (in card order): upper-case hex, or a decimal number of the bytes
    in ``byte_order`` padded to as many digits as the largest number of that many bytes has (10 for 4 bytes)."""
    if format == "hex":
        return uid.hex().upper()
    width = len(str(256 ** len(uid) - 1))
    return str(int.from_bytes(uid, byte_order)).zfill(width)


class WedgeSerialSimulator(PtyDevice):
    """A desk reader in serial mode behind ``link`` (a symlink to the current pty; the driver's ``port``)."""

    def __init__(self, link: str | Path, *, format: WedgeFormat = "hex", byte_order: ByteOrder = "big",
                 terminator: bytes = b"\r\n", uid_bytes: int | None = None, family: str = "nfc") -> None:
        self.port = PtyPort(link)
        self.format: WedgeFormat = format
        self.byte_order: ByteOrder = byte_order
        self.terminator = terminator
        self.uid_bytes = uid_bytes
        self.family = family
        self.lines_sent = 0

    @classmethod
    def for_device(cls, link: str | Path, device: Mapping[str, Any]) -> WedgeSerialSimulator:
        """The reader a gateway config's ``wedge`` device entry describes (format, byte order, width, family)."""
        identity = device.get("card_identity") or {}
        return cls(link, format=device.get("format", "hex"), byte_order=device.get("byte_order", "big"),
                   uid_bytes=device.get("uid_bytes"), family=identity.get("family", "nfc"))

    def reads(self, uid: bytes) -> bool:
        """Whether this reader reads card ``uid`` whole: its family (EM4100 IDs are 5 bytes) and, for a decimal
        reader with a fixed width, that width."""
        if (len(uid) == 5) != (self.family == "prox"):
            return False
        return self.format != "decimal" or self.uid_bytes is None or len(uid) == self.uid_bytes

    def tap(self, uid: bytes) -> None:
        """A card on the reader: its number as the reader is set to send it, one line."""
        self.send_line(card_text(uid, self.format, self.byte_order))

    def send_line(self, text: str) -> None:
        """Any text and the terminator (a barcode, or a line that is not a card)."""
        if self.port.write(text.encode("ascii") + self.terminator):
            self.lines_sent += 1

    def send_raw(self, data: bytes) -> None:
        """Any bytes at all (line noise, a wrong baudrate)."""
        self.port.write(data)

    def send_partial(self, text: str) -> None:
        """The start of a line, never ended (the cable pulled mid-line)."""
        self.port.write(text.encode("ascii"))

    def unplug(self) -> None:
        """Pull the USB cable: the driver reads end-of-file and the path vanishes."""
        self.port.unplug()

    def replug(self) -> None:
        """Plug the reader back in: a new pty under the same path."""
        self.port.replug()


async def _serve(args: argparse.Namespace) -> None:
    cards = [bytes.fromhex(c) for c in args.card] or [bytes.fromhex("04A22B1C")]
    async with WedgeSerialSimulator(args.link, format=args.format, byte_order=args.byte_order) as sim:
        print(f"serial desk reader simulator on {sim.link} -> {sim.port.slave_path}; Ctrl-C to stop", flush=True)
        while True:
            for uid in cards:
                await asyncio.sleep(args.every)
                sim.tap(uid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edugate.simulators.wedge_serial",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--link", required=True, help="path the driver opens (its 'port'), e.g. /tmp/edugate/ttyDESK")
    parser.add_argument("--card", action="append", default=[], help="a UID in hex, card order (repeatable)")
    parser.add_argument("--format", choices=["hex", "decimal"], default="hex")
    parser.add_argument("--byte-order", choices=["big", "little"], default="big")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between taps (default 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
