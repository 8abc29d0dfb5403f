"""A device that needs no hardware: steady telemetry (and optional events) at a set rate.

For checking a fresh installation end to end ("does data reach central?"),
for load tests of the data path, and for the demo. Like Telegraf's ``mock``
input. Each reading carries ``n``, a counter that increases by one per reading.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Literal

from pydantic import Field

from edugate.contract.records import Emit, Event, Reading
from edugate.drivers.base import DeviceConfig, DeviceState, Driver


class SyntheticDeviceConfig(DeviceConfig):
    driver: Literal["synthetic"]
    interval_s: float = Field(1.0, gt=0, le=86400, description="Time between readings.")
    values: int = Field(3, ge=0, le=200, description="Wave values per reading besides the counter 'n'.")
    event_every: int = Field(0, ge=0, description="Also emit an event every N readings (0 = never).")
    event_type: str = Field("synthetic", pattern=r"^[a-z][a-z0-9_.]{0,63}$")


class SyntheticDriver(Driver[SyntheticDeviceConfig]):
    config_model = SyntheticDeviceConfig

    async def run(self, emit: Emit) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        n = 0
        next_at = loop.time()
        while True:
            n += 1
            now = time.time()
            values: dict[str, float | int] = {"n": n}
            for i in range(cfg.values):
                values[f"v{i}"] = round(20 + 5 * math.sin(now / 60 + i), 3)
            await emit(Reading(cfg.id, values, now))
            if cfg.event_every and n % cfg.event_every == 0:
                await emit(Event(cfg.id, cfg.event_type, {"n": n}, now))
            self.health.ok()
            self.health.count("readings")
            next_at += cfg.interval_s
            late = loop.time() - next_at
            # Fell behind by more than a tenth of the period: skip the missed ticks and count them (like the
            # Modbus driver), rather than firing them back to back, where two readings of one device
            # could share a millisecond (one sample in a store that deduplicates by millisecond).
            if late > 0.1 * cfg.interval_s:
                skipped = math.ceil(late / cfg.interval_s)
                self.health.count("skipped_polls", skipped)
                next_at += skipped * cfg.interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def close(self) -> None:
        self.health.state = DeviceState.STOPPED
