"""A simulated serial line thermometer: a probe printing ``T=23.45`` lines on a pseudo-terminal.

The device end of the ``thermometer`` driver (drivers/thermometer/). In a test (one event loop)::

    async with ThermometerSimulator(tmp_path / "ttyTHERM") as probe:
        probe.send(T=21.5, H=40.0)   # one line, as the probe prints it
        probe.send_raw(b"T=oops\\r\\n")
        probe.port.unplug(); probe.port.plug()

From a shell, a probe drifting around 22 °C that prints every second::

    python -m edugate.simulators.thermometer --link /tmp/edugate/ttyTHERM --every 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
from pathlib import Path
from types import TracebackType

from edugate.simulators.serial_pty import PtyPort


def line(**values: float) -> bytes:
    """The line a probe prints for ``values`` (keys as the probe names them, e.g. T and H)."""
    return (",".join(f"{k}={v:.2f}" for k, v in values.items()) + "\r\n").encode("ascii")


class ThermometerSimulator:
    """One probe behind ``link`` (a stable symlink to a pty). Plugged in while the context is open."""

    def __init__(self, link: str | Path) -> None:
        self.port = PtyPort(link)
        self.lines = 0

    @property
    def link(self) -> Path:
        return self.port.link

    async def __aenter__(self) -> ThermometerSimulator:
        self.port.plug()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.port.unplug()

    def send(self, **values: float) -> bool:
        """Print one measurement line; False while unplugged."""
        sent = self.port.write(line(**values))
        self.lines += sent
        return sent

    def send_raw(self, data: bytes) -> bool:
        """Any bytes, e.g. a garbled line."""
        return self.port.write(data)

    async def run(self, every_s: float, base: float = 22.0) -> None:
        """Print a slowly drifting temperature every ``every_s`` seconds until cancelled."""
        while True:
            self.send(T=round(base + 1.5 * math.sin(time.time() / 120), 2))
            await asyncio.sleep(every_s)


async def _main(link: Path, every_s: float) -> None:
    async with ThermometerSimulator(link) as probe:
        print(f"thermometer on {probe.link} -> {probe.port.slave_path}, a line every {every_s:g} s", flush=True)
        await probe.run(every_s)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m edugate.simulators.thermometer",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--link", type=Path, required=True, help="path the driver opens (its 'port')")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between lines (default 1)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.link, args.every))


if __name__ == "__main__":
    main()
