"""A simulated city: thousands of school gateways as MQTT connections from one asyncio process.

Each :class:`SimGateway` is one MQTT connection (aiomqtt, QoS 1, clean session, a retained birth on
``.../state`` and the last will ``offline``) that fails over along the broker list with the gateways' own
jittered back-off (:class:`edugate.common.mqtt.Backoff` and :class:`~edugate.common.mqtt.Failover`). What it
sends is the real wire format (``edugate.contract``): telemetry batches from its room sensors, its health record,
card taps and library gate counts as events and telemetry. Records are made on a schedule of their own
timestamps whether or not the gateway is connected, kept in an outbox-like queue, and leave it only at the
broker's PUBACK, so an outage or a broker's death makes a backlog that is sent after reconnecting, as a real
gateway does.

Every gateway keeps a :class:`Ledger` of what the broker acknowledged (seq ranges, records per device and event
type, connects, PUBACK latency), so :func:`missing_in_store` can say, per gateway, what is not in the store.

Scenarios (:class:`City` methods): the steady day (telemetry + health), :meth:`City.morning_peak` (every student
of a district taps in within a window), :meth:`City.library_peak`, :meth:`City.outage` (a set of schools lose
their uplink for a while), and the reconnect storm that follows a broker node's death (nothing to call: the
connections fail over by themselves; :meth:`City.connected_count` and :meth:`City.reconnect_times` show it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson

from edugate.common.mqtt import Backoff, BrokerConfig, Failover, LastWill, ReconnectPolicy, aiomqtt_client
from edugate.contract.state import GATEWAY_DEVICE, GatewayStatus, offline_will
from edugate.contract.topics import TopicKind, topic

log = logging.getLogger(__name__)

SENSOR_VALUES = ("temperature_c", "humidity_pct", "co2_ppm")  # per room sensor record: 3 datapoints
MAX_BATCH_RECORDS = 500  # per published message (a gateway's uplink batches up to 256 kB)


@dataclass(frozen=True)
class CityPlan:
    """The shape of the city and its steady traffic."""

    brokers: tuple[str, ...]
    gateways: int = 2500
    districts: int = 24  # HCMC: 22 districts and Thu Duc city
    sensors_per_gateway: int = 4  # room sensors, one telemetry record each per interval
    telemetry_interval_s: float = 1.0
    health_interval_s: float = 30.0
    students_per_school: int = 600  # 1.5 M students / 2,500 schools
    event_flush_s: float = 0.2  # taps leave in a batch this often (a tap is never held longer)
    keepalive_s: int = 10
    connect_spread_s: float = 10.0  # the first connections spread over this (the city does not boot at once)
    reconnect_first_s: float = 0.5
    reconnect_max_s: float = 10.0
    rotate_brokers: bool = True  # gateway i lists the brokers from the (i mod n)-th on: the nodes share the load
    prefix: str = "city"  # school ids: {prefix}-d{district}-s{n}
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.brokers:
            raise ValueError("brokers: give at least one host:port")
        if self.gateways < 1 or self.districts < 1 or self.sensors_per_gateway < 0:
            raise ValueError("gateways and districts must be >= 1, sensors_per_gateway >= 0")
        if self.telemetry_interval_s <= 0 or self.health_interval_s <= 0 or self.event_flush_s <= 0:
            raise ValueError("telemetry_interval_s, health_interval_s and event_flush_s must be > 0")


@dataclass
class Ledger:
    """What one gateway made and what the broker acknowledged: loss is measured against this."""

    school: str
    gateway: str
    district: str
    made: int = 0  # records made (committed to the outbox)
    acked: int = 0  # records the broker PUBACKed
    acked_ranges: list[list[int]] = field(default_factory=list)  # merged [first, last] seq ranges
    telemetry: Counter[str] = field(default_factory=Counter)  # device -> records acked
    events: Counter[str] = field(default_factory=Counter)  # event type -> records acked
    messages: int = 0
    connects: int = 0
    connect_failures: int = 0
    lost_at: float | None = None  # monotonic time the last connection was lost (None: connected or never)
    reconnect_s: list[float] = field(default_factory=list)  # from losing a connection to the next one
    puback_ms: list[float] = field(default_factory=list)  # a sample of publish -> PUBACK times

    def ack(self, records: list[dict[str, Any]]) -> None:
        self.acked += len(records)
        self.messages += 1
        for record in records:
            seq = record["seq"]
            if self.acked_ranges and self.acked_ranges[-1][1] == seq - 1:
                self.acked_ranges[-1][1] = seq
            else:
                self.acked_ranges.append([seq, seq])
            if record["kind"] == "telemetry":
                self.telemetry[record["device"]] += 1
            else:
                self.events[record["type"]] += 1


def pseudonym(school: str, student: int) -> str:
    """A stable stand-in for a pseudonymised card (never a raw UID: the gateway hashes those)."""
    return "p:" + hashlib.blake2s(f"{school}/{student}".encode(), digest_size=8).hexdigest()


def _one_per_ms(times: list[float]) -> list[float]:
    """Sorted times moved apart to at least 1 ms: one reader reads one card at a time, and two events of one
    reader with the same millisecond would be one sample in the store (same series, same timestamp)."""
    out: list[int] = []
    for t in times:
        ms = round(t * 1000)
        out.append(max(ms, out[-1] + 1) if out else ms)
    return [ms / 1000 for ms in out]


class SimGateway:
    """One school gateway: an outbox of records made on schedule, one MQTT connection, a ledger."""

    def __init__(self, plan: CityPlan, index: int, school: str, district: str, rng: random.Random,
                 start: float) -> None:
        self.plan = plan
        self.index = index
        self.ledger = Ledger(school, "gw-1", district)
        brokers = list(plan.brokers)
        if plan.rotate_brokers:
            brokers = brokers[index % len(brokers):] + brokers[:index % len(brokers)]
        self.current_broker = brokers[0]
        self.cfg = BrokerConfig(brokers=brokers, keepalive_s=plan.keepalive_s, clean_session=True,
                                reconnect=ReconnectPolicy(first_delay_s=plan.reconnect_first_s,
                                                          max_delay_s=plan.reconnect_max_s))
        self.rng = rng
        self._seq = 0
        self._telemetry: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        offset = rng.uniform(0, plan.telemetry_interval_s)
        self._next_telemetry = start + plan.connect_spread_s * index / max(1, plan.gateways) + offset
        self._next_health = self._next_telemetry + rng.uniform(0, plan.health_interval_s)
        self._taps: list[float] = []  # wall-clock times of card taps still to come, sorted
        self._library: list[float] = []
        self._offline_until = 0.0
        self.wake = asyncio.Event()
        self.producing = True  # False: make no more records (the outbox still empties)
        self.connected = False
        self.connected_at = 0.0  # monotonic time of the last connection
        self.started_at = time.time()

    @property
    def school(self) -> str:
        return self.ledger.school

    def topic(self, kind: TopicKind) -> str:
        return topic(self.school, self.ledger.gateway, kind)

    # ---------------------------------------------------------------- records (made on their own schedule)

    def _record(self, kind: str, device: str, ts: float, body: dict[str, Any], room: str | None) -> dict[str, Any]:
        self._seq += 1
        self.ledger.made += 1
        record = {"seq": self._seq, "kind": kind, "device": device, "ts": round(ts * 1000), "synced": True, **body}
        if room is not None:
            record["room"] = room
        return record

    def produce(self, now: float) -> None:
        """Make every record due up to ``now`` (wall clock), stamped with the time it was due."""
        if not self.producing:
            return
        plan, rng = self.plan, self.rng
        while self._next_telemetry <= now:
            ts = self._next_telemetry
            for i in range(plan.sensors_per_gateway):
                values = {"temperature_c": round(rng.gauss(29, 2), 2), "humidity_pct": round(rng.uniform(55, 85), 1),
                          "co2_ppm": round(rng.uniform(420, 1800))}
                self._telemetry.append(self._record("telemetry", f"env-{i + 1}", ts, {"values": values},
                                                    f"room-{i + 1}"))
            self._next_telemetry += plan.telemetry_interval_s
        while self._next_health <= now:
            ts = self._next_health
            values = {"uptime_s": round(ts - self.started_at), "devices_online": plan.sensors_per_gateway + 1,
                      "devices_offline": 0, "cpu_percent": round(rng.uniform(3, 15), 1),
                      "rss_bytes": 60_000_000, "clock_synced": True, "skipped_polls": 0,
                      "uplink_connected": self.connected, "outbox_records": len(self._telemetry) + len(self._events)}
            self._telemetry.append(self._record("telemetry", GATEWAY_DEVICE, ts, {"values": values}, None))
            self._next_health += plan.health_interval_s
        while self._taps and self._taps[0] <= now:
            ts = self._taps.pop(0)
            data = {"card": pseudonym(self.school, rng.randrange(plan.students_per_school)), "decision": "allow",
                    "role": "door", "direction": "in"}
            self._events.append(self._record("event", "gate-1", ts, {"type": "card_tap", "data": data}, "gate"))
        while self._library and self._library[0] <= now:
            ts = self._library.pop(0)
            self._telemetry.append(self._record("telemetry", "libgate-1", ts,
                                                {"values": {"visitors_in": 1, "visitors_out": 0}}, "library"))
            if rng.random() < 0.3:
                data = {"card": pseudonym(self.school, rng.randrange(plan.students_per_school))}
                self._events.append(self._record("event", "selfcheck-1", ts, {"type": "library_loan", "data": data},
                                                 "library"))

    def next_due(self) -> float:
        if not self.producing:
            return time.time() + 3600.0
        due = [self._next_telemetry, self._next_health]
        due += self._taps[:1] + self._library[:1]
        return min(due)

    def add_taps(self, times: Iterable[float]) -> None:
        self._taps = _one_per_ms(sorted([*self._taps, *times]))
        self.wake.set()

    def add_library_visits(self, times: Iterable[float]) -> None:
        self._library = _one_per_ms(sorted([*self._library, *times]))
        self.wake.set()

    def go_offline(self, until: float) -> None:
        """The school's uplink is down until ``until`` (wall clock): the connection drops, records queue."""
        self._offline_until = until
        self.wake.set()

    @property
    def backlog(self) -> int:
        return len(self._telemetry) + len(self._events)

    # ---------------------------------------------------------------- the connection

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.cfg.reconnect, self.rng)
        failover = Failover(self.cfg)
        state = self.topic(TopicKind.STATE)
        will = LastWill(state, json.dumps(offline_will()).encode(), 1, True)
        await asyncio.sleep(self.plan.connect_spread_s * self.index / max(1, self.plan.gateways))
        while not stop.is_set():
            wait = self._offline_until - time.time()
            if wait > 0:
                await self._sleep(stop, wait)
                continue
            client = aiomqtt_client(self.cfg, will=will, identifier=f"{self.school}-{self.ledger.gateway}",
                                    broker=failover.current, timeout=10)
            try:
                async with client:
                    self.current_broker = str(failover.current)
                    self._on_connected()
                    failover.connected()
                    backoff.reset()
                    birth = {"status": GatewayStatus.ONLINE.value, "ts": int(time.time() * 1000),
                             "school": self.school, "gateway": self.ledger.gateway, "district": self.ledger.district,
                             "clock_synced": True, "version": "city-sim", "started_at": int(self.started_at * 1000),
                             "devices": {f"env-{i + 1}": {"state": "online", "error_count": 0}
                                         for i in range(self.plan.sensors_per_gateway)}}
                    await client.publish(state, orjson.dumps(birth), qos=1, retain=True)
                    await self._pump(client, stop)
                    if stop.is_set():  # a clean stop: the gateway says so itself
                        with contextlib.suppress(aiomqtt.MqttError):
                            await client.publish(state, orjson.dumps({"status": "offline", "reason": "shutdown",
                                                                      "ts": int(time.time() * 1000)}),
                                                 qos=1, retain=True)
            except aiomqtt.MqttError:
                if not self.connected:
                    self.ledger.connect_failures += 1
                    failover.failed()
            self._on_lost(stop.is_set())
            if not stop.is_set() and self._offline_until <= time.time():
                await self._sleep(stop, backoff.next())

    def _on_connected(self) -> None:
        self.connected = True
        self.connected_at = time.monotonic()
        self.ledger.connects += 1
        if self.ledger.lost_at is not None:
            self.ledger.reconnect_s.append(time.monotonic() - self.ledger.lost_at)
            self.ledger.lost_at = None

    def _on_lost(self, stopping: bool) -> None:
        if self.connected and not stopping and self._offline_until <= time.time():
            self.ledger.lost_at = time.monotonic()  # an outage we made is not a reconnect to measure
        self.connected = False

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, seconds))

    async def _pump(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Publish the outbox while connected; return on stop or when the school goes offline."""
        telemetry, event = self.topic(TopicKind.TELEMETRY), self.topic(TopicKind.EVENT)
        next_events = 0.0
        while not stop.is_set() and self._offline_until <= time.time():
            now = time.time()
            self.produce(now)
            if self._events and now >= next_events:
                await self._publish(client, event, self._events)
                next_events = now + self.plan.event_flush_s
                continue
            if self._telemetry:
                await self._publish(client, telemetry, self._telemetry)
                continue
            delay = min(self.next_due(), next_events if self._events else float("inf")) - time.time()
            self.wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)

    async def _publish(self, client: aiomqtt.Client, where: str, queue: list[dict[str, Any]]) -> None:
        batch = queue[:MAX_BATCH_RECORDS]
        started = time.perf_counter()
        await client.publish(where, orjson.dumps(batch), qos=1)  # returns at the PUBACK
        if self.rng.random() < 0.05:
            self.ledger.puback_ms.append((time.perf_counter() - started) * 1000)
        del queue[:len(batch)]  # out of the outbox only now
        self.ledger.ack(batch)


class City:
    """Many :class:`SimGateway` in one event loop. ``async with City(plan) as city:`` starts them."""

    def __init__(self, plan: CityPlan) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        start = time.time()
        self.gateways: list[SimGateway] = []
        per_district = -(-plan.gateways // plan.districts)
        for i in range(plan.gateways):
            district = f"d{i // per_district + 1:02d}"
            school = f"{plan.prefix}-{district}-s{i % per_district + 1:04d}"
            self.gateways.append(SimGateway(plan, i, school, district, random.Random(plan.seed * 100_003 + i),
                                            start))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def districts(self) -> list[str]:
        return sorted({g.ledger.district for g in self.gateways})

    async def __aenter__(self) -> City:
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(g.run(self._stop), name=f"gw-{g.index}") for g in self.gateways]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self, grace_s: float = 30.0) -> None:
        self._stop.set()
        for g in self.gateways:
            g.wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
        self._tasks = []

    # ---------------------------------------------------------------- scenarios

    def morning_peak(self, district: str | None = None, window_s: float = 900.0, start: float | None = None,
                     *, uniform: bool = False) -> int:
        """Every student of ``district`` (None: the whole city) taps in within ``window_s``, more of them in the
        middle of the window than at its edges (a triangular distribution; ``uniform``: evenly, e.g. to hold
        the top rate of a peak for a while). Returns the number of taps."""
        start = time.time() if start is None else start
        total = 0
        for g in self.gateways:
            if district is None or g.ledger.district == district:
                times = [start + (self.rng.uniform(0, window_s) if uniform else
                                  self.rng.triangular(0, window_s, window_s * 0.6))
                         for _ in range(self.plan.students_per_school)]
                g.add_taps(times)
                total += len(times)
        return total

    def library_peak(self, visitors_per_school: int = 120, window_s: float = 600.0, share: float = 1.0) -> int:
        """A share of the schools' libraries get ``visitors_per_school`` visits within ``window_s`` (a break)."""
        start = time.time()
        total = 0
        for g in self.gateways:
            if self.rng.random() < share:
                g.add_library_visits(start + self.rng.uniform(0, window_s) for _ in range(visitors_per_school))
                total += visitors_per_school
        return total

    def outage(self, gateways: Iterable[SimGateway], seconds: float) -> None:
        """These schools lose their uplink for ``seconds``; their records wait in their outboxes."""
        until = time.time() + seconds
        for g in gateways:
            g.go_offline(until)

    def quiesce(self) -> None:
        """Every gateway stops making records; what is in the outboxes is still sent (then ``wait_sent``): the
        ledgers are final, so a store that holds exactly what they acknowledged proves that nothing was lost."""
        for g in self.gateways:
            g.producing = False
            g.wake.set()

    # ---------------------------------------------------------------- what happened

    def connected_count(self) -> int:
        return sum(g.connected for g in self.gateways)

    def acked_records(self) -> int:
        return sum(g.ledger.acked for g in self.gateways)

    def backlog(self) -> int:
        return sum(g.backlog for g in self.gateways)

    def reconnect_times(self) -> list[float]:
        return [t for g in self.gateways for t in g.ledger.reconnect_s]

    def puback_ms(self) -> list[float]:
        return [t for g in self.gateways for t in g.ledger.puback_ms]

    async def wait_connected(self, count: int | None = None, within_s: float = 60.0) -> float:
        """Seconds until ``count`` (default: all) gateways are connected; TimeoutError with the count if not."""
        want = len(self.gateways) if count is None else count
        started = time.monotonic()
        while self.connected_count() < want:
            if time.monotonic() - started > within_s:
                raise TimeoutError(f"{self.connected_count()} of {want} gateways connected after {within_s:.0f} s")
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def wait_sent(self, within_s: float = 60.0) -> None:
        """Until every outbox is empty (all acknowledged); TimeoutError naming the backlog if not."""
        deadline = time.monotonic() + within_s
        while (left := self.backlog()) or self.connected_count() < len(self.gateways):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} records not acknowledged after {within_s:.0f} s")
            await asyncio.sleep(0.05)


def stored_counts(store_url: str, series: str, prefix: str, window_s: float,
                  labels: str = "") -> dict[tuple[str, str], int]:
    """Samples stored per (school, gateway) of ``series`` (e.g. ``edugate_co2_ppm``; ``labels`` adds matchers
    such as ``type="card_tap"``) in the last ``window_s``: one query to VictoriaMetrics, duplicates (same series
    and timestamp) counted once."""
    with contextlib.suppress(OSError):
        urllib.request.urlopen(f"{store_url}/internal/force_flush", timeout=30).read()
    matchers = f'school=~"{prefix}-.*"' + (f",{labels}" if labels else "")
    query = f"sum by (school, gateway) (count_over_time({series}{{{matchers}}}[{int(window_s) + 1}s]))"
    url = f"{store_url}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": f"{time.time() + 1:.3f}"})
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"store query {query!r} failed: {body}")
    return {(r["metric"]["school"], r["metric"]["gateway"]): int(float(r["value"][1]))
            for r in body["data"]["result"]}


def missing_in_store(city: City, store_url: str, window_s: float) -> dict[str, int]:
    """Per gateway whose store count differs from its ledger: acknowledged sensor readings minus stored ones
    (positive: lost; negative: stored more than once under different timestamps, which must not happen).
    Counts the ``co2_ppm`` of every room sensor: one value per acknowledged sensor record."""
    stored = stored_counts(store_url, "edugate_co2_ppm", city.plan.prefix, window_s)
    if not stored and any(g.ledger.telemetry for g in city.gateways):
        raise RuntimeError(f"the store at {store_url} returned no edugate_co2_ppm series of {city.plan.prefix}-* "
                           f"within the last {window_s:.0f} s (query failed, or nothing was written)")
    out = {}
    for g in city.gateways:
        acked = sum(n for device, n in g.ledger.telemetry.items() if device.startswith("env-"))
        have = stored.get((g.school, g.ledger.gateway), 0)
        if acked != have:
            out[g.school] = acked - have
    return out
