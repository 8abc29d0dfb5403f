"""Linux input event codes a keyboard-wedge reader produces, and the characters they type (US layout).

The numbers are the kernel's (``include/uapi/linux/input-event-codes.h``), the
same as ``evdev.ecodes``; they are kept here so that the decoder, the
simulator and the tests work where python-evdev is not installed (it builds
from source). ``tests/drivers/wedge/test_driver.py`` checks them against
``evdev.ecodes`` whenever evdev is importable.
"""

from __future__ import annotations

from typing import Final

EV_SYN: Final = 0
EV_KEY: Final = 1
EV_MSC: Final = 4
SYN_REPORT: Final = 0
MSC_SCAN: Final = 4

KEY_UP: Final = 0  # EV_KEY values
KEY_DOWN: Final = 1
KEY_REPEAT: Final = 2

KEY_ENTER: Final = 28
KEY_KPENTER: Final = 96
KEY_LEFTSHIFT: Final = 42
KEY_RIGHTSHIFT: Final = 54

DIGIT_KEYS: Final = {"1": 2, "2": 3, "3": 4, "4": 5, "5": 6, "6": 7, "7": 8, "8": 9, "9": 10, "0": 11}
KEYPAD_KEYS: Final = {"7": 71, "8": 72, "9": 73, "4": 75, "5": 76, "6": 77, "1": 79, "2": 80, "3": 81, "0": 82}
LETTER_KEYS: Final = {
    "q": 16, "w": 17, "e": 18, "r": 19, "t": 20, "y": 21, "u": 22, "i": 23, "o": 24, "p": 25,
    "a": 30, "s": 31, "d": 32, "f": 33, "g": 34, "h": 35, "j": 36, "k": 37, "l": 38,
    "z": 44, "x": 45, "c": 46, "v": 47, "b": 48, "n": 49, "m": 50,
}
PUNCTUATION_KEYS: Final = {"-": 12, ".": 52, "/": 53, " ": 57}

ENTER_KEYS: Final = frozenset({KEY_ENTER, KEY_KPENTER})
SHIFT_KEYS: Final = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})

CHARS: Final[dict[int, tuple[str, str | None]]] = {
    **{code: (ch, None) for ch, code in DIGIT_KEYS.items()},
    **{code: (ch, None) for ch, code in KEYPAD_KEYS.items()},
    **{code: (ch, ch.upper()) for ch, code in LETTER_KEYS.items()},
    **{code: (ch, None) for ch, code in PUNCTUATION_KEYS.items()},
}
"""Key code -> (character, character with Shift held; None = Shift makes it a symbol we do not accept)."""

HID_USAGE: Final[dict[int, int]] = {
    **{code: 0x04 + "abcdefghijklmnopqrstuvwxyz".index(ch) for ch, code in LETTER_KEYS.items()},
    **{code: 0x1E + "1234567890".index(ch) for ch, code in DIGIT_KEYS.items()},
    **{code: 0x59 + "1234567890".index(ch) for ch, code in KEYPAD_KEYS.items()},
    KEY_ENTER: 0x28, KEY_KPENTER: 0x58, KEY_LEFTSHIFT: 0xE1, KEY_RIGHTSHIFT: 0xE5,
    12: 0x2D, 52: 0x37, 53: 0x38, 57: 0x2C,
}
"""Key code -> USB HID usage id (keyboard page 0x07); a USB reader reports ``0x70000 + usage`` as MSC_SCAN."""
