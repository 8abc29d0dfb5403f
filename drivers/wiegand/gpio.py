"""GPIO through the Linux character device (libgpiod v2 Python bindings), imported only when used.

:class:`GpioOutput` is what a driver needs to drive an output (a reader's LED or
beeper line); :class:`GpiodOutput` implements it on real hardware, and tests
use a fake that records transitions (``simulators.wiegand.FakeGpioOutput``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

CONSUMER = "edugate"
"""The consumer name shown by ``gpioinfo`` for lines the gateway holds."""


def import_gpiod() -> Any:
    """The ``gpiod`` module (v2 API), or an ImportError that says how to install it."""
    try:
        import gpiod  # optional: only gateways with GPIO-wired devices need it
    except ImportError as exc:
        raise ImportError("GPIO needs the libgpiod v2 Python bindings: pip install 'gpiod>=2' "
                          "(or Debian trixie's python3-libgpiod)") from exc
    if not hasattr(gpiod, "request_lines"):
        raise ImportError(f"gpiod {getattr(gpiod, '__version__', '?')} is the v1 API; EduGate needs v2: "
                          "pip install 'gpiod>=2'")
    return gpiod


class GpioOutput(Protocol):
    """Output lines held by one driver. ``set`` raises OSError when the chip is gone."""

    def set(self, line: int, active: bool) -> None: ...

    def close(self) -> None: ...


class GpiodOutput:
    """Output lines on one GPIO chip, all starting inactive. ``active_low`` inverts them (e.g. an NPN driver)."""

    def __init__(self, chip: str, lines: Iterable[int], *, active_low: bool = False,
                 consumer: str = CONSUMER) -> None:
        gpiod = import_gpiod()
        from gpiod.line import Direction, Value  # gpiod is optional

        self._active, self._inactive = Value.ACTIVE, Value.INACTIVE
        settings = gpiod.LineSettings(direction=Direction.OUTPUT, active_low=active_low,
                                      output_value=Value.INACTIVE)
        self._request = gpiod.request_lines(chip, consumer=consumer, config={tuple(lines): settings})

    def set(self, line: int, active: bool) -> None:
        self._request.set_value(line, self._active if active else self._inactive)

    def close(self) -> None:
        self._request.release()
