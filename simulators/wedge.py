"""A simulated USB keyboard-wedge reader at the evdev event layer.

:class:`FakeKeyboard` stands in for the kernel's input device: the driver's
``source_factory`` opens it by path, and what it "types" arrives as the exact
event sequence a USB HID reader produces (per key: ``EV_MSC/MSC_SCAN`` with the
HID usage, ``EV_KEY`` down, ``EV_SYN``, then the same for the release; Shift
around upper-case letters; Enter at the end). It can be unplugged (open
sources fail with ENODEV, opening fails with ENOENT) and plugged back in.

In a test (one event loop)::

    kb = FakeKeyboard("/dev/input/by-id/usb-ACME_Reader-event-kbd")
    driver = WedgeDriver(cfg, source_factory=kb.open)
    ...
    await kb.wait_open()
    kb.type("04A22B1C")        # a card
    kb.press(keys.KEY_TAB)     # a stray key; then kb.type("") sends just Enter
    kb.unplug(); kb.plug()
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Iterable

from edugate.drivers.wedge import evdev_keys as keys
from edugate.drivers.wedge.driver import InputEvent
from edugate.simulators.fake_device import PluggableDevice

_CODES: dict[str, tuple[int, bool]] = {
    **{ch: (code, False) for ch, code in keys.DIGIT_KEYS.items()},
    **{ch: (code, False) for ch, code in keys.LETTER_KEYS.items()},
    **{ch.upper(): (code, True) for ch, code in keys.LETTER_KEYS.items()},
    **{ch: (code, False) for ch, code in keys.PUNCTUATION_KEYS.items()},
}
"""Character -> (key code, needs Shift), US layout."""


def key_stroke(code: int, value: int) -> list[InputEvent]:
    """One key going down (1) or up (0), as a USB keyboard reports it: scan code, key, sync."""
    events: list[InputEvent] = []
    usage = keys.HID_USAGE.get(code)
    if usage is not None:
        events.append((keys.EV_MSC, keys.MSC_SCAN, 0x70000 + usage))
    events.append((keys.EV_KEY, code, value))
    events.append((keys.EV_SYN, keys.SYN_REPORT, 0))
    return events


def press_events(*codes: int) -> list[InputEvent]:
    """Press and release each key in turn."""
    return [e for code in codes for value in (keys.KEY_DOWN, keys.KEY_UP) for e in key_stroke(code, value)]


def typing_events(text: str, *, enter: bool = True, keypad: bool = False) -> list[InputEvent]:
    """The events a reader sends to type ``text`` (then Enter). ``keypad`` types digits on the numeric keypad."""
    events: list[InputEvent] = []
    for ch in text:
        if keypad and ch in keys.KEYPAD_KEYS:
            code, shift = keys.KEYPAD_KEYS[ch], False
        else:
            try:
                code, shift = _CODES[ch]
            except KeyError:
                raise ValueError(f"a wedge reader cannot type {ch!r}") from None
        if shift:
            events += key_stroke(keys.KEY_LEFTSHIFT, keys.KEY_DOWN)
        events += press_events(code)
        if shift:
            events += key_stroke(keys.KEY_LEFTSHIFT, keys.KEY_UP)
    if enter:
        events += press_events(keys.KEY_KPENTER if keypad else keys.KEY_ENTER)
    return events


class FakeEventSource:
    """One opened fake device: what :class:`FakeKeyboard` sends, in order, until it is unplugged or closed."""

    def __init__(self, keyboard: FakeKeyboard) -> None:
        self._keyboard = keyboard
        self._queue: asyncio.Queue[InputEvent | OSError] = asyncio.Queue()
        self.closed = False

    def put(self, item: InputEvent | OSError) -> None:
        self._queue.put_nowait(item)

    def __aiter__(self) -> AsyncIterator[InputEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[InputEvent]:
        while not self.closed:
            item = await self._queue.get()
            if isinstance(item, OSError):
                raise item
            yield item

    def close(self) -> None:
        self.closed = True
        self._keyboard._closed(self)


class FakeKeyboard(PluggableDevice["FakeEventSource"]):
    """The reader and its device node. ``open`` is the driver's ``source_factory``."""

    def __init__(self, path: str = "/dev/input/by-id/usb-EduGate_Fake_Reader-event-kbd") -> None:
        super().__init__()
        self.path = path

    # ------------------------------------------------------------ the kernel side

    def open(self, path: str) -> FakeEventSource:
        """Open the device node like ``InputDevice(path)``: ENOENT when the path is wrong or unplugged."""
        if path != self.path or not self.plugged:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return self._attach(FakeEventSource(self))

    # ------------------------------------------------------------ the reader side

    def send(self, events: Iterable[InputEvent]) -> None:
        """Deliver raw events to every open source. With nobody reading, the kernel drops them; so do we."""
        events = list(events)
        for source in self._open:
            for event in events:
                source.put(event)

    def type(self, text: str, *, enter: bool = True, keypad: bool = False) -> None:
        """Type ``text`` and Enter, as the reader does for a card or a barcode."""
        self.send(typing_events(text, enter=enter, keypad=keypad))

    def press(self, *codes: int) -> None:
        """Press and release raw keys (for garbled sequences)."""
        self.send(press_events(*codes))

