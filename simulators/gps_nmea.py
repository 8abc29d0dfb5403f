"""A simulated GPS receiver on a school bus: NMEA 0183 sentences on a pseudo-terminal.

Every epoch (one GPS second, sent every ``period_s`` of real time, so a test
can run the clock fast) it writes the burst a u-blox style receiver sends:
RMC, VTG, GGA, GSA, with correct checksums, for a bus driving along a route of
waypoints at ``speed_kmh`` (the route closes back on itself). It can lose and
regain the fix, corrupt checksums, cut sentences short, send garbage, fall
silent, and be unplugged and plugged back in under the same name (through
:class:`simulators.serial_pty.PtyPort`).

In a test (one event loop)::

    async with GpsSimulator(tmp_path / "ttyGPS", period_s=0.05) as sim:
        ...  # the driver opens str(sim.link) with pyserial
        sim.inject_bad_checksum(); sim.inject_truncated(); sim.inject_garbage()
        sim.set_fix(False); sim.pause(); sim.resume(); sim.unplug(); sim.plug()
        sim.sent  # what was sent, epoch by epoch (positions as the NMEA text encodes them)

From a shell: ``python -m edugate.simulators.gps_nmea --link /tmp/edugate/ttyGPS`` (then point a
``gps-nmea`` device's ``port`` at that path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce
from pathlib import Path
from types import TracebackType

from edugate.simulators.serial_pty import PtyPort

EARTH_M = 6_371_000.0
KMH_PER_KNOT = 1.852

HCMC_ROUTE: tuple[tuple[float, float], ...] = (
    (10.77690, 106.70090),  # a school in District 1
    (10.77980, 106.69900),
    (10.78300, 106.69550),
    (10.78700, 106.69200),  # a stop in District 3
    (10.78450, 106.68800),
)
"""Waypoints (lat, lon) of a made-up school bus route in Ho Chi Minh City."""


def checksum(body: str) -> str:
    """The NMEA checksum of the text between '$' and '*'."""
    return f"{reduce(lambda acc, ch: acc ^ ord(ch), body, 0):02X}"


def sentence(body: str, *, bad_checksum: bool = False) -> str:
    cs = checksum(body)
    if bad_checksum:
        cs = f"{int(cs, 16) ^ 0x5A:02X}"
    return f"${body}*{cs}\r\n"


def nmea_lat(lat: float) -> tuple[str, str, float]:
    """(ddmm.mmmmm, N/S, the value the text encodes)."""
    return _dm(lat, 2, "N", "S")


def nmea_lon(lon: float) -> tuple[str, str, float]:
    return _dm(lon, 3, "E", "W")


def _dm(value: float, width: int, pos: str, neg: str) -> tuple[str, str, float]:
    total = round(abs(value) * 60, 5)  # minutes, at the 5 decimals we send
    deg, minutes = divmod(total, 60)
    text = f"{int(deg):0{width}d}{minutes:08.5f}"
    encoded = int(deg) + round(minutes, 5) / 60
    return text, pos if value >= 0 else neg, encoded if value >= 0 else -encoded


def _metres(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """(east, north) metres from a to b (equirectangular: fine over a city)."""
    lat0 = math.radians((a[0] + b[0]) / 2)
    return (math.radians(b[1] - a[1]) * math.cos(lat0) * EARTH_M, math.radians(b[0] - a[0]) * EARTH_M)


class Route:
    """A closed route: position and heading after driving ``distance_m`` from the first waypoint."""

    def __init__(self, waypoints: Sequence[tuple[float, float]]) -> None:
        if len(waypoints) < 2:
            raise ValueError("a route needs at least two waypoints")
        self.points = list(waypoints)
        self.legs = [(a, b) for a, b in zip(self.points, self.points[1:] + self.points[:1], strict=True)]
        self.lengths = [math.hypot(*_metres(a, b)) for a, b in self.legs]
        self.length_m = sum(self.lengths)

    def at(self, distance_m: float) -> tuple[float, float, float]:
        """(lat, lon, course in degrees true)."""
        d = distance_m % self.length_m
        for (a, b), length in zip(self.legs, self.lengths, strict=True):
            if d <= length or length == 0:
                f = d / length if length else 0.0
                east, north = _metres(a, b)
                course = math.degrees(math.atan2(east, north)) % 360
                return a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), course
            d -= length
        a, _ = self.legs[-1]  # floating-point leftovers: the end of the last leg
        return a[0], a[1], 0.0


@dataclass(frozen=True, slots=True)
class Epoch:
    """One second of the receiver, as sent. ``lat``/``lon`` are what the NMEA text encodes (None without fix)."""

    index: int
    gps_time: datetime
    fix: bool
    lat: float | None
    lon: float | None
    speed_kmh: float
    satellites: int
    hdop: float | None
    distance_m: float


class GpsSimulator:
    """The receiver behind a pty at ``link`` (a symlink to the current ``/dev/pts/N``)."""

    def __init__(self, link: str | Path, *, route: Sequence[tuple[float, float]] = HCMC_ROUTE,
                 speed_kmh: float = 30.0, period_s: float = 1.0, satellites: int = 9, hdop: float = 0.9,
                 talker: str = "GP", start_time: datetime | None = None) -> None:
        self.port = PtyPort(link)
        self.route = Route(route)
        self.speed_kmh = speed_kmh
        self.period_s = period_s
        self.satellites = satellites
        self.hdop = hdop
        self.talker = talker
        self.start_time = (start_time or datetime.now(UTC)).replace(microsecond=0)
        self.fix = True
        self.paused = False
        self.sent: list[Epoch] = []
        self._index = 0
        self._bad_checksums = 0
        self._truncations = 0
        self._garbage: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()

    @property
    def link(self) -> Path:
        return self.port.link

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.port.plug()
        self._task = asyncio.create_task(self._run(), name="gps-simulator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.port.unplug()

    async def __aenter__(self) -> GpsSimulator:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
                        ) -> None:
        await self.stop()

    # ------------------------------------------------------------ faults

    def set_fix(self, fix: bool) -> None:
        """Lose (False) or regain (True) the satellite fix."""
        self.fix = fix

    def inject_bad_checksum(self, n: int = 1) -> None:
        """The next ``n`` RMC sentences carry a wrong checksum."""
        self._bad_checksums += n

    def inject_truncated(self, n: int = 1) -> None:
        """The next ``n`` RMC sentences are cut off mid-way and run into the next sentence (lost bytes)."""
        self._truncations += n

    def inject_garbage(self, data: bytes = b"\x00\xff\x13\x9a noise \xfe\r\n") -> None:
        """Raw bytes before the next epoch (a UART glitch, or another baud rate)."""
        self._garbage.append(data)

    def pause(self) -> None:
        """Stop sending (a dead receiver or a loose TX wire); the port stays."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def unplug(self) -> None:
        """Pull the receiver: the driver's port hangs up and the name vanishes."""
        self.port.unplug()

    def plug(self) -> None:
        """Plug it back in under the same name."""
        self.port.plug()

    async def wait_epochs(self, n: int, within_s: float = 5.0) -> None:
        """Wait until ``n`` more epochs have been sent."""
        target = self._index + n
        async with asyncio.timeout(within_s):
            while self._index < target:
                await self._tick.wait()

    # ------------------------------------------------------------ the receiver

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if not self.paused:
                for junk in self._garbage:
                    self.port.write(junk)
                self._garbage.clear()
                self.port.write(self._epoch().encode("ascii"))
            self._tick.set()
            self._tick = asyncio.Event()
            next_at += self.period_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def _epoch(self) -> str:
        index = self._index
        self._index += 1
        distance = self.speed_kmh / 3.6 * index
        lat, lon, course = self.route.at(distance)
        when = self.start_time + timedelta(seconds=index)
        hhmmss, ddmmyy = when.strftime("%H%M%S.00"), when.strftime("%d%m%y")
        t = self.talker
        knots = self.speed_kmh / KMH_PER_KNOT
        if self.fix:
            lat_t, ns, lat_v = nmea_lat(lat)
            lon_t, ew, lon_v = nmea_lon(lon)
            rmc = f"{t}RMC,{hhmmss},A,{lat_t},{ns},{lon_t},{ew},{knots:.3f},{course:.1f},{ddmmyy},,,A"
            vtg = f"{t}VTG,{course:.1f},T,,M,{knots:.3f},N,{self.speed_kmh:.2f},K,A"
            gga = f"{t}GGA,{hhmmss},{lat_t},{ns},{lon_t},{ew},1,{self.satellites:02d},{self.hdop:.1f},12.0,M,2.1,M,,"
            gsa = f"{t}GSA,A,3,04,05,09,12,17,20,,,,,,,1.6,{self.hdop:.1f},1.3"
            self.sent.append(Epoch(index, when, True, round(lat_v, 7), round(lon_v, 7), self.speed_kmh,
                                   self.satellites, self.hdop, distance))
        else:
            seen = min(self.satellites, 2)
            rmc = f"{t}RMC,{hhmmss},V,,,,,,,{ddmmyy},,,N"
            vtg = f"{t}VTG,,T,,M,,N,,K,N"
            gga = f"{t}GGA,{hhmmss},,,,,0,{seen:02d},,,M,,M,,"
            gsa = f"{t}GSA,A,1,,,,,,,,,,,,,,,"
            self.sent.append(Epoch(index, when, False, None, None, 0.0, seen, None, distance))
        first = sentence(rmc, bad_checksum=self._take("_bad_checksums"))
        if self._take("_truncations"):
            first = first[: len(first) // 2]  # no checksum, no line end: runs into the VTG
        return first + sentence(vtg) + sentence(gga) + sentence(gsa)

    def _take(self, counter: str) -> bool:
        left = getattr(self, counter)
        if left:
            setattr(self, counter, left - 1)
        return bool(left)


async def _main(args: argparse.Namespace) -> None:
    async with GpsSimulator(args.link, speed_kmh=args.speed, period_s=args.period) as sim:
        print(f"GPS simulator: NMEA at 9600 baud on {sim.link} -> {sim.port.slave_path} (Ctrl-C stops)", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--link", default="/tmp/edugate/ttyGPS", help="the path the driver opens (a symlink)")
    parser.add_argument("--speed", type=float, default=30.0, help="bus speed in km/h")
    parser.add_argument("--period", type=float, default=1.0, help="real seconds per GPS second")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
