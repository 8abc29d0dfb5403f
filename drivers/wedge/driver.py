"""USB keyboard-wedge card and barcode readers, read through Linux evdev.

A wedge reader is a USB keyboard: it "types" the card number (or a barcode)
and presses Enter. The driver opens the reader's own input device
(``/dev/input/by-id/usb-...-event-kbd``) and grabs it, so the keystrokes reach
this driver only, never a console or a logged-in desktop. Key-down events
become characters (US layout: digits, letters with Shift for upper case, a
little punctuation); Enter ends a read. Per ``format`` a read becomes the UID
bytes: ``hex`` (``04A22B1C`` -> 4 bytes), ``decimal`` (``0077736732`` -> the
integer's bytes, optionally fixed width and byte order) or ``text`` (the
characters as bytes: library barcodes).

Many USB desk readers can instead be switched to a virtual serial port (USB
CDC ACM, ``/dev/ttyACM0``) and then send the same text as lines (``source:
serial``): :class:`LineDecoder` cuts the byte stream at CR or LF into the same
text a keyboard read gives, read through :mod:`edugate.drivers.serial_link`
(reopened with back-off like the other serial readers).

Layers, lowest first: an :class:`EventSource` yields raw ``(type, code,
value)`` input events; :class:`KeyDecoder` turns them into the text of one
read; :func:`interpret` turns that text into UID bytes;
:class:`WedgeDriver` owns reopening with back-off. Tests replace only the
event source (``simulators.wedge.FakeKeyboard``); everything above is real.
Nothing here logs what was typed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field, model_validator

from edugate.common.ratelimit import LimitedLog
from edugate.drivers.base import Backoff, Outage, SerialPortPath
from edugate.drivers.card_reader import CardRead, CardReaderConfig, CardReaderDriver
from edugate.drivers.serial_link import ReopeningPort, decoded
from edugate.drivers.wedge import evdev_keys as keys

log = logging.getLogger(__name__)

InputEvent = tuple[int, int, int]
"""One raw input event: (type, code, value), as in ``struct input_event``."""

MAX_READ_CHARS = 128
"""A read longer than this without Enter is not a card: the decoder gives up on it."""

CONTROL_KEYS = {1: "Esc", 14: "Backspace", 15: "Tab", 58: "CapsLock", 111: "Delete"}
"""Keys worth naming in an error: they point at a reader configured to send the wrong terminator."""


class WedgeConfig(CardReaderConfig):
    """A USB keyboard-wedge card or barcode reader."""

    # old names, still read (issue 19)
    renamed: ClassVar[Mapping[str, str]] = {"backoff_max_s": "reopen_max_s"}

    driver: Literal["wedge"]
    source: Literal["keyboard", "serial"] = Field("keyboard", description="'keyboard': the reader types (evdev, "
                                                  "device_path); 'serial': the reader is set to a virtual serial "
                                                  "port (USB CDC) and sends the same text as lines (port).")
    device_path: str | None = Field(None, pattern=r"^/", description="source: keyboard: the reader's input "
                                    "device; use the stable name, e.g. /dev/input/by-id/usb-<vendor>_<model>-event-kbd "
                                    "(see docs/drivers/wedge-wiegand.md).")
    port: SerialPortPath | None = Field(None, description="source: serial: the reader's serial port, best the "
                                        "stable name /dev/serial/by-id/usb-<vendor>_<model>-if00.")
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = Field(
        9600, description="source: serial: line speed in bit/s (a USB CDC port ignores it; a UART reader does not).")
    format: Literal["hex", "decimal", "text"] = Field("hex", description="How the reader types a card: 'hex' "
                                                      "digits, a 'decimal' number, or 'text' (barcodes).")
    uid_bytes: int | None = Field(None, ge=1, le=16, description="decimal only: the UID's width in bytes (e.g. 4), "
                                  "so leading zero bytes survive; default: as few bytes as the number needs.")
    byte_order: Literal["big", "little"] = Field("big", description="decimal only: 'little' if the reader prints "
                                                 "the UID bytes in reverse order (many 125 kHz/13.56 MHz wedges do).")
    read_lengths: list[int] | None = Field(None, min_length=1, description="Accepted lengths of a read in "
                                           "characters (e.g. [8, 10]); anything else is rejected as garbled.")
    key_timeout_s: float = Field(0.5, gt=0, le=10, description="A read not ended by Enter (serial: CR or LF) within "
                                 "this time of its last key is dropped (a reader types a whole card in well under "
                                 "0.1 s).")
    grab: bool = Field(True, description="Take the reader exclusively so that its keystrokes reach no console.")
    reopen_max_s: float = Field(10.0, ge=0.01, le=3600, description="Longest wait between attempts to reopen a "
                                 "missing reader.")

    @model_validator(mode="after")
    def _check_source(self) -> WedgeConfig:
        if self.source == "keyboard":
            if self.device_path is None:
                raise ValueError("device_path is required with source: keyboard (the reader's input device, "
                                 "e.g. /dev/input/by-id/usb-<vendor>_<model>-event-kbd)")
            if self.port is not None:
                raise ValueError("port applies to source: serial only (a keyboard reader has a device_path)")
        else:
            if self.port is None:
                raise ValueError("port is required with source: serial (the reader's serial port, e.g. "
                                 "/dev/serial/by-id/usb-<vendor>_<model>-if00)")
            if self.device_path is not None:
                raise ValueError("device_path applies to source: keyboard only (a serial reader has a port)")
        return self

    @property
    def path(self) -> str:
        """Where the reader is: its input device, or its serial port."""
        return (self.device_path if self.source == "keyboard" else self.port) or "?"

    @model_validator(mode="after")
    def _check_lengths(self) -> WedgeConfig:
        for i, n in enumerate(self.read_lengths or ()):
            if not 1 <= n <= MAX_READ_CHARS:
                raise ValueError(f"read_lengths[{i}]: {n} is not between 1 and {MAX_READ_CHARS}")
        if self.format != "decimal" and (self.uid_bytes is not None or self.byte_order != "big"):
            raise ValueError("uid_bytes and byte_order apply to format: decimal only")
        return self


class BadRead(ValueError):
    """A read the driver rejects. ``reason`` is a short counter name; the message never holds the read itself."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------- the lowest layer: raw input events


class EventSource(Protocol):
    """Raw input events of one opened device. Iterating raises OSError when the device goes away."""

    def __aiter__(self) -> AsyncIterator[InputEvent]: ...

    def close(self) -> None: ...


SourceFactory = Callable[[str], EventSource]
"""Opens the device at a path (raising OSError if it cannot) and returns its event source."""


def _import_evdev() -> Any:
    try:
        import evdev  # optional: only gateways with a wedge reader need it
    except ImportError as exc:
        raise ImportError("the wedge driver needs python-evdev: install python3-evdev (Debian/Raspberry Pi OS) "
                          "or pip install evdev") from exc
    return evdev


class EvdevSource:
    """Input events from a real device through python-evdev (imported only when a reader is opened)."""

    def __init__(self, device: Any) -> None:
        self._device = device

    @classmethod
    def open(cls, path: str, *, grab: bool = True) -> EvdevSource:
        """Open (and by default grab) the input device at ``path``; OSError if missing, busy or not permitted."""
        evdev = _import_evdev()
        device = evdev.InputDevice(path)
        if grab:
            try:
                device.grab()
            except OSError:
                device.close()
                raise
        return cls(device)

    def __aiter__(self) -> AsyncIterator[InputEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[InputEvent]:
        async for event in self._device.async_read_loop():
            yield (event.type, event.code, event.value)

    def close(self) -> None:
        try:
            self._device.ungrab()
        except OSError:
            pass  # not grabbed, or the device is already gone
        try:
            self._device.close()
        except OSError:
            pass


# ---------------------------------------------------------------- events -> text -> UID bytes


class KeyDecoder:
    """Turns key events into the text of one read (the characters before Enter). Pure: no I/O, no clock."""

    def __init__(self) -> None:
        self._chars: list[str] = []
        self._shift: set[int] = set()
        self._spoiled: BadRead | None = None

    @property
    def pending(self) -> bool:
        """True while a read has started but not yet ended with Enter."""
        return bool(self._chars) or self._spoiled is not None

    def reset(self) -> None:
        """Forget a read in progress (the Shift state is physical and stays)."""
        self._chars = []
        self._spoiled = None

    def feed(self, type_: int, code: int, value: int) -> str | None:
        """Feed one event; returns the read's text when Enter ends it. Raises :class:`BadRead` for a bad read."""
        if type_ != keys.EV_KEY:
            return None  # EV_SYN, EV_MSC scan codes, LEDs
        if code in keys.SHIFT_KEYS:
            if value == keys.KEY_DOWN:
                self._shift.add(code)
            elif value == keys.KEY_UP:
                self._shift.discard(code)
            return None
        if value != keys.KEY_DOWN:
            return None  # releases and auto-repeat
        if code in keys.ENTER_KEYS:
            return self._finish()
        if self._spoiled is not None:
            return None
        if len(self._chars) >= MAX_READ_CHARS:
            self._spoil("too_long", f"more than {MAX_READ_CHARS} keys without Enter")
            return None
        plain, shifted = keys.CHARS.get(code, (None, None))
        char = shifted if self._shift else plain
        if char is None:
            name = CONTROL_KEYS.get(code)
            what = f"the {name} key" if name else ("a key with Shift held" if plain else "a key it does not accept")
            self._spoil("unexpected_key", f"the reader typed {what} (key code {code if name else 'withheld'})")
            return None
        self._chars.append(char)
        return None

    def _spoil(self, reason: str, message: str) -> None:
        self._spoiled = BadRead(reason, message)

    def _finish(self) -> str:
        spoiled, text = self._spoiled, "".join(self._chars)
        self.reset()
        if spoiled is not None:
            raise spoiled
        if not text:
            raise BadRead("empty", "Enter without any characters before it")
        return text


class LineDecoder:
    """Turns a serial reader's byte stream into the text of each read: the printable characters before CR or LF
    (CR LF counts once). A :class:`BadRead` in the output is a line rejected (too long, a control or non-ASCII
    byte, cut off), given as soon as the line is spoiled; the rest of a spoiled line is skipped up to the next CR or
    LF, and every further :data:`MAX_READ_CHARS` bytes skipped count as one more bad read (a stream of garbage that
    never ends a line is counted, not silently swallowed). Pure: no I/O, no clock (the caller flushes after a quiet
    spell)."""

    def __init__(self) -> None:
        self._chars = bytearray()
        self._skipped: int | None = None
        """Bytes skipped of a spoiled line since it was last reported; None while no line is spoiled."""

    @property
    def pending(self) -> bool:
        return bool(self._chars) or self._skipped is not None

    def feed(self, data: bytes) -> list[str | BadRead]:
        out: list[str | BadRead] = []
        for b in data:
            if b in (0x0D, 0x0A):
                if self._chars:
                    out.append(self._chars.decode("ascii"))
                    self._chars.clear()
                self._skipped = None  # the LF of CR LF, a blank line, or the end of a spoiled line
            elif self._skipped is not None:
                self._skipped += 1
                if self._skipped >= MAX_READ_CHARS:
                    out.append(BadRead("too_long", f"{MAX_READ_CHARS} more characters without CR or LF "
                                       "(garbage on the line, or a wrong baudrate?)"))
                    self._skipped = 0
            elif len(self._chars) >= MAX_READ_CHARS:
                out.append(self._spoil(BadRead("too_long", f"more than {MAX_READ_CHARS} characters without CR or LF")))
            elif 0x20 <= b < 0x7F:
                self._chars.append(b)
            else:
                out.append(self._spoil(BadRead("unexpected_byte", f"the reader sent a control or non-ASCII byte at "
                                               f"position {len(self._chars) + 1} (wrong baudrate, or a binary "
                                               "protocol?)")))
        return out

    def flush(self, quiet_s: float) -> list[str | BadRead]:
        cut = bool(self._chars)
        self._chars.clear()
        self._skipped = None  # a spoiled line was reported when it was spoiled
        if not cut:
            return []
        return [BadRead("incomplete", f"a read was not ended by CR or LF within {quiet_s:g} s and was dropped")]

    def _spoil(self, bad: BadRead) -> BadRead:
        self._chars.clear()
        self._skipped = 0
        return bad


HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def interpret(text: str, cfg: WedgeConfig) -> bytes:
    """The UID bytes of one read, per the reader's ``format``. Raises :class:`BadRead` (without the text)."""
    if cfg.read_lengths is not None and len(text) not in cfg.read_lengths:
        raise BadRead("bad_length", f"read of {len(text)} characters; this reader sends "
                      f"{' or '.join(map(str, cfg.read_lengths))}")
    if cfg.format == "text":
        return text.encode("ascii")
    if cfg.format == "hex":
        wrong = sum(ch not in HEX_DIGITS for ch in text)
        if wrong:
            raise BadRead("not_hex", f"{wrong} of {len(text)} characters are not hex digits "
                          "(is the reader set to decimal or another output mode?)")
        return bytes.fromhex(text.zfill(len(text) + len(text) % 2))
    wrong = sum(not ch.isdigit() for ch in text)
    if wrong:
        raise BadRead("not_decimal", f"{wrong} of {len(text)} characters are not decimal digits "
                      "(is the reader set to hex output?)")
    number = int(text)
    width = cfg.uid_bytes or max(1, (number.bit_length() + 7) // 8)
    if number.bit_length() > 8 * width:
        raise BadRead("too_big", f"the number needs more than uid_bytes={width} bytes")
    return number.to_bytes(width, cfg.byte_order)


# ---------------------------------------------------------------- the driver


class WedgeDriver(CardReaderDriver[WedgeConfig]):
    """Reads cards (or barcodes) from a keyboard-wedge reader. ``source_factory`` replaces evdev in tests."""

    config_model = WedgeConfig

    def __init__(self, config: WedgeConfig, *, source_factory: SourceFactory | None = None) -> None:
        super().__init__(config)
        self._factory = source_factory or self._open_evdev
        self._source: EventSource | None = None
        self.outage = Outage(self.health, log, config.id, health_text="{message}",
                             down_text="{where}: wedge reader offline: {message} (retrying)",
                             up_text="{where}: wedge reader {path} is back after {down:.1f} s", counter="disconnects")
        self._limited = LimitedLog(log, burst=5, window_s=60.0)
        """Rejected reads: a reader sending garbage (a wrong baudrate) must not flood the journal."""
        self.port: ReopeningPort | None = None
        if config.source == "serial" and config.port is not None:
            self.port = ReopeningPort(config.port, config.baudrate, reopen_max_s=config.reopen_max_s,
                                      down=self._lost, lost="reader disconnected")

    def _open_evdev(self, path: str) -> EventSource:
        return EvdevSource.open(path, grab=self.config.grab)

    async def reads(self) -> AsyncIterator[CardRead]:
        reads = self._keyboard_reads() if self.port is None else self._serial_reads(self.port)
        async for read in reads:
            yield read

    async def _serial_reads(self, port: ReopeningPort) -> AsyncIterator[CardRead]:
        """Lines from the reader's serial port, the port reopened with back-off when it is missing or lost."""
        while True:
            async with port.session() as link:
                self._back()
                port.working()
                async for item in decoded(link, LineDecoder(), self.config.key_timeout_s):
                    if isinstance(item, BadRead):
                        self._bad(item)
                        continue
                    if (read := self._card(item)) is not None:
                        yield read

    def _card(self, text: str) -> CardRead | None:
        try:
            uid = interpret(text, self.config)
        except BadRead as exc:
            self._bad(exc)
            return None
        return CardRead(uid=uid, technology="barcode" if self.config.format == "text" else "keyboard")

    async def _keyboard_reads(self) -> AsyncIterator[CardRead]:
        cfg = self.config
        path = cfg.path
        backoff = Backoff(first=min(0.5, cfg.reopen_max_s), cap=cfg.reopen_max_s)
        while True:
            try:
                self._source = self._factory(path)
            except (OSError, ImportError) as exc:
                self._lost(f"cannot open {path}: {_reason(exc)}")
                await backoff.sleep()
                continue
            self._back()
            backoff.reset()
            try:
                async for read in self._reads_from(self._source):
                    yield read
                self._lost(f"{path}: the event stream ended")
            except OSError as exc:
                self._lost(f"lost {path}: {_reason(exc)}")
            finally:
                self._close_source()
            await backoff.sleep()

    async def _reads_from(self, source: EventSource) -> AsyncIterator[CardRead]:
        decoder = KeyDecoder()
        loop = asyncio.get_running_loop()
        last_key = loop.time()
        async for type_, code, value in source:
            if type_ != keys.EV_KEY:
                continue
            now = loop.time()
            if decoder.pending and now - last_key > self.config.key_timeout_s:
                decoder.reset()
                self._bad(BadRead("incomplete", f"a read was not ended by Enter within "
                                  f"{self.config.key_timeout_s:g} s and was dropped"))
            last_key = now
            try:
                text = decoder.feed(type_, code, value)
                if text is None:
                    continue
                uid = interpret(text, self.config)
            except BadRead as exc:
                self._bad(exc)
                continue
            del text
            yield CardRead(uid=uid, technology="barcode" if self.config.format == "text" else "keyboard")

    def _bad(self, exc: BadRead) -> None:
        self.health.count("bad_reads")
        self.health.count(f"bad_reads.{exc.reason}")
        self.health.error(f"read rejected: {exc}", offline=False)
        self._limited.warning("%s: wedge reader %s: read rejected: %s", self.device_id, self.config.path, exc,
                              key=exc.reason)

    def _lost(self, what: str) -> None:
        self.outage.down(what)

    def _back(self) -> None:
        self.outage.up(path=self.config.path)

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.close()
        if self.port is not None:
            self.port.close()

    async def close(self) -> None:
        self._close_source()


def _reason(exc: BaseException) -> str:
    """An OSError's text without the path (the message already names it)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (" (no permission: see docs/drivers/wedge-wiegand.md, udev rule)"
                               if exc.errno == 13 else "")
    return str(exc)
