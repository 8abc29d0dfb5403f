"""BLE lab probes: BTHome v2 sensors (plaintext or encrypted) and ATC/PVVX thermometers, heard, not connected.

One driver instance per probe; all probes of an adapter share one scan (:mod:`.scanner`), which hands each
probe only its own advertisements. The probe's task decodes them (:mod:`.codec`) and emits one
``Reading(id, {"temperature": ..., "humidity": ..., "battery": ..., "rssi": ...})`` per new packet (a
button press becomes an ``Event(id, "button", {"action": "press", ...})``). Repeats of a packet count once
(``duplicates``). An advertisement that cannot be read (a wrong bind key, a damaged payload, plaintext
where encryption is expected) is counted under its kind, logged naming the probe (at most once a minute
per kind) and dropped; the other probes go on. No readable advertisement for ``offline_after_s`` marks
the probe offline with what went wrong; the next readable one brings it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from edugate.common.ratelimit import LogLimiter
from edugate.contract.records import Emit, Event, Reading, Rejected
from edugate.drivers.base import DeviceState, Driver, Outage
from edugate.drivers.ble.codec import BadAdvert, ProbeDecoder
from edugate.drivers.ble.config import BleProbeConfig
from edugate.drivers.ble.scanner import AddressInUse, SharedScanner, acquire, release

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

log = logging.getLogger(__name__)

QUEUE_MAX = 256
"""Advertisements of one probe waiting to be decoded; beyond this they are dropped (counted)."""

Item = tuple["BLEDevice", "AdvertisementData", float, float]


class BleProbeDriver(Driver[BleProbeConfig]):
    """One BLE probe, heard through the adapter's shared scan."""

    config_model = BleProbeConfig

    def __init__(self, config: BleProbeConfig) -> None:
        super().__init__(config)
        self.where = f"{config.id} ({config.address})"
        key = config.bind_key.get_secret_value() if config.bind_key is not None else None
        self.decoder = ProbeDecoder(config.address, config.format, bytes.fromhex(key) if key else None,
                                    config.dedup_window_s)
        self.outage = Outage(self.health, log, self.where, health_text="{message}", down_text="{message}",
                             up_text="{where}: probe heard again, back online after {down:.0f} s")
        self._limiter = LogLimiter(burst=1, window_s=60.0)
        self._queue: asyncio.Queue[Item] | None = None
        self._scanner: SharedScanner | None = None
        self._heard_at: float | None = None  # monotonic time of the latest advertisement of this probe
        self._good_at: float | None = None  # ... of the latest readable one
        self._problem: str | None = None  # why the latest unreadable one was unreadable
        self._adapter_error: str | None = None
        self.formats_seen: set[str] = set()

    # ------------------------------------------------------------ called by the shared scanner

    def advert(self, device: BLEDevice, adv: AdvertisementData, wall: float, mono: float) -> None:
        if self._queue is None:
            return
        try:
            self._queue.put_nowait((device, adv, wall, mono))
        except asyncio.QueueFull:
            self.health.count("dropped")

    def adapter_down(self, message: str) -> None:
        """OFFLINE with the adapter's reason (the shared scan logs it once for all its probes)."""
        self._adapter_error = message
        self.health.error(f"{self.where}: {message}")

    def adapter_up(self) -> None:
        self._adapter_error = None

    # ------------------------------------------------------------ the probe's task

    async def run(self, emit: Emit) -> None:
        cfg = self.config
        self._queue = asyncio.Queue(maxsize=QUEUE_MAX)
        try:
            self._scanner = acquire(cfg.adapter, cfg.address, cfg.id, self)
        except AddressInUse as exc:
            self.health.error(f"{self.where}: {exc}")
            log.error("%s: %s; this entry is not read", self.where, exc)
            await asyncio.Event().wait()  # never returns: a config mistake, fixed by editing the config
        started = time.monotonic()
        try:
            while True:
                since = self._good_at if self._good_at is not None else started
                timeout = since + cfg.offline_after_s - time.monotonic()
                if timeout <= 0:
                    self._silent(started)
                    timeout = cfg.offline_after_s
                try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation when the
                    async with asyncio.timeout(timeout):  # queue delivers in the same loop iteration
                        item = await self._queue.get()
                except TimeoutError:
                    continue
                await self._handle(item, emit)
        finally:
            self._leave()

    async def _handle(self, item: Item, emit: Emit) -> None:
        device, adv, wall, mono = item
        self.health.count("adverts")
        self._heard_at = mono
        try:
            decoded = self.decoder.decode(device, adv, mono)
        except BadAdvert as exc:
            self._bad(exc)
            return
        except Exception as exc:  # bytes that trip a library up: counted like any damaged packet, never fatal
            self._bad(BadAdvert("garbled", f"advertisement could not be decoded ({type(exc).__name__}: {exc})"))
            return
        if decoded is None:
            self.health.count("no_data")  # a scan response with the name only
            return
        self._good_at = mono
        self._problem = None
        if self.outage.active:
            self.outage.up()
        self.health.ok()
        if decoded.duplicate:
            self.health.count("duplicates")
            return
        if decoded.missed:
            self.health.count("missed_packets", decoded.missed)
        if decoded.format not in self.formats_seen:
            self.formats_seen.add(decoded.format)
            log.info("%s: %s advertisements (%s)", self.where, decoded.format, ", ".join(decoded.values))
        try:
            if decoded.values:
                await emit(Reading(self.config.id, {**decoded.values, "rssi": adv.rssi}, wall))
                self.health.count("readings")
            for kind, data in decoded.events:
                await emit(Event(self.config.id, kind, data, wall))
                self.health.count("events")
        except Rejected as exc:
            self.health.count("rejected")
            held = self._limiter.allow("rejected")  # a probe sending nonsense must not flood the journal
            if held is not None:
                log.warning("%s: reading rejected: %s%s", self.where, exc,
                            f" ({held} more since the last report)" if held else "")

    def _bad(self, exc: BadAdvert) -> None:
        self.health.count(exc.kind)
        self._problem = str(exc)
        self.health.error(f"{self.where}: {exc}", offline=False)
        held = self._limiter.allow(exc.kind)
        if held is not None:
            more = f" ({held} more since the last report)" if held else ""
            log.warning("%s: %s%s", self.where, exc, more)

    def _silent(self, started: float) -> None:
        """No readable advertisement for offline_after_s: say why, as precisely as we know it."""
        if self._adapter_error is not None:
            return  # already offline, with the adapter's reason
        now = time.monotonic()
        if self._heard_at is None:
            self.outage.down(f"{self.where}: not heard since the gateway started {now - started:.0f} s ago "
                             "(wrong address, out of range, or flat battery?)", key="never")
        elif self._problem is not None and (self._good_at is None or self._heard_at > self._good_at):
            self.outage.down(f"{self.where}: heard, but nothing readable for {self.config.offline_after_s:.0f} s: "
                             f"{self._problem}", key="unreadable")
        else:
            self.outage.down(f"{self.where}: silent for {now - (self._good_at or started):.0f} s (out of range, "
                             "flat battery, or moved?); back by itself when heard again", key="silent")

    def _leave(self) -> None:
        if self._scanner is not None:
            release(self._scanner, self.config.address)
            self._scanner = None

    async def close(self) -> None:
        self._leave()
        self.health.state = DeviceState.STOPPED
