"""GPS receivers speaking NMEA 0183 over a serial port: the school bus's position.

The driver reads lines from the receiver (a UART such as ``/dev/serial0`` on a
Pi, or a USB receiver under ``/dev/serial/by-id/``), parses them with
``pynmea2`` and keeps the latest position, speed and fix quality from RMC and
GGA sentences. At most every ``interval_s`` it emits one
``Reading(device, {"fix": 1, "lat": ..., "lon": ..., "speed_kmh": ...,
"satellites": n, "hdop": x})``; without a fix the reading is
``{"fix": 0, "satellites": n}`` (no position). :attr:`GpsNmeaDriver.last_fix`
keeps the latest known position for the bus logic.

Bad input is counted per kind (``bad_checksum``, ``truncated``, ``garbage``,
``parse_error``) and logged with the sentence type and the error, at most once
a minute per kind after the first. Silence (no valid sentence for
``silence_s``: a dead receiver, a loose wire, a wrong baud rate) marks the
device offline; a vanished port (USB unplugged) is reopened with back-off
(:class:`~edugate.drivers.serial_link.ReopeningPort`, shared with every serial driver).
Parsing (:class:`NmeaParser`, :class:`GpsState`) is pure and tested on strings.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

import pynmea2
from pydantic import Field

from edugate.common.ratelimit import LogLimiter
from edugate.contract.records import Emit, Reading, Rejected
from edugate.drivers.base import DeviceConfig, Driver, Outage
from edugate.drivers.serial_link import IDLE_CHECK_S, ReopeningPort, decoded

log = logging.getLogger(__name__)

KNOTS_TO_KMH = 1.852
MAX_LINE = 512
"""An NMEA sentence is at most 82 characters; this many bytes without a newline is not NMEA."""
TYPE_RE = re.compile(r"^\$([A-Z]{2})([A-Z]{3}),")
GGA_STALE_S = 3.0
"""If no GGA came for this long, an RMC sentence alone triggers the reading."""


class GpsNmeaConfig(DeviceConfig):
    """A GPS receiver on a serial port, sending NMEA 0183."""

    # old names, still read (issue 19)
    renamed: ClassVar[Mapping[str, str]] = {"serial_port": "port", "backoff_max_s": "reopen_max_s"}

    streams_on: ClassVar[str] = "port"  # sends without being asked: the doctor listens on this port

    driver: Literal["gps-nmea"]
    port: str = Field("/dev/serial0", pattern=r"^/", description="The receiver's port: /dev/serial0 for "
                             "a module on a Pi's UART, /dev/serial/by-id/... for a USB receiver.")
    baudrate: int = Field(9600, ge=1200, le=921600, description="Most modules ship at 9600 baud.")
    interval_s: float = Field(5.0, ge=0.1, le=3600, description="At most one position reading this often.")
    silence_s: float = Field(10.0, ge=0.2, le=3600, description="No valid sentence for this long: the receiver "
                             "is reported offline.")
    reopen_max_s: float = Field(10.0, ge=0.01, le=3600, description="Longest wait between attempts to reopen "
                                 "a missing port.")


class Fix(NamedTuple):
    """The latest known position: degrees (WGS84) and when it was received (Unix seconds)."""

    lat: float
    lon: float
    ts: float


class BadSentence(ValueError):
    """A line that is not a usable NMEA sentence. ``kind`` is a short counter name."""

    def __init__(self, kind: str, sentence: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.sentence = sentence  # the sentence type ("GPRMC") or "?" when unknown


# ---------------------------------------------------------------- bytes -> sentences -> state (pure)


class NmeaParser:
    """Splits a byte stream into lines and lines into parsed sentences."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[pynmea2.NMEASentence | BadSentence]:
        """Add received bytes; return what the complete lines held (parsed sentences or errors), in order."""
        self._buffer += data
        out: list[pynmea2.NMEASentence | BadSentence] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            out += self._line(line)
        if len(self._buffer) > MAX_LINE:
            self._buffer.clear()
            out.append(BadSentence("garbage", "?", f"{MAX_LINE} bytes without a line end (wrong baud rate?)"))
        return out

    @property
    def pending(self) -> bool:
        """Never: a sentence cut off by silence is not flushed (the driver's silence check reports it)."""
        return False

    def flush(self, quiet_s: float) -> list[pynmea2.NMEASentence | BadSentence]:
        """Nothing to report after a quiet spell (see :attr:`pending`)."""
        return []

    def _line(self, raw: bytes) -> list[pynmea2.NMEASentence | BadSentence]:
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            return [BadSentence("garbage", "?", f"{len(raw)} bytes that are not NMEA text (wrong baud rate?)")]
        if not text:
            return []
        start = text.find("$")
        if start < 0:
            return [BadSentence("garbage", "?", f"a {len(text)}-character line without '$'")]
        out: list[pynmea2.NMEASentence | BadSentence] = []
        if start > 0:
            out.append(BadSentence("garbage", "?", f"{start} characters before '$'"))
        parts = text[start:].split("$")[1:]
        for i, part in enumerate(parts):
            result = parse_sentence("$" + part, cut=i < len(parts) - 1)
            if result is not None:
                out.append(result)
        return out


def parse_sentence(text: str, *, cut: bool = False) -> pynmea2.NMEASentence | BadSentence | None:
    """One sentence, or why it is bad; None for a valid sentence of a type pynmea2 does not know.

    ``cut``: another sentence began inside this one (a byte loss on the line).
    """
    match = TYPE_RE.match(text)
    kind = match.group(1) + match.group(2) if match else "?"
    if cut or not re.search(r"\*[0-9A-Fa-f]{2}$", text):
        return BadSentence("truncated", kind, "sentence cut off (no checksum at its end)")
    try:
        return pynmea2.parse(text, check=True)
    except pynmea2.ChecksumError as exc:
        return BadSentence("bad_checksum", kind, _message(exc))
    except pynmea2.SentenceTypeError:
        return None
    except pynmea2.ParseError as exc:
        return BadSentence("parse_error", kind, _message(exc))


def _message(exc: pynmea2.ParseError) -> str:
    """pynmea2 errors carry (message, fields); keep the message only."""
    first = exc.args[0] if exc.args else exc
    return str(first[0] if isinstance(first, tuple) and first else first)


def _number(value: Any, cast: type[int] | type[float], what: str) -> Any:
    """pynmea2 hands back the raw text when a typed field does not convert; convert (or refuse) here."""
    if value is None or value == "":
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a number") from None


def _position(msg: Any) -> tuple[float, float]:
    if msg.lat_dir not in ("N", "S") or msg.lon_dir not in ("E", "W"):
        raise ValueError("latitude/longitude without N/S or E/W")
    lat, lon = msg.latitude, msg.longitude  # ValueError if not ddmm.mmmm
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("latitude/longitude out of range")
    return round(lat, 7), round(lon, 7)


@dataclass
class GpsState:
    """What the receiver last said, merged from RMC and GGA."""

    fix: bool | None = None
    lat: float | None = None
    lon: float | None = None
    speed_kmh: float | None = None
    satellites: int | None = None
    hdop: float | None = None
    last_gga: float | None = None  # monotonic time of the latest GGA
    counts: dict[str, int] = field(default_factory=dict)

    def update(self, msg: pynmea2.NMEASentence, now: float) -> bool:
        """Take in one sentence; True if it was RMC or GGA (a candidate moment for a reading).
        Raises ValueError for a sentence whose fields make no sense."""
        if isinstance(msg, pynmea2.RMC):
            self._rmc(msg)
            return True
        if isinstance(msg, pynmea2.GGA):
            self._gga(msg)
            self.last_gga = now
            return True
        return False

    def _rmc(self, msg: Any) -> None:
        if msg.status != "A":
            self._no_fix()
            return
        lat, lon = _position(msg)
        knots = _number(msg.spd_over_grnd, float, "speed")
        self.fix, self.lat, self.lon = True, lat, lon
        self.speed_kmh = None if knots is None else round(knots * KNOTS_TO_KMH, 2)

    def _gga(self, msg: Any) -> None:
        quality = _number(msg.gps_qual, int, "fix quality") or 0
        satellites = _number(msg.num_sats, int, "satellite count")
        hdop = _number(msg.horizontal_dil, float, "HDOP")
        if quality > 0:
            self.lat, self.lon = _position(msg)
            self.fix = True
        else:
            self._no_fix()
        self.satellites, self.hdop = satellites, hdop

    def _no_fix(self) -> None:
        self.fix, self.lat, self.lon, self.speed_kmh = False, None, None, None

    def values(self) -> dict[str, float | int]:
        """The reading's values: position only with a fix; fields the receiver did not send are left out."""
        out: dict[str, float | int] = {"fix": 1 if self.fix else 0}
        if self.fix and self.lat is not None and self.lon is not None:
            out["lat"], out["lon"] = self.lat, self.lon
            if self.speed_kmh is not None:
                out["speed_kmh"] = self.speed_kmh
        if self.satellites is not None:
            out["satellites"] = self.satellites
        if self.fix and self.hdop is not None:
            out["hdop"] = self.hdop
        return out


# ---------------------------------------------------------------- the driver


class GpsNmeaDriver(Driver[GpsNmeaConfig]):
    """Position readings from an NMEA 0183 GPS receiver on a serial port."""

    config_model = GpsNmeaConfig

    def __init__(self, config: GpsNmeaConfig) -> None:
        super().__init__(config)
        self.state = GpsState()
        self._last_fix: Fix | None = None
        self.outage = Outage(self.health, log, config.id, health_text="{message}",
                             down_text="{where}: GPS offline: {message}; retrying",
                             up_text="{where}: GPS on {port} is back after {down:.1f} s", counter="disconnects")
        self.port = ReopeningPort(config.port, config.baudrate, reopen_max_s=config.reopen_max_s,
                                  down=self._port_down, lost=f"lost {config.port}")
        self._silent_now = False
        self._limiter = LogLimiter(burst=1, window_s=60.0)  # per kind: the first at once, then one a minute
        self._last_emit: float | None = None
        self._last_valid = 0.0  # loop time of the latest valid sentence
        self._opened_at = 0.0  # loop time the port was opened
        self._bad_since_valid = 0

    @property
    def last_fix(self) -> Fix | None:
        """The latest position with a fix (kept when the fix is lost; check ``ts`` for its age), or None."""
        return self._last_fix

    async def run(self, emit: Emit) -> None:
        cfg = self.config
        idle_s = min(IDLE_CHECK_S, cfg.silence_s / 5)  # wake this often without bytes to notice silence
        while True:
            async with self.port.session() as link:
                link.discard_input()  # no stale positions from before
                self.port.working()
                now = asyncio.get_running_loop().time()
                self._last_valid, self._bad_since_valid, self._opened_at = now, 0, now
                self._silent_now = False
                self._opened()
                async for item in decoded(link, NmeaParser(), idle_s, idle_s=idle_s, on_quiet=self._check_silence):
                    if isinstance(item, BadSentence):
                        self._bad(item)
                    else:
                        await self._sentence(item, emit)
                    self._check_silence()

    def _check_silence(self) -> None:
        """Offline once no valid sentence came for ``silence_s``; online again when one does."""
        quiet = asyncio.get_running_loop().time() - self._last_valid
        if quiet >= self.config.silence_s and not self._silent_now:
            self._silent_now = True
            self._silent(quiet)
        elif quiet < self.config.silence_s and self._silent_now:
            self._silent_now = False
            self._opened()

    async def _sentence(self, msg: pynmea2.NMEASentence, emit: Emit) -> None:
        now = asyncio.get_running_loop().time()
        try:
            trigger = self.state.update(msg, now)
        except ValueError as exc:
            self._bad(BadSentence("parse_error", msg.talker + msg.sentence_type, str(exc)))
            return
        self._last_valid, self._bad_since_valid = now, 0
        self.health.count("sentences")
        state = self.state
        if state.fix and state.lat is not None and state.lon is not None:
            self._last_fix = Fix(state.lat, state.lon, time.time())
        if not trigger:
            return
        if not isinstance(msg, pynmea2.GGA):
            # An RMC: the GGA of the same second usually follows, with satellites and HDOP. Only a receiver
            # that sends no GGA (none for GGA_STALE_S, counting from the port's opening) reports on RMC.
            last_gga = state.last_gga if state.last_gga is not None else self._opened_at
            if now - last_gga < GGA_STALE_S:
                return
        if self._last_emit is not None and now - self._last_emit < self.config.interval_s:
            return
        self._last_emit = now
        try:
            await emit(Reading(self.device_id, state.values()))
        except Rejected as exc:
            self.health.count("rejected")
            log.warning("%s: reading rejected by the pipeline: %s", self.device_id, exc)
            return
        self.health.ok()

    def _bad(self, bad: BadSentence) -> None:
        self.health.count("bad_sentences")
        self.health.count(f"bad_sentences.{bad.kind}")
        self._bad_since_valid += 1
        held = self._limiter.allow(bad.kind)
        if held is not None:
            more = f" ({held} more of this kind since the last report)" if held else ""
            log.warning("%s: bad NMEA sentence (%s, %s): %s%s", self.device_id, bad.sentence, bad.kind, bad, more)

    def _silent(self, quiet: float) -> None:
        cfg = self.config
        hint = (f"; {self._bad_since_valid} bad sentences meanwhile: check the baud rate ({cfg.baudrate})"
                if self._bad_since_valid else ": check the receiver's power and TX wire")
        self.outage.down(f"no valid NMEA sentence on {cfg.port} for {quiet:.1f} s{hint}")

    def _port_down(self, message: str) -> None:
        """The port did not open or was lost: offline, the message naming the port."""
        port = self.config.port
        self.outage.down(message if port in message else f"{port}: {message}")

    def _opened(self) -> None:
        self.outage.up(port=self.config.port)

    async def close(self) -> None:
        self.port.close()
