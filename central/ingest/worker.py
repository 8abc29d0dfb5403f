"""Central ingest worker: MQTT broker -> InfluxDB line protocol -> VictoriaMetrics.

One worker = one paho-mqtt client with a persistent session (fixed client id,
``clean_session=False``) and ``manual_ack=True``: a message is PUBACKed only
after the lines made from it are written to the store. Telemetry and events
come through one plain subscription by default (a single worker: Mosquitto
restores it from its persistence file after a restart, so what gateways send
before the worker is back is queued for it); with a ``group``, through shared
subscriptions (``$share/{group}/...``) so several workers split the load, but
Mosquitto 2.0 does not restore those after its own restart and drops what
arrives before the workers re-subscribe: the worker asks the broker for its
version (``$SYS/broker/version``) and says so loudly. Every worker also follows
all ``.../state`` topics and keeps the fleet table.

Two threads:

* paho's network thread receives messages and appends them to a bounded
  in-memory inbox; when the inbox is full it blocks, so TCP backpressure
  slows the broker down instead of memory growing.
* the caller's thread (:meth:`IngestWorker.run`) takes messages from the
  inbox, converts them, writes up to ``batch_lines`` lines (or whatever came
  within ``batch_ms``) in one HTTP request, then acknowledges those messages.
  While the store is down it retries with back-off and acknowledges nothing:
  the broker keeps the messages. The same holds for the event store
  (``--events-db`` or PostgreSQL): a message whose events were not committed
  is neither acknowledged nor confirmed.

After each write, the worker confirms to every gateway in the batch what it
stored of it: one small message per gateway on ``edu/v1/{school}/{gateway}/stored``
(the seq ranges of its messages, ``edugate.contract.stored``), published only
after the time-series write and the event-store commit both succeeded. A gateway
with ``uplink.end_to_end_ack`` keeps its records until this confirmation, so a
broker crash costs nothing (docs/mqtt-contract.md, *End-to-end acknowledgement*).

Packet ids are scoped to the MQTT session, not to one connection: an id
received before a reconnect is still acknowledged after it if the broker
resumed the session; if it did not, acknowledgements for the old session are
dropped (the broker sends those messages again anyway).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import urllib3.exceptions
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from edugate.central.eventstore import EventStore
from edugate.central.fleet import FleetTable, InvalidState, parse_state
from edugate.central.ingest.lineproto import LineEncoder, state_line
from edugate.common.mqtt import BrokerAddress, BrokerConfig, MqttTls, ReconnectPolicy, paho_client
from edugate.common.ratelimit import LimitedLog
from edugate.contract.stored import Confirmation
from edugate.contract.topics import TOPIC_ROOT, InvalidTopic, Topic, parse_topic, stored_topic

log = logging.getLogger(__name__)


def printable_topic(topic: str) -> str:
    """A topic as a log line may show it: as it is when printable, else its repr (a newline in a topic name
    must not forge a second log line)."""
    return topic if topic.isprintable() else repr(topic)

GROUP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
SYS_VERSION_TOPIC = "$SYS/broker/version"
SHARE_UNSAFE = ("mosquitto version 1.", "mosquitto version 2.0.")  # do not restore $share subscriptions
MSG_OVERHEAD = 256  # bytes counted per queued message on top of its payload
IDLE_GAP_S = 0.005  # a batch is written when no message came for this long (or batch_ms/batch_lines is reached)


@dataclass(frozen=True)
class IngestConfig:
    """Everything one worker needs; the CLI builds it from its options."""

    client_id: str
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    group: str = ""  # '' = one worker, plain subscription (the default that cannot lose); see SHARE_UNSAFE
    store_url: str = "http://127.0.0.1:8428"
    bucket: str = "edugate"
    org: str = ""
    store_token: str = ""
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca_file: Path | None = None
    keepalive_s: int = 30
    batch_lines: int = 10_000
    batch_ms: int = 50
    queue_bytes: int = 64 * 1024 * 1024
    store_timeout_s: float = 10.0
    shutdown_grace_s: float = 10.0
    summary_interval_s: float = 10.0
    stats_file: Path | None = None
    stats_interval_s: float = 1.0
    events_db: Path | None = None  # also keep every event record in this SQLite file (gateway/eventstore.py)
    confirm_stored: bool = True  # publish what was stored on each gateway's .../stored (end-to-end acknowledgement)
    # The whole broker section (failover list, mTLS...); None: built from broker_host/port, username, tls above.
    broker: BrokerConfig | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.client_id or len(self.client_id) > 128 or any(c in self.client_id for c in "/+#"):
            raise ValueError(f"client id {self.client_id!r}: 1 to 128 characters, without '/', '+' or '#'")
        if not set(self.group) <= GROUP_CHARS:
            raise ValueError(f"group {self.group!r}: use letters, digits, '-' and '_' ('' = not shared)")
        if not 1 <= self.broker_port <= 65535:
            raise ValueError(f"broker port {self.broker_port} is not between 1 and 65535")
        if self.batch_lines < 1 or self.batch_ms < 0 or self.queue_bytes < 1024:
            raise ValueError("batch_lines must be >= 1, batch_ms >= 0 and queue_bytes >= 1024")
        if not self.bucket:
            raise ValueError("bucket must not be empty")
        if self.broker is not None and self.broker.protocol == "5" and self.broker.session_expiry_s is None:
            raise ValueError("an ingest worker needs a persistent session: with MQTT 5 set broker.session_expiry_s")

    def broker_config(self) -> BrokerConfig:
        """The broker settings for the MQTT builder, always with a persistent session under ``client_id``."""
        worker = {"client_id": self.client_id, "clean_session": False}
        if self.broker is not None:
            return self.broker.model_copy(update=worker)
        return BrokerConfig(brokers=[str(BrokerAddress(self.broker_host, self.broker_port))], username=self.username,
                            tls=MqttTls(ca_file=self.tls_ca_file) if self.tls else None, keepalive_s=self.keepalive_s,
                            reconnect=ReconnectPolicy(first_delay_s=0.1, max_delay_s=1.0), **worker)

    @property
    def shared(self) -> bool:
        return bool(self.group)

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        """Shared by ``group``; an empty group means a plain subscription (one worker: Mosquitto restores
        plain subscriptions of a persistent session after a restart, but not shared ones)."""
        share = f"$share/{self.group}/" if self.group else ""
        return [
            (f"{share}{TOPIC_ROOT}/+/+/telemetry", 1),
            (f"{share}{TOPIC_ROOT}/+/+/event", 1),
            (f"{TOPIC_ROOT}/+/+/state", 1),
        ]


@dataclass
class IngestStats:
    """Counters since the worker started (``as_dict`` is what the stats file holds)."""

    messages: int = 0  # received from the broker
    messages_acked: int = 0
    messages_redelivered: int = 0  # DUP flag set: sent before, not acknowledged (crash, reconnect)
    messages_invalid: int = 0  # whole payload unusable: bad topic, not JSON, not an array, bad state
    messages_rejected: int = 0  # the store refused them (HTTP 400) even alone: logged, acked
    messages_abandoned: int = 0  # not written at shutdown (store down): the broker sends them again
    state_messages: int = 0
    records: int = 0
    records_invalid: int = 0
    records_unsynced: int = 0
    values_invalid: int = 0
    values_ignored: int = 0  # strings: allowed on the wire, not stored
    labels_dropped: int = 0  # event data under a label key that cannot be a label (the event is still stored)
    events_stored: int = 0  # new rows in the event log (--events-db)
    events_store_errors: int = 0  # failed event-store writes (each retried: the message waits, unacknowledged)
    events_store_up: bool = True
    confirmations: int = 0  # messages published on gateways' .../stored topics
    confirm_errors: int = 0  # confirmations paho refused to queue (not connected): the gateway sends again
    lines_written: int = 0
    points_written: int = 0
    writes: int = 0
    write_errors: int = 0
    store_latency_ms_last: float = 0.0
    store_latency_ms_max: float = 0.0
    store_latency_ms_total: float = 0.0
    connects: int = 0
    disconnects: int = 0
    broker_connected: bool = False
    subscribed: bool = False
    store_up: bool = True
    broker_version: str = ""  # from $SYS/broker/version (asked only with a shared group)
    share_unsafe: bool = False  # a shared group on a broker known not to restore it after a restart

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["store_latency_ms_avg"] = round(self.store_latency_ms_total / self.writes, 2) if self.writes else 0.0
        return out


@dataclass(slots=True)
class _Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int
    session: int
    received_ms: int

    @property
    def size(self) -> int:
        return len(self.payload) + MSG_OVERHEAD


@dataclass(frozen=True, slots=True)
class _Records:
    """What a data message held: whose, which kind, its seq range; ``events``: its payload goes to the event store."""

    topic: Topic
    first: int | None
    last: int | None
    events: bool


@dataclass(slots=True)
class _Batch:
    messages: list[_Msg] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # each message's lines: lines[start:end]
    lines: list[str] = field(default_factory=list)
    points: list[int] = field(default_factory=list)  # each message's field values
    records: list[_Records | None] = field(default_factory=list)  # each message's records (None: not data)

    def add(self, msg: _Msg, lines: list[str], points: int, records: _Records | None = None) -> None:
        start = len(self.lines)
        self.lines.extend(lines)
        self.messages.append(msg)
        self.spans.append((start, len(self.lines)))
        self.points.append(points)
        self.records.append(records)

    def only(self, index: int) -> _Batch:
        start, end = self.spans[index]
        return _Batch([self.messages[index]], [(0, end - start)], self.lines[start:end], [self.points[index]],
                      [self.records[index]])


class _Outcome(Enum):
    WRITTEN = "written"
    REJECTED = "rejected"  # HTTP 400/413: retrying the same body cannot help
    GAVE_UP = "gave up"  # stopping while the store is down


class _Inbox:
    """A FIFO bounded by bytes; ``put`` blocks while full (one message always fits)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: deque[_Msg] = deque()
        self._bytes = 0
        self._cond = threading.Condition()

    def put(self, msg: _Msg, cancel: threading.Event) -> bool:
        with self._cond:
            while self._items and self._bytes + msg.size > self.max_bytes:
                if cancel.is_set():
                    return False
                self._cond.wait(0.1)
            self._items.append(msg)
            self._bytes += msg.size
            self._cond.notify_all()
        return True

    def get(self, timeout: float) -> _Msg | None:
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait_for(lambda: bool(self._items), timeout)
            if not self._items:
                return None
            msg = self._items.popleft()
            self._bytes -= msg.size
            self._cond.notify_all()
            return msg

    def sizes(self) -> tuple[int, int]:
        with self._cond:
            return len(self._items), self._bytes


class IngestWorker:
    """One ingest worker. ``run()`` blocks until ``stop()``; both are thread-safe."""

    def __init__(self, cfg: IngestConfig) -> None:
        self.cfg = cfg
        self.stats = IngestStats()
        self.fleet = FleetTable()
        self.subscribed = threading.Event()
        self._encoder = LineEncoder()
        self._inbox = _Inbox(cfg.queue_bytes)
        self._stopping = threading.Event()
        self._hard_stop = threading.Event()
        self._stop_deadline = float("inf")
        self._ack_lock = threading.Lock()
        self._pending: dict[int, int] = {}  # packet id -> copies received and not yet written
        self._session = 0  # bumped whenever the broker starts a new session for us
        self._broker_down_logged = False
        self._invalid_log = LimitedLog(log)
        self._influx = InfluxDBClient(url=cfg.store_url, token=cfg.store_token, org=cfg.org,
                                      timeout=int(cfg.store_timeout_s * 1000))
        self._write_api = self._influx.write_api(write_options=SYNCHRONOUS)
        self.events = EventStore(cfg.events_db) if cfg.events_db else None
        self._client = self._make_client()
        self._summary_base: dict[str, Any] = self.stats.as_dict()
        self._next_summary = time.monotonic() + cfg.summary_interval_s
        self._next_stats = 0.0

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Connect, then convert/write/acknowledge until :meth:`stop`; flush and disconnect."""
        cfg = self.cfg
        log.info("ingest %s: broker %s, group %r, store %s", cfg.client_id,
                 ", ".join(cfg.broker_config().brokers), cfg.group, cfg.store_url)
        self._client.connect_async_first()
        self._client.loop_start()
        try:
            while not (self._stopping.is_set() and (self._hard_stop.is_set() or self._inbox.sizes()[0] == 0)):
                batch = self._collect()
                if batch is not None:
                    self._store(batch)
                self._periodic()
        finally:
            self._finish()

    def stop(self, *, hard: bool = False) -> None:
        """Stop taking messages, write and acknowledge what is queued, disconnect.
        ``hard`` (or a second call) gives up waiting for a store that is down."""
        if self._stopping.is_set() or hard:
            self._hard_stop.set()
        self._stop_deadline = min(self._stop_deadline, time.monotonic() + self.cfg.shutdown_grace_s)
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _finish(self) -> None:
        while (msg := self._inbox.get(0)) is not None:
            self._abandon([msg])
        if self.stats.messages_abandoned:
            log.warning("%d message(s) not written (store down); the broker delivers them again to client id %r",
                        self.stats.messages_abandoned, self.cfg.client_id)
        self._client.disconnect()
        self._client.loop_stop()
        self._influx.close()
        self._write_stats_file()
        log.info("ingest stopped: %s", self._summary_line(self.stats.as_dict(), {}, None))

    # ------------------------------------------------------------------ MQTT (paho's thread)

    def _make_client(self) -> Any:
        """paho, built by edugate.common.mqtt: failover along the broker list, jittered reconnects."""
        client = paho_client(self.cfg.broker_config(), password=self.cfg.password, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags,
                    reason: mqtt.ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            if not self._broker_down_logged:  # once per outage: paho retries every second
                self._broker_down_logged = True
                log.error("broker %s refused the connection: %s; retrying", self._client.broker, reason)
            return
        with self._ack_lock:
            if not flags.session_present:
                self._session += 1
                self._pending.clear()
        self.stats.connects += 1
        self.stats.broker_connected = True
        self._broker_down_logged = False
        log.info("connected to broker %s as %r (%s)", self._client.broker,
                 self.cfg.client_id, "session resumed" if flags.session_present else "new session")
        client.subscribe(self.cfg.subscriptions)
        if self.cfg.shared:
            client.subscribe(SYS_VERSION_TOPIC, 0)  # answered with the retained version: see _check_broker

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[mqtt.ReasonCode],
                      _props: Any) -> None:
        if len(reasons) != len(self.cfg.subscriptions):
            return  # the $SYS/broker/version subscription: a refusal there only means no version check
        failed = [topic for (topic, _), rc in zip(self.cfg.subscriptions, reasons, strict=False) if rc.is_failure]
        if failed:
            log.error("broker refused subscription(s) %s (ACL? shared subscriptions disabled?)", ", ".join(failed))
            return
        self.stats.subscribed = True
        self.subscribed.set()

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if not self._broker_down_logged:
            self._broker_down_logged = True
            log.warning("cannot reach broker %s; retrying", self._client.broker)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: mqtt.ReasonCode,
                       _props: Any) -> None:
        self.stats.broker_connected = False
        self.stats.subscribed = False
        self.subscribed.clear()
        if self._stopping.is_set():
            return
        self.stats.disconnects += 1
        log.warning("lost broker %s (%s); unacknowledged messages come again after reconnecting",
                    self._client.broker, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Queue the message (blocking while the inbox is full). Never raises: paho's thread must live."""
        if bytes(message._topic).startswith(b"$SYS/"):
            self._check_broker(message.payload)
            return
        self.stats.messages += 1
        if message.dup:
            self.stats.messages_redelivered += 1
        if self._stopping.is_set():
            return  # not acknowledged: delivered again to this client id
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)  # the raw bytes, for the log line
        with self._ack_lock:
            session = self._session
            if message.qos:
                self._pending[message.mid] = self._pending.get(message.mid, 0) + 1
        msg = _Msg(topic, message.payload, message.mid, message.qos, session, int(time.time() * 1000))
        if not self._inbox.put(msg, self._stopping):
            self._release(msg)

    def _check_broker(self, payload: bytes) -> None:
        """A shared group on a broker that forgets shared subscriptions at its restart: say so, loudly."""
        version = payload.decode(errors="replace").strip()
        self.stats.broker_version = version
        if self.cfg.shared and version.lower().startswith(SHARE_UNSAFE):
            self.stats.share_unsafe = True
            log.error("UNSAFE: group %r uses shared subscriptions ($share/...), which %s does not restore after "
                      "its own restart: whatever gateways send between the broker's restart and this worker's "
                      "re-subscription is DROPPED. Run one worker with a plain subscription (--group '', the "
                      "default) on this broker; several workers only on a broker that keeps shared consumption "
                      "across its restart (see docs/central.md)", self.cfg.group, version)

    # ------------------------------------------------------------------ converting (the run thread)

    def _collect(self) -> _Batch | None:
        first = self._inbox.get(0.2)
        if first is None:
            return None
        batch = _Batch()
        self._convert(first, batch)
        deadline = time.monotonic() + self.cfg.batch_ms / 1000
        while len(batch.lines) < self.cfg.batch_lines:
            # wait for more while messages keep coming, but not after a pause of IDLE_GAP_S: the broker may be
            # holding the rest back until we acknowledge (its in-flight window)
            wait = 0.0 if self._stopping.is_set() else min(deadline - time.monotonic(), IDLE_GAP_S)
            msg = self._inbox.get(wait)
            if msg is None:
                break
            self._convert(msg, batch)
        return batch

    def _convert(self, msg: _Msg, batch: _Batch) -> None:
        try:
            topic = parse_topic(msg.topic)
        except InvalidTopic as exc:
            self.stats.messages_invalid += 1
            self._invalid_log.warning("%s: message skipped: %s", printable_topic(msg.topic), exc)
            batch.add(msg, [], 0)
            return
        if topic.kind == "state":
            lines = self._convert_state(msg, topic.school, topic.gateway)
            batch.add(msg, lines, len(lines))
            return
        conv = self._encoder.convert(msg.payload, topic, int(time.time() * 1000))
        records = _Records(topic, conv.min_seq, conv.max_seq,
                           self.events is not None and topic.kind == "event" and not conv.payload_invalid)
        stats = self.stats
        stats.records += conv.records
        stats.records_invalid += conv.invalid_records
        stats.records_unsynced += conv.unsynced
        stats.values_invalid += conv.invalid_values
        stats.values_ignored += conv.ignored_values
        stats.labels_dropped += conv.dropped_labels
        if conv.payload_invalid:
            stats.messages_invalid += 1
            self._invalid_log.warning("%s: message skipped (%d bytes): %s", printable_topic(msg.topic),
                                      len(msg.payload), conv.problems[0])
        elif conv.problems:
            shown = "; ".join(str(p) for p in conv.problems[:5])
            more = f" (and {len(conv.problems) - 5} more)" if len(conv.problems) > 5 else ""
            self._invalid_log.warning("%s: %d record(s) skipped, %d value(s) skipped: %s%s", printable_topic(msg.topic),
                                      conv.invalid_records, conv.invalid_values, shown, more)
        batch.add(msg, conv.lines, conv.points, records)

    def _convert_state(self, msg: _Msg, school: str, gateway: str) -> list[str]:
        self.stats.state_messages += 1
        try:
            doc, problems = parse_state(msg.payload)
        except InvalidState as exc:
            self.stats.messages_invalid += 1
            self._invalid_log.warning("%s: state skipped: %s", printable_topic(msg.topic), exc)
            return []
        for problem in problems:
            self._invalid_log.warning("%s: %s", printable_topic(msg.topic), problem)
        if doc is None:
            self.fleet.forget(school, gateway)
            log.info("%s/%s: retained state cleared; removed from the fleet table", school, gateway)
            return []
        ts = self.fleet.apply(school, gateway, doc, msg.received_ms)
        return [state_line(school, gateway, doc.online, ts)]

    # ------------------------------------------------------------------ writing and acknowledging

    def _store(self, batch: _Batch) -> None:
        """Write the batch's lines and events; then acknowledge its messages and confirm them to the gateways."""
        outcome = self._write(batch.lines) if batch.lines else _Outcome.WRITTEN
        if outcome is _Outcome.REJECTED and len(batch.messages) > 1:
            for index in range(len(batch.messages)):  # find the message the store refuses
                self._store(batch.only(index))
            return
        if outcome is _Outcome.GAVE_UP or not self._write_events(batch):
            self._abandon(batch.messages)
            return
        if outcome is _Outcome.WRITTEN:
            self.stats.lines_written += len(batch.lines)
            self.stats.points_written += sum(batch.points)
        else:
            self.stats.messages_rejected += 1
            self._invalid_log.warning("%s: the store refused this message's %d line(s); acknowledged and dropped "
                                      "(first line: %.200s)", printable_topic(batch.messages[0].topic),
                                      len(batch.lines), batch.lines[0], key="refused")
        self._ack(batch.messages)
        self._confirm(batch)

    def _write_events(self, batch: _Batch) -> bool:
        """Commit the event records of the batch's event messages to the event store (idempotent on (school,
        gateway, seq)), retrying while it is down, like the time-series store; False: stopping, not all written."""
        if self.events is None:
            return True
        for msg, records in zip(batch.messages, batch.records, strict=True):
            if records is None or not records.events:
                continue
            delay = 0.1
            while True:
                try:
                    self.stats.events_stored += self.events.add_payload(records.topic.school, records.topic.gateway,
                                                                        msg.payload)
                    break
                except sqlite3.Error as exc:  # PostgreSQL's EventStoreUnavailable is one too
                    self.stats.events_store_errors += 1
                    if self.stats.events_store_up:
                        self.stats.events_store_up = False
                        log.warning("event store unavailable (%s); retrying, nothing is acknowledged or confirmed "
                                    "meanwhile (the broker keeps the messages)", exc)
                if self._hard_stop.is_set() or (self._stopping.is_set() and time.monotonic() > self._stop_deadline):
                    return False
                self._hard_stop.wait(delay)
                delay = min(delay * 2, 2.0)
                self._periodic()
            if not self.stats.events_store_up:
                self.stats.events_store_up = True
                log.info("event store is back; writing resumes")
        return True

    def _confirm(self, batch: _Batch) -> None:
        """Tell each gateway of the batch which of its records are stored: one message per gateway."""
        if not self.cfg.confirm_stored:
            return
        per_gateway: dict[tuple[str, str], Confirmation] = {}
        for records in batch.records:
            if records is None or records.first is None or records.last is None:
                continue
            key = (records.topic.school, records.topic.gateway)
            per_gateway.setdefault(key, Confirmation()).add(records.topic.kind, records.first, records.last)
        for (school, gateway), confirmation in per_gateway.items():
            info = self._client.publish(stored_topic(school, gateway), confirmation.encode(), qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.stats.confirmations += 1
            else:  # not connected: the gateway sends those records again after its deadline
                self.stats.confirm_errors += 1

    def _write(self, lines: list[str]) -> _Outcome:
        """Write once or retry until the store takes it; give up only when stopping."""
        body = "\n".join(lines).encode()
        delay = 0.1
        while True:
            started = time.perf_counter()
            try:
                self._write_api.write(self.cfg.bucket, self.cfg.org, record=body, write_precision=WritePrecision.MS)
            except ApiException as exc:
                if exc.status in (400, 413):
                    self._invalid_log.warning("store refused a write of %d line(s): HTTP %s %s", len(lines),
                                              exc.status, (exc.body or b"")[:300], key="refused")
                    return _Outcome.REJECTED
                error = f"HTTP {exc.status} {exc.reason}"
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                self._record_latency((time.perf_counter() - started) * 1000)
                if not self.stats.store_up:
                    self.stats.store_up = True
                    log.info("store %s is back; writing resumes", self.cfg.store_url)
                return _Outcome.WRITTEN
            self.stats.write_errors += 1
            if self.stats.store_up:
                self.stats.store_up = False
                log.warning("store %s unavailable (%s); retrying, nothing is acknowledged meanwhile "
                            "(the broker keeps the messages)", self.cfg.store_url, error)
            if self._hard_stop.is_set() or (self._stopping.is_set() and time.monotonic() > self._stop_deadline):
                return _Outcome.GAVE_UP
            self._hard_stop.wait(delay)
            delay = min(delay * 2, 2.0)
            self._periodic()

    def _record_latency(self, ms: float) -> None:
        stats = self.stats
        stats.writes += 1
        stats.store_latency_ms_last = round(ms, 2)
        stats.store_latency_ms_total += ms
        stats.store_latency_ms_max = max(stats.store_latency_ms_max, round(ms, 2))

    def _ack(self, messages: list[_Msg]) -> None:
        to_ack: list[tuple[int, int]] = []
        with self._ack_lock:
            for msg in messages:
                if msg.qos and msg.session == self._session:
                    left = self._pending.get(msg.mid, 0) - 1
                    if left > 0:
                        self._pending[msg.mid] = left  # a redelivered copy is still queued: ack once, after it
                    elif left == 0:
                        del self._pending[msg.mid]
                        to_ack.append((msg.mid, msg.qos))
        for mid, qos in to_ack:
            self._client.ack(mid, qos)
        self.stats.messages_acked += len(to_ack)

    def _abandon(self, messages: list[_Msg]) -> None:
        """Messages that will not be written (stopping while the store is down): not acknowledged."""
        self.stats.messages_abandoned += len(messages)
        for msg in messages:
            self._release(msg)

    def _release(self, msg: _Msg) -> None:
        """Forget a message without acknowledging it: the broker delivers it again."""
        with self._ack_lock:
            if msg.qos and msg.session == self._session and msg.mid in self._pending:
                left = self._pending[msg.mid] - 1
                if left > 0:
                    self._pending[msg.mid] = left
                else:
                    del self._pending[msg.mid]

    # ------------------------------------------------------------------ reporting

    def _periodic(self) -> None:
        now = time.monotonic()
        if self.cfg.stats_file is not None and now >= self._next_stats:
            self._next_stats = now + self.cfg.stats_interval_s
            self._write_stats_file()
        if self.cfg.summary_interval_s > 0 and now >= self._next_summary:
            current = self.stats.as_dict()
            log.info("ingest: %s", self._summary_line(current, self._summary_base, self.cfg.summary_interval_s))
            self._summary_base = current
            self._next_summary = now + self.cfg.summary_interval_s

    def _summary_line(self, cur: dict[str, Any], base: dict[str, Any], interval_s: float | None) -> str:
        """Counts since ``base``; with ``interval_s`` also the rate, the queue and the link states."""
        def delta(key: str) -> int:
            return int(cur[key] - base.get(key, 0))

        writes = delta("writes")
        latency = (cur["store_latency_ms_total"] - base.get("store_latency_ms_total", 0.0)) / writes if writes else 0.0
        line = (f"{delta('messages')} msgs, {delta('records')} records, {delta('lines_written')} lines, "
                f"{delta('points_written')} points")
        if interval_s:
            line += f" ({delta('points_written') / interval_s:.0f} points/s)"
        line += (f", {delta('records_invalid')} invalid records, {delta('messages_invalid')} invalid msgs, "
                 f"{writes} writes (avg {latency:.1f} ms), {delta('write_errors')} write errors")
        if interval_s:
            queued, queued_bytes = self._inbox.sizes()
            line += (f"; queue {queued} msgs/{queued_bytes // 1024} KiB; broker "
                     f"{'up' if cur['broker_connected'] else 'DOWN'}, store {'up' if cur['store_up'] else 'DOWN'}")
        return line

    def snapshot(self) -> dict[str, Any]:
        """Counters, queue size and the fleet table (what ``--stats-file`` holds)."""
        queued, queued_bytes = self._inbox.sizes()
        return {"client_id": self.cfg.client_id, "pid": os.getpid(), "time": time.time(), **self.stats.as_dict(),
                "queued_messages": queued, "queued_bytes": queued_bytes, "fleet": self.fleet.snapshot()}

    def _write_stats_file(self) -> None:
        path = self.cfg.stats_file
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.snapshot(), indent=1) + "\n")
            os.replace(tmp, path)
