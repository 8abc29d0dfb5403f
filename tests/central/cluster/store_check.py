"""The store check the cluster failover tests share: every reading a gateway was acknowledged is stored, and
nothing is counted twice, per (series, timestamp) as VictoriaMetrics' ``-dedup.minScrapeInterval=1ms`` keeps it.

The tests write to a VictoriaMetrics WITHOUT deduplication, so that a redelivered reading shows up as a second
copy (same value, same timestamp) and a reading that is missing was never written. A gateway can stamp two
readings of one series in one millisecond (the synthetic driver, woken just under a whole number of periods late,
fires its next reading at once: ``drivers/synthetic/driver.py``); with deduplication on those are one sample,
which a check by counter value would call a loss. The check counts them apart (``shared_ms``)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from edugate.simulators.servers import VictoriaMetrics
from tests.helpers import GatewayProcess
from tests.vmquery import export


@dataclass
class StoreCheck:
    lost: dict[str, set[int]] = field(default_factory=dict)  # per gateway: acknowledged, not stored
    copies: int = 0  # samples written more than once (redeliveries; one sample with deduplication on)
    shared_ms: int = 0  # distinct readings of one series sharing a millisecond (one sample with deduplication)
    stored: int = 0  # distinct readings stored

    @property
    def lost_count(self) -> int:
        return sum(len(n) for n in self.lost.values())


def queued_probe_readings(outbox_path: Path) -> set[int]:
    """The counter values 'n' of the probe's readings still in a gateway's outbox (never acknowledged)."""
    conn = sqlite3.connect(f"file:{outbox_path}?mode=ro", uri=True)
    try:
        return {json.loads(p)["values"]["n"] for (p,) in conn.execute("SELECT payload FROM telemetry")
                if json.loads(p)["device"] == "probe"}
    finally:
        conn.close()


def check_store(gws: list[GatewayProcess], victoria: VictoriaMetrics) -> StoreCheck:
    """Per gateway, the acknowledged readings (gone from its outbox) that are not in the store; asserts that a
    reading stored more than once has one timestamp (a redelivery, stored once with deduplication on)."""
    result = StoreCheck()
    for g in gws:
        name = g.config["gateway"]
        queued = queued_probe_readings(g.outbox_path)
        series = export(victoria.url, f'edugate_n{{gateway="{name}",device="probe"}}')
        assert len(series) == 1, series
        stamps: dict[int, set[int]] = {}
        for value, ts in zip(series[0]["values"], series[0]["timestamps"], strict=True):
            stamps.setdefault(int(value), set()).add(ts)
        assert all(len(ts) == 1 for ts in stamps.values()), "one reading stored under two timestamps"
        result.copies += len(series[0]["values"]) - len(stamps)
        per_ms = [next(iter(ts)) for ts in stamps.values()]
        result.shared_ms += len(per_ms) - len(set(per_ms))
        result.stored += len(stamps)
        top = max(set(stamps) | queued)
        assert top > 300, "too little load to prove anything"
        result.lost[name] = set(range(1, top + 1)) - queued - set(stamps)
    return result
