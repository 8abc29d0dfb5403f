"""A PN532 emulator on a pseudo-terminal: answers the host's frames byte-exactly, as a board in HSU mode.

It starts asleep (``asleep=False`` to start awake): it ignores everything until
the HSU wake-up ``55 55 00 ..``, as a PN532 in power-down does; a host that
always wakes the chip first works with both. It ACKs
every valid host frame and answers SAMConfiguration, GetFirmwareVersion,
RFConfiguration and InListPassiveTarget (106 kbps type A, 0 or 1 card in the
field); anything else gets the error frame, like the chip's syntax error. A
host frame with a bad checksum gets no ACK; a host NACK repeats the last
answer; a host ACK (abort) is accepted. In a test (one event loop)::

    async with PN532Simulator(tmp_path / "ttyNFC") as sim:   # the driver opens that path
        sim.present_card(bytes.fromhex("04A1B2C3"))          # 4-, 7- or 10-byte UIDs
        sim.remove_card()
        sim.inject(Fault.BAD_DCS)                            # the next answer; see Fault
        sim.inject(Fault.SILENCE, count=None); sim.clear()   # until cleared
        sim.unplug(); sim.replug()                           # same path, a new pty, asleep again

From a shell: ``python -m edugate.simulators.pn532 --link /tmp/edugate/ttyNFC --card 04A1B2C3 --every 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from enum import StrEnum
from pathlib import Path

from edugate.drivers.pn532 import codec as codec
from edugate.simulators.serial_pty import PtyDevice, PtyPort

log = logging.getLogger(__name__)

WAKE_BYTE = 0x55
DEFAULT_FIRMWARE = bytes([0x32, 0x01, 0x06, 0x07])  # PN532, firmware 1.6, ISO 14443A + B + ISO 18092


class Fault(StrEnum):
    """What the emulator does wrong to the next command(s) instead of answering well."""

    BAD_DCS = "bad_dcs"  # ACK, then the answer with a wrong data checksum
    BAD_LCS = "bad_lcs"  # ACK, then the answer with a wrong length checksum
    NACK = "nack"  # a NACK instead of the ACK, and no answer
    ERROR_FRAME = "error_frame"  # ACK, then the error frame instead of the answer
    TRUNCATED = "truncated"  # ACK, then the first half of the answer only
    NO_ANSWER = "no_answer"  # ACK, then nothing (as a PN532 still searching for a card)
    SILENCE = "silence"  # nothing at all, not even the ACK


def default_card_bytes(uid: bytes) -> tuple[bytes, int]:
    """Typical SENS_RES (ATQA) and SEL_RES (SAK) for a UID size: MIFARE Classic 1K, Ultralight/NTAG, 10-byte."""
    if len(uid) == 4:
        return b"\x00\x04", 0x08
    if len(uid) == 7:
        return b"\x00\x44", 0x00
    if len(uid) == 10:
        return b"\x00\x84", 0x00
    raise ValueError(f"an ISO 14443A UID is 4, 7 or 10 bytes, got {len(uid)}")


class PN532Simulator(PtyDevice):
    """A PN532 board behind ``link`` (a symlink to the current pty; the driver's ``port``)."""

    def __init__(self, link: str | Path, *, firmware: bytes = DEFAULT_FIRMWARE, asleep: bool = True) -> None:
        self.port = PtyPort(link, on_data=self._on_data)
        self.firmware = firmware
        self.start_asleep = asleep
        self.asleep = asleep
        self.sam_configured = False
        self.received: list[codec.Frame] = []  # every valid command frame from the host, in order
        self.raw_received = bytearray()  # every byte from the host (since the last plug)
        self.polls = 0
        self.wakeups = 0
        self.aborts = 0
        self.bad_host_frames = 0
        self._card: bytes | None = None
        self._splitter = codec.FrameSplitter()
        self._faults: list[tuple[Fault, int | None]] = []
        self._last_answer = b""
        self._polled = asyncio.Event()

    async def start(self) -> None:
        self._reset()
        self.port.plug()

    def _reset(self) -> None:
        self.asleep = self.start_asleep
        self.sam_configured = False
        self.raw_received.clear()
        self._splitter.clear()
        self._last_answer = b""

    # ------------------------------------------------------------ the card in the field

    def present_card(self, uid: bytes, *, sens_res: bytes | None = None, sel_res: int | None = None,
                     ats: bytes = b"") -> None:
        """Put a card in the field (until :meth:`remove_card`). ``ats`` for an ISO 14443-4 card (SAK bit 0x20)."""
        default_sens, default_sel = default_card_bytes(uid)
        sel = default_sel if sel_res is None else sel_res
        if ats:
            sel |= 0x20
        self._card = ((sens_res or default_sens) + bytes([sel, len(uid)]) + uid + ats)

    def remove_card(self) -> None:
        self._card = None

    # ------------------------------------------------------------ faults and the cable

    def inject(self, fault: Fault, count: int | None = 1) -> None:
        """Misbehave for the next ``count`` commands (``None``: until :meth:`clear`)."""
        self._faults.append((fault, count))

    def clear(self) -> None:
        self._faults.clear()

    def unplug(self) -> None:
        """Pull the cable: the driver reads end-of-file and the path vanishes."""
        self.port.unplug()

    def replug(self) -> None:
        """Plug it back in: a new pty under the same path, and a PN532 that is asleep and unconfigured again."""
        self.port.unplug()
        self._reset()
        self.port.plug()

    async def wait_polls(self, n: int, within_s: float = 5.0) -> None:
        """Wait until the host has sent ``n`` InListPassiveTarget commands in all."""
        async with asyncio.timeout(within_s):
            while self.polls < n:
                self._polled.clear()
                await self._polled.wait()

    def _take_fault(self) -> Fault | None:
        if not self._faults:
            return None
        fault, count = self._faults[0]
        if count is not None:
            if count <= 1:
                self._faults.pop(0)
            else:
                self._faults[0] = (fault, count - 1)
        return fault

    # ------------------------------------------------------------ bytes from the host

    def _on_data(self, data: bytes) -> None:
        self.raw_received += data
        if self.asleep:
            at = data.rfind(bytes([WAKE_BYTE]))
            if at < 0:
                return  # asleep: ignore everything until the wake-up
            self.asleep = False
            self.wakeups += 1
            data = data[at + 1:]
        self._splitter.feed(data)
        while (raw := self._splitter.next()) is not None:
            self._handle(raw)

    def _handle(self, raw: bytes) -> None:
        try:
            frame = codec.parse_frame(raw)
        except codec.FrameError as exc:
            self.bad_host_frames += 1  # a PN532 does not ACK a frame it cannot read
            log.debug("pn532 sim: bad host frame ignored: %s", exc)
            return
        if frame.kind == "ack":
            self.aborts += 1
            return
        if frame.kind == "nack":
            self.port.write(self._last_answer)
            return
        if frame.kind != "info" or frame.tfi != codec.HOST_TO_PN532:
            self.bad_host_frames += 1
            return
        self.received.append(frame)
        if frame.code == codec.IN_LIST_PASSIVE_TARGET:
            self.polls += 1
            self._polled.set()
        fault = self._take_fault()
        if fault is Fault.SILENCE:
            return
        if fault is Fault.NACK:
            self.port.write(codec.NACK)
            return
        self.port.write(codec.ACK)
        if fault is Fault.NO_ANSWER:
            return
        answer = self._answer(frame)
        if fault is Fault.ERROR_FRAME:
            answer = codec.ERROR_FRAME
        elif fault is Fault.BAD_DCS:
            answer = answer[:-2] + bytes([(answer[-2] + 1) & 0xFF]) + answer[-1:]
        elif fault is Fault.BAD_LCS:
            answer = answer[:4] + bytes([answer[4] ^ 0x01]) + answer[5:]
        elif fault is Fault.TRUNCATED:
            answer = answer[:len(answer) // 2]
        self._last_answer = answer
        self.port.write(answer)

    def _answer(self, frame: codec.Frame) -> bytes:
        code, params = frame.code, frame.params
        if code == codec.GET_FIRMWARE_VERSION:
            return codec.response(code, self.firmware)
        if code == codec.SAM_CONFIGURATION:
            if not 1 <= len(params) <= 3 or not 1 <= params[0] <= 4:
                return codec.ERROR_FRAME
            self.sam_configured = True
            return codec.response(code)
        if code == codec.RF_CONFIGURATION:
            return codec.response(code) if params else codec.ERROR_FRAME
        if code == codec.IN_LIST_PASSIVE_TARGET:
            if len(params) != 2 or params[0] not in (1, 2) or params[1] != codec.BRTY_ISO14443A:
                return codec.ERROR_FRAME  # this emulator knows 106 kbps type A only
            if self._card is None:
                return codec.response(code, b"\x00")
            return codec.response(code, b"\x01\x01" + self._card)
        return codec.ERROR_FRAME


# ---------------------------------------------------------------- command line


async def _serve(args: argparse.Namespace) -> None:
    cards = [bytes.fromhex(c) for c in args.card] or [bytes.fromhex("04A1B2C3")]
    async with PN532Simulator(args.link) as sim:
        print(f"PN532 simulator on {sim.link} -> {sim.port.slave_path}; Ctrl-C to stop", flush=True)
        while True:
            for uid in cards:
                await asyncio.sleep(args.every)
                sim.present_card(uid)
                await asyncio.sleep(args.hold)
                sim.remove_card()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edugate.simulators.pn532", description=__doc__.split("\n")[0])
    parser.add_argument("--link", required=True, help="path the driver opens (its 'port'), e.g. /tmp/edugate/ttyNFC")
    parser.add_argument("--card", action="append", default=[], help="a 4-, 7- or 10-byte UID in hex (repeatable)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between taps (default 5)")
    parser.add_argument("--hold", type=float, default=0.5, help="how long each card stays (default 0.5 s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
