"""The push adapter at work: make a period's batches, deliver what is due, retry with backoff, dead-letter.

``Pusher.run`` is ``edugate push run`` (a service): at each time of ``push.schedule`` (cron, in
``pages.timezone``) it makes the batches of the last complete period of each of ``push.periods``, and between
runs it delivers every batch that is due. A run the store or event store cannot answer is retried after the
backoff. ``deliver_until_done`` is ``edugate push now`` and ``redeliver``: deliver, waiting out the backoff,
until every batch is delivered or a dead letter.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from croniter import croniter  # type: ignore[import-untyped]  # no stubs shipped

from edugate.central.config import CentralConfig
from edugate.central.indicators.compute import StoreUnavailable
from edugate.central.indicators.periods import last_complete
from edugate.central.indicators.publish import figures_document
from edugate.central.push.batches import PrivacyError, make_batches
from edugate.central.push.deliver import backoff_s, post
from edugate.central.push.spool import Spool

log = logging.getLogger(__name__)
MAX_IDLE_S = 60.0


@dataclass
class Pusher:
    cfg: CentralConfig
    secret: bytes
    spool: Spool
    clock: Callable[[], float] = time.time
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        if self.cfg.push.url is None:
            raise ValueError("push.url is not set in central.yaml: nowhere to deliver to")
        return self.cfg.push.url

    def make(self, period_name: str) -> list[str]:
        """The batches of one period, kept for sending; the keys of those that are new (raises PeriodError,
        StoreUnavailable, PrivacyError)."""
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        doc = figures_document(self.cfg, period_name, now)
        now_ms = int(self.clock() * 1000)
        added = [b.key for b in make_batches(doc, self.cfg.push.batch_rows)
                 if self.spool.add(b.key, b.period, b.batch, b.batches, b.body, now_ms)]
        log.info("push: period %s: %d new batch(es)%s", doc["period"], len(added),
                 "" if added else " (figures unchanged since the last push)")
        return added

    def make_due(self) -> list[str]:
        """The last complete period of each of ``push.periods``."""
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        added: list[str] = []
        for granularity in self.cfg.push.periods:
            added += self.make(last_complete(granularity, self.cfg.pages.timezone, now).name)
        return added

    def deliver_due(self) -> None:
        """One attempt for every batch due now."""
        retry = self.cfg.push.retry
        for batch in self.spool.due(int(self.clock() * 1000)):
            outcome = post(self.url, batch.key, batch.body, self.secret, retry.timeout_s)
            attempts, now_ms = batch.attempts + 1, int(self.clock() * 1000)
            where = f"batch {batch.key} ({batch.period} {batch.batch}/{batch.batches}), attempt {attempts}"
            if outcome.result == "delivered":
                self.spool.delivered(batch.key, attempts, now_ms)
                self.counts["delivered"] += 1
                log.info("push: %s: delivered (%s)", where, outcome.detail)
            elif outcome.result == "refused" or attempts >= retry.max_attempts:
                self.spool.dead(batch.key, attempts, now_ms, outcome.detail)
                self.counts["dead"] += 1
                log.error("push: %s: %s; now a dead letter ('edugate push redeliver %s' once fixed)", where,
                          outcome.detail, batch.key)
            else:
                wait = backoff_s(retry, attempts)
                if outcome.retry_after_s is not None:
                    wait = min(retry.max_s, max(wait, outcome.retry_after_s))
                self.spool.retry_at(batch.key, attempts, now_ms + int(wait * 1000), outcome.detail)
                self.counts["retried"] += 1
                log.warning("push: %s: %s; again in %.1f s", where, outcome.detail, wait)

    def deliver_until_done(self, stop: threading.Event | None = None) -> None:
        """Deliver until nothing is pending (each batch delivered or a dead letter), or ``stop`` is set."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.deliver_due()
            next_ms = self.spool.next_due_ms()
            if next_ms is None:
                return
            stop.wait(max(0.0, next_ms / 1000 - self.clock()))

    def run(self, stop: threading.Event) -> None:
        """The service: scheduled runs, deliveries in between, until ``stop`` is set."""
        zone = ZoneInfo(self.cfg.pages.timezone)
        next_run = croniter(self.cfg.push.schedule, dt.datetime.fromtimestamp(self.clock(), zone)).get_next(float)
        failures = 0
        log.info("push: to %s, next run at %s", self.url, dt.datetime.fromtimestamp(next_run, zone).isoformat())
        while not stop.is_set():
            if self.clock() >= next_run:
                try:
                    self.make_due()
                except StoreUnavailable as exc:
                    failures += 1
                    next_run = self.clock() + backoff_s(self.cfg.push.retry, failures)
                    log.error("push: scheduled run failed: %s; trying again in %.0f s", exc, next_run - self.clock())
                    continue
                except PrivacyError as exc:  # a bug, not a passing fault: nothing of that period is sent
                    log.error("push: scheduled run refused: %s", exc)
                failures = 0
                next_run = croniter(self.cfg.push.schedule,
                                    dt.datetime.fromtimestamp(self.clock(), zone)).get_next(float)
            self.deliver_due()
            next_ms = self.spool.next_due_ms()
            wake = min(next_run, next_ms / 1000 if next_ms is not None else next_run)
            stop.wait(min(MAX_IDLE_S, max(0.0, wake - self.clock())))
