"""Central ingest worker on a NATS JetStream cluster: competing consumers of one replicated stream.

Gateways keep speaking MQTT to the cluster's MQTT listeners (``broker.brokers`` lists every node). nats-server
maps the MQTT topic ``edu/v1/{school}/{gateway}/{kind}`` to the NATS subject ``edu.v1.{school}.{gateway}.{kind}``;
a replicated stream holds telemetry, events and state (which one: ``source`` below), and every worker pulls
from one durable consumer (``edugate-ingest``) on it, so each message goes to one worker,
adding a worker adds throughput, and a message a worker took but did not acknowledge (it died) is delivered to
another worker after ``ack_wait_s``.

Only the transport differs from the MQTT worker: :class:`NatsIngestWorker` is an
:class:`~edugate.central.ingest.worker.IngestWorker` whose "client" is :class:`_JetStreamTransport` (an asyncio
loop in its own thread running nats-py). Conversion to line protocol, the store write, the event log and the
acknowledge-after-write rule are the MQTT worker's own code: a message is acked (``+ACK`` to JetStream) only
after the store accepted its lines; what is not acked comes again.

Where the workers pull from (``NatsSettings.source``; ``"auto"``, the default, is ``"mqtt"``):

- ``"mqtt"`` (nats-server 2.9 and later): the MQTT layer's own stream ``$MQTT_msgs``. nats-server sends the
  PUBACK for a QoS 1 PUBLISH only after that stream stored the message (``mqttInitiateMsgDelivery`` ->
  ``jsa.storeMsg``, a JetStream publish that waits for the replicated write), so a worker consuming it reads
  exactly what the gateways were acknowledged. The stream is the server's (interest retention, R =
  ``mqtt.stream_replicas``; the worker creates it as nats-server would only if no MQTT client has connected
  yet); the worker adds its durable consumer with ONE wildcard filter, ``$MQTT.msgs.edu.v1.>`` (nats-server 2.9
  allows one filter per consumer). That also takes what is not for ingest (``cmd``, ``cmd-result``,
  ``stored``): the worker acknowledges it at once, never stores it, and counts it (``messages_skipped``); the
  gateways' own MQTT consumers are separate consumers of the same interest-retention stream, so such a message
  stays until THEY acknowledged it too. Start a worker (or ``--declare-only``) before the gateways publish: a
  message stored while no consumer is interested in it is dropped at once.
- ``"stream"``: a stream of our own (``EDUGATE``) capturing the subjects. nats-server copies a PUBLISH into it
  like into any subscription, unconfirmed, and does not wait for it before the PUBACK: while that stream elects
  a new leader, acknowledged messages are lost (docs/central.md section 6).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import sys
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType
from nats.js.api import StreamConfig as JsStreamConfig
from nats.js.errors import NotFoundError

from edugate.central.ingest.pulled import PulledIngestWorker
from edugate.central.ingest.worker import IngestConfig, IngestStats
from edugate.contract.topics import TOPIC_ROOT

log = logging.getLogger(__name__)

SUBJECT_ROOT = TOPIC_ROOT.replace("/", ".")  # edu/v1 -> edu.v1
KINDS = ("telemetry", "event", "state")
MQTT_STREAM = "$MQTT_msgs"  # nats-server's stream of every MQTT QoS 1/2 message (server/mqtt.go: mqttStreamName)
MQTT_SUBJECT_PREFIX = "$MQTT.msgs."  # ... stored under this prefix + the NATS subject
SOURCES = ("auto", "mqtt", "stream")
MQTT_FILTER = f"{MQTT_SUBJECT_PREFIX}{SUBJECT_ROOT}.>"  # one wildcard filter: nats-server 2.9 allows one


def is_ingested(subject: str) -> bool:
    """Is this (NATS or ``$MQTT.msgs.``) subject one ingest reads? ``edu.v1.{school}.{gateway}.{kind}...`` with
    kind telemetry, event or state; other kinds (cmd, cmd-result, stored) are skipped. A malformed subject counts
    as ingested, so that the worker reports it as an invalid message."""
    parts = subject.removeprefix(MQTT_SUBJECT_PREFIX).split(".")
    return len(parts) < 5 or parts[4] in KINDS


@dataclass(frozen=True)
class NatsSettings:
    """Where the stream is and how it is kept (``ingest.nats`` in ``central.yaml``)."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "EDUGATE"
    durable: str = "edugate-ingest"
    replicas: int = 3
    max_bytes: int = 1024**3  # the stream's disk budget on each node (<= the nodes' max_file_store); oldest go first
    max_age_s: float = 7 * 24 * 3600.0
    ack_wait_s: float = 30.0  # a message taken by a worker that died goes to another one after this
    max_ack_pending: int = 20_000
    fetch_batch: int = 500
    connect_timeout_s: float = 2.0
    subjects: tuple[str, ...] = field(default=tuple(f"{SUBJECT_ROOT}.*.*.{kind}" for kind in KINDS))
    source: str = "auto"  # "mqtt": the MQTT layer's $MQTT_msgs; "stream": our own; "auto": mqtt

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"nats source {self.source!r}: use one of {', '.join(SOURCES)}")

    @property
    def pull_stream(self) -> str:
        """The stream the durable consumer is on."""
        return MQTT_STREAM if self.source == "mqtt" else self.stream

    def stream_config(self) -> JsStreamConfig:
        return JsStreamConfig(name=self.stream, subjects=list(self.subjects), retention=RetentionPolicy.WORK_QUEUE,
                              storage=StorageType.FILE, num_replicas=self.replicas, max_bytes=self.max_bytes,
                              max_age=self.max_age_s, discard=DiscardPolicy.OLD)

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                              deliver_policy=DeliverPolicy.ALL, ack_wait=self.ack_wait_s,
                              max_ack_pending=self.max_ack_pending, max_waiting=512,
                              filter_subject=MQTT_FILTER if self.source == "mqtt" else None)


def resolve_source(settings: NatsSettings) -> NatsSettings:
    """``source: auto`` becomes ``mqtt`` (every nats-server with an MQTT listener, 2.9 included); ``stream`` is
    kept, with a warning."""
    if settings.source == "stream":
        log.warning("pulling from a stream of our own (%s): it can lose acknowledged messages while it elects a "
                    "new leader; use source 'mqtt' (docs/central.md section 6)", settings.stream)
    return replace(settings, source="mqtt") if settings.source == "auto" else settings


def subject_to_topic(subject: str) -> str:
    """``edu.v1.s1.gw1.telemetry`` (or ``$MQTT.msgs.edu.v1.s1.gw1.telemetry``) -> ``edu/v1/s1/gw1/telemetry``
    (ids never hold '.' or '/': contract/ids.py)."""
    return subject.removeprefix(MQTT_SUBJECT_PREFIX).replace(".", "/")


async def ensure_stream(js: Any, settings: NatsSettings) -> None:
    """Create the stream and the durable consumer, or bring an existing stream to the configured settings.
    With ``source: mqtt`` the stream is nats-server's own: created here, as nats-server itself would (its MQTT
    layer uses a stream it finds), only if no MQTT client has connected yet; then the consumer is added."""
    if settings.source == "mqtt":
        try:
            await js.stream_info(MQTT_STREAM)
        except NotFoundError:
            await js.add_stream(JsStreamConfig(name=MQTT_STREAM, subjects=[MQTT_SUBJECT_PREFIX + ">"],
                                               storage=StorageType.FILE, retention=RetentionPolicy.INTEREST,
                                               num_replicas=settings.replicas))
            log.info("created stream %s (R%d) before nats-server's MQTT layer did", MQTT_STREAM, settings.replicas)
        await js.add_consumer(MQTT_STREAM, settings.consumer_config())
        return
    try:
        await js.stream_info(settings.stream)
    except NotFoundError:
        await js.add_stream(settings.stream_config())
        log.info("created stream %s (R%d, subjects %s)", settings.stream, settings.replicas,
                 ", ".join(settings.subjects))
    else:
        await js.update_stream(settings.stream_config())
    await js.add_consumer(settings.stream, settings.consumer_config())  # the same config again is a no-op


class _JetStreamTransport:
    """What :class:`IngestWorker` calls its client: connect, loop, ack, disconnect; nats-py underneath."""

    def __init__(self, worker: NatsIngestWorker) -> None:
        self.worker = worker
        self.settings = worker.nats
        self.broker = ", ".join(self.settings.servers)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-ingest", daemon=True)
        self._ids = itertools.count(1)
        self._unacked: dict[int, Msg] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._task: concurrent.futures.Future[None] | None = None
        self.nc: NatsClient | None = None

    # the calls IngestWorker makes -------------------------------------------------------------------

    def connect_async_first(self) -> None:
        self._thread.start()

    def loop_start(self) -> None:
        self._task = asyncio.run_coroutine_threadsafe(self._consume(), self._loop)

    def ack(self, mid: int, _qos: int) -> None:
        with self._lock:
            msg = self._unacked.pop(mid, None)
        if msg is not None:
            asyncio.run_coroutine_threadsafe(self._ack(msg), self._loop)

    def forget(self, mid: int) -> None:
        """Not acknowledged: JetStream delivers it again (to any worker) after ack_wait."""
        with self._lock:
            self._unacked.pop(mid, None)

    def disconnect(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                self._task.result(timeout=self.settings.connect_timeout_s + 5)

    def loop_stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # the loop's side ---------------------------------------------------------------------------------

    async def _ack(self, msg: Msg) -> None:
        try:
            await msg.ack()
        except Exception as exc:  # a lost ack only means a redelivery
            log.warning("ack of a stream message failed (%s); it will be delivered again", exc)

    async def _connected(self) -> None:
        self.worker.stats.connects += 1
        self.worker.stats.broker_connected = True
        log.info("connected to NATS %s", self.nc.connected_url.netloc if self.nc and self.nc.connected_url else "?")

    async def _disconnected(self) -> None:
        self.worker.stats.broker_connected = False
        if not self._stop.is_set():
            self.worker.stats.disconnects += 1
            log.warning("lost NATS connection; reconnecting (unacknowledged messages come again)")

    async def _error(self, exc: Exception) -> None:
        log.debug("nats: %s", exc)

    async def _consume(self) -> None:
        s = self.settings
        stats = self.worker.stats
        while not self._stop.is_set():
            try:
                self.nc = await nats.connect(list(s.servers), connect_timeout=s.connect_timeout_s,
                                             reconnect_time_wait=0.2, max_reconnect_attempts=-1,
                                             allow_reconnect=True, name=self.worker.cfg.client_id,
                                             disconnected_cb=self._disconnected, reconnected_cb=self._connected,
                                             error_cb=self._error)
                break
            except Exception as exc:  # any failure: retry
                log.warning("cannot reach NATS %s (%s); retrying", ", ".join(s.servers), exc)
                await asyncio.sleep(1.0)
        if self.nc is None:
            return
        await self._connected()
        s = self.settings = resolve_source(s)
        js = self.nc.jetstream(timeout=5)
        psub = None
        delay = 0.2
        while not self._stop.is_set():
            try:
                if psub is None:
                    await ensure_stream(js, s)
                    psub = await js.pull_subscribe_bind(s.durable, s.pull_stream)
                    stats.subscribed = True
                    self.worker.subscribed.set()
                    log.info("pulling from stream %s, durable consumer %s", s.pull_stream, s.durable)
                msgs = await psub.fetch(s.fetch_batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:  # any failure: retry
                log.warning("stream %s: %s: %s; retrying", s.pull_stream, type(exc).__name__, exc)
                stats.subscribed = False
                self.worker.subscribed.clear()
                if psub is not None:
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()
                psub = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.2
            items = []
            for msg in msgs:
                if not is_ingested(msg.subject):  # a command, a result, a confirmation: not ours to store
                    stats.messages_skipped += 1
                    await self._ack(msg)
                    continue
                mid = next(self._ids)
                with self._lock:
                    self._unacked[mid] = msg
                redelivered = bool(msg.metadata.num_delivered and msg.metadata.num_delivered > 1)
                items.append((subject_to_topic(msg.subject), msg.data, mid, redelivered))
            await asyncio.to_thread(self.worker.deliver, items)
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)  # the last acks out before closing
        with contextlib.suppress(Exception):
            await self.nc.close()


async def _quiet(_exc: Exception) -> None:
    """nats-py's error callback: the caller reports the failure once."""


async def declare(settings: NatsSettings, timeout_s: float = 30.0) -> None:
    """Create the durable consumer (and, for ``source: stream``, the stream), retrying while the cluster (or the
    MQTT layer's stream) is not there yet."""
    try:
        nc = await asyncio.wait_for(nats.connect(
            list(settings.servers), connect_timeout=settings.connect_timeout_s, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=0.2, error_cb=_quiet),
            timeout=(settings.connect_timeout_s + 1) * len(settings.servers) * 2 + 1)
    except Exception as exc:  # unreachable, refused, not NATS: say which servers
        raise RuntimeError(f"cannot reach NATS at {', '.join(settings.servers)}: {type(exc).__name__}: {exc}") \
            from None
    try:
        settings = resolve_source(settings)
        js = nc.jetstream(timeout=5)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                await ensure_stream(js, settings)
                return
            except Exception as exc:  # no leader yet, or $MQTT_msgs not created yet
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"durable consumer {settings.durable} on {settings.pull_stream}: {exc}") \
                        from None
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


@dataclass
class NatsIngestStats(IngestStats):
    """The worker's counters, plus the messages of ``$MQTT_msgs`` that are not for ingest."""

    messages_skipped: int = 0  # cmd, cmd-result, stored...: acknowledged at once, never stored


class NatsIngestWorker(PulledIngestWorker):
    """An ingest worker that pulls from the JetStream stream instead of subscribing over MQTT."""

    def __init__(self, cfg: IngestConfig, nats_settings: NatsSettings) -> None:
        self.nats = nats_settings
        super().__init__(cfg)
        self.stats: NatsIngestStats = NatsIngestStats()

    def _make_client(self) -> Any:
        return _JetStreamTransport(self)


def main(argv: list[str] | None = None) -> int:
    """``python -m edugate.central.ingest.nats_worker``: one worker, for tests and benchmarks
    (operators select the transport in ``central.yaml``: ``ingest.transport: nats``)."""
    import argparse
    import signal
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", action="append", required=True, help="nats://host:port of a node (repeat)")
    parser.add_argument("--store", default="http://127.0.0.1:8428")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--stats-file", type=Path)
    parser.add_argument("--events-db", type=Path)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--ack-wait-s", type=float, default=30.0)
    parser.add_argument("--max-bytes", type=int, default=NatsSettings.max_bytes)
    parser.add_argument("--source", choices=SOURCES, default=NatsSettings.source,
                        help="'mqtt': the MQTT layer's $MQTT_msgs (nothing acknowledged lost); "
                        "'stream': a stream of our own (EDUGATE; can lose acknowledged messages); "
                        "'auto' (default): mqtt")
    parser.add_argument("--declare-only", action="store_true",
                        help="create the durable consumer (and stream) and exit: before the gateways publish")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = NatsIngestWorker(
        IngestConfig(client_id=args.client_id, store_url=args.store, stats_file=args.stats_file,
                     events_db=args.events_db, stats_interval_s=0.2),
        NatsSettings(servers=tuple(args.nats), replicas=args.replicas, ack_wait_s=args.ack_wait_s,
                     max_bytes=args.max_bytes, source=args.source))
    if args.declare_only:
        try:
            asyncio.run(declare(worker.nats))
        except RuntimeError as exc:
            print(f"nats_worker --declare-only: {exc}", file=sys.stderr)
            return 1
        return 0
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
