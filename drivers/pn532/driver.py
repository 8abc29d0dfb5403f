"""13.56 MHz NFC cards (ISO/IEC 14443 type A: MIFARE Classic, Ultralight, NTAG, DESFire...) through a PN532.

The PN532 board talks HSU (its UART, 115200 bit/s 8N1, set by the board's
mode switches) to a USB-UART adapter or the Pi's UART. The driver is the host:

1. wake the PN532 (``55 55 00 .. 00``) and send SAMConfiguration (normal mode);
2. ask GetFirmwareVersion (logged once, so IT staff see the board answers);
3. RFConfiguration MaxRetries, so that a poll with no card returns at once;
4. poll with InListPassiveTarget (one target, 106 kbps type A) every
   ``poll_interval_s``; each card found is a read (4-, 7- or 10-byte UID).

Each command is answered by an ACK frame, then the response frame (see
:mod:`drivers.pn532_codec`). A bad frame (checksum, truncated, NACK, error
frame) is logged once, counted and skipped; the next poll goes on. When the
PN532 stops answering (``3`` exchanges in a row fail) or the port goes away,
the device is OFFLINE and the driver reopens the port and starts again with
back-off. A card held on the reader is found at every poll: the base class
counts it once within ``debounce_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Literal

from pydantic import Field

from edugate.drivers.card_reader import CardRead
from edugate.drivers.pn532 import codec as codec
from edugate.drivers.serial_link import IDLE_CHECK_S, PortLost, SerialLink
from edugate.drivers.serial_reader import SerialCardReader, SerialReaderConfig

__all__ = ["PN532Config", "PN532Driver"]

log = logging.getLogger(__name__)

MAX_FAILURES = 3
"""Exchanges in a row that may fail (no answer, bad frame) before the reader is declared offline and restarted."""

PASSIVE_ACTIVATION_RETRIES = 0x02
"""RFConfiguration MaxRetries: how often the PN532 retries to find a card per InListPassiveTarget (0xFF=forever)."""

COMMAND_NAMES = {
    codec.GET_FIRMWARE_VERSION: "GetFirmwareVersion",
    codec.SAM_CONFIGURATION: "SAMConfiguration",
    codec.RF_CONFIGURATION: "RFConfiguration",
    codec.IN_LIST_PASSIVE_TARGET: "InListPassiveTarget",
}

HINT_SILENT = ("check that the board is in HSU (UART) mode, that its TX goes to the adapter's RX and RX to TX, "
               "that it has power, and the baudrate")


class ExchangeFailed(Exception):
    """One command/answer exchange failed. ``kind`` names how (for counters), the message says what and where."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class NoAnswer(ExchangeFailed):
    """Nothing came back in time."""


class BadAnswer(ExchangeFailed):
    """Something came back, but not a valid answer (checksum, truncated, NACK, error frame, wrong code)."""


class PN532Config(SerialReaderConfig):
    """A PN532 NFC reader board wired in HSU (UART) mode."""

    driver: Literal["pn532"]
    baudrate: Literal[9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600] = Field(
        115200, description="Line speed in bit/s; the PN532's HSU starts at 115200.")
    poll_interval_s: float = Field(0.1, ge=0.01, le=10, description="Pause between two looks for a card; "
                                   "a tap is seen within about this time.")
    timeout_s: float = Field(0.5, ge=0.05, le=10, description="How long to wait for each ACK and each answer.")


class PN532Driver(SerialCardReader[PN532Config]):
    """Polls a PN532 over its UART for ISO/IEC 14443 type A cards."""

    config_model = PN532Config
    technology = "iso14443a"

    def __init__(self, config: PN532Config) -> None:
        super().__init__(config)
        self._splitter = codec.FrameSplitter()
        self.firmware: codec.Firmware | None = None

    async def reads(self) -> AsyncIterator[CardRead]:
        while True:
            async with self.port.session() as link:
                try:
                    await self._start(link)
                    self._online(f"{self.firmware}, {self.config.baudrate} bit/s")
                    async with contextlib.aclosing(self._poll(link)) as uids:
                        async for uid in uids:
                            yield CardRead(uid, self.technology)
                except ExchangeFailed as exc:
                    self._offline(str(exc))

    # ------------------------------------------------------------ start-up and polling

    async def _start(self, link: SerialLink) -> None:
        """Wake the PN532 and set it up; raises :class:`ExchangeFailed` if it does not answer properly."""
        self._splitter.clear()
        try:
            link.write(codec.WAKEUP)
            await self._exchange(link, codec.SAM_CONFIGURATION, bytes([codec.SAM_NORMAL_MODE, 0x14, 0x01]))
        except ExchangeFailed:  # a PN532 just powered up may miss the first command; one more try
            await self._drain(link)
            link.write(codec.WAKEUP)
            try:
                await self._exchange(link, codec.SAM_CONFIGURATION, bytes([codec.SAM_NORMAL_MODE, 0x14, 0x01]))
            except NoAnswer as exc:
                raise NoAnswer(exc.kind, f"PN532 not answering: {exc} ({HINT_SILENT})") from None
        params = await self._exchange(link, codec.GET_FIRMWARE_VERSION)
        try:
            self.firmware = codec.parse_firmware(params or b"")
        except codec.ResponseError as exc:
            raise BadAnswer("bad_response", f"bad GetFirmwareVersion answer: {exc}") from None
        await self._exchange(link, codec.RF_CONFIGURATION,
                             bytes([codec.RF_ITEM_MAX_RETRIES, 0xFF, 0x01, PASSIVE_ACTIVATION_RETRIES]))

    async def _poll(self, link: SerialLink) -> AsyncGenerator[bytes, None]:
        """Look for a card every ``poll_interval_s``; yields the UID of each card found."""
        failures = 0
        loop = asyncio.get_running_loop()
        checked_at = loop.time()
        while True:
            if loop.time() - checked_at >= IDLE_CHECK_S:  # the name may now point at another adapter
                checked_at = loop.time()
                if why := link.vanished():
                    raise PortLost(why)
            try:
                targets = await self._list_targets(link)
            except ExchangeFailed as exc:
                failures += 1
                counter = "timeouts" if isinstance(exc, NoAnswer) else "bad_frames"
                self._problem(exc.kind, str(exc), counter)
                if failures >= MAX_FAILURES:
                    raise type(exc)(exc.kind, f"PN532 not answering properly: {failures} exchanges in a row "
                                              f"failed, the last with: {exc}") from None
                await self._drain(link)
                continue
            failures = 0
            self.health.count("polls")
            for target in targets:
                yield target.uid
            await asyncio.sleep(self.config.poll_interval_s)

    async def _list_targets(self, link: SerialLink) -> list[codec.Target]:
        params = await self._exchange(link, codec.IN_LIST_PASSIVE_TARGET, bytes([1, codec.BRTY_ISO14443A]),
                                      abortable=True)
        if params is None:
            return []
        try:
            return codec.parse_target_list(params)
        except codec.ResponseError as exc:
            raise BadAnswer("bad_response", f"bad InListPassiveTarget answer: {exc}") from None

    # ------------------------------------------------------------ one exchange

    async def _exchange(self, link: SerialLink, code: int, params: bytes = b"", *,
                        abortable: bool = False) -> bytes | None:
        """Send a command, expect ACK then the answer; returns the answer's parameters.

        With ``abortable``, an ACK with no answer in time is not a failure: the
        command is aborted (the host sends ACK) and None is returned.
        """
        name = COMMAND_NAMES.get(code, f"command 0x{code:02X}")
        stale = self._splitter.clear()
        if stale:
            self.health.count("stale_bytes", stale)
            log.debug("%s: %d stale bytes dropped before %s", self.where, stale, name)
        link.write(codec.command(code, params))
        ack = await self._frame(link, f"ACK to {name}")
        if ack.kind != "ack":
            what = {"nack": "a NACK", "error": "an error frame", "info": "an answer"}[ack.kind]
            raise BadAnswer(f"no_ack_{ack.kind}", f"{what} instead of the ACK to {name}")
        try:
            frame = await self._frame(link, f"answer to {name}")
        except NoAnswer:
            if not abortable:
                raise
            link.write(codec.ACK)  # abort the pending command
            self.health.count("polls_aborted")
            log.debug("%s: no answer to %s after its ACK; aborted", self.where, name)
            return None
        if frame.kind == "error":
            raise BadAnswer("error_frame", f"the PN532 answered {name} with an error frame (it rejected the command)")
        if frame.kind != "info":
            raise BadAnswer("unexpected", f"{frame.kind.upper()} instead of the answer to {name}")
        if frame.tfi != codec.PN532_TO_HOST:
            raise BadAnswer("bad_tfi", f"answer to {name} has TFI 0x{frame.tfi or 0:02X}, expected 0xD5")
        if frame.code != code + 1:
            raise BadAnswer("wrong_code", f"answer code 0x{frame.code or 0:02X} to {name}, expected 0x{code + 1:02X}")
        return frame.params

    async def _frame(self, link: SerialLink, what: str) -> codec.Frame:
        """The next frame from the PN532 within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        timeout = self.config.timeout_s
        deadline = loop.time() + timeout
        while True:
            junk = self._splitter.junk
            raw = self._splitter.next()
            if self._splitter.junk != junk:
                self.health.count("junk_bytes", self._splitter.junk - junk)
            if raw is not None:
                try:
                    return codec.parse_frame(raw)
                except codec.FrameError as exc:
                    raise BadAnswer(exc.kind, f"bad {what}: {exc}") from None
            remaining = deadline - loop.time()
            if remaining <= 0:
                got = self._splitter.pending
                if got:
                    need = self._splitter.expected
                    self._splitter.clear()
                    of = f"of {need} " if need else ""
                    raise BadAnswer("truncated", f"truncated {what}: {got} bytes {of}arrived, then nothing "
                                                 f"for {timeout:g} s")
                raise NoAnswer("no_ack" if what.startswith("ACK") else "no_answer", f"no {what} within {timeout:g} s")
            data = await link.read(remaining)
            if data:
                self._splitter.feed(data)

    async def _drain(self, link: SerialLink) -> None:
        """After a bad exchange: drop whatever is still coming until the line is quiet, to start clean."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        dropped = self._splitter.clear()
        while loop.time() < deadline:
            data = await link.read(min(0.02, max(0.0, deadline - loop.time())))
            if not data:
                break
            dropped += len(data)
        if dropped:
            log.debug("%s: %d bytes dropped to resynchronise", self.where, dropped)
