"""Central ingest worker on a NATS JetStream cluster: competing consumers of one replicated stream.

Gateways keep speaking MQTT to the cluster's MQTT listeners (``broker.brokers`` lists every node). nats-server
maps the MQTT topic ``edu/v1/{school}/{gateway}/{kind}`` to the NATS subject ``edu.v1.{school}.{gateway}.{kind}``;
the stream ``EDUGATE`` (file store, R3 by default, work-queue retention) captures telemetry, events and state,
and every worker pulls from one durable consumer (``edugate-ingest``), so each message goes to one worker,
adding a worker adds throughput, and a message a worker took but did not acknowledge (it died) is delivered to
another worker after ``ack_wait_s``.

Only the transport differs from the MQTT worker: :class:`NatsIngestWorker` is an
:class:`~edugate.central.ingest.worker.IngestWorker` whose "client" is :class:`_JetStreamTransport` (an asyncio
loop in its own thread running nats-py). Conversion to line protocol, the store write, the event log and the
acknowledge-after-write rule are the MQTT worker's own code: a message is acked (``+ACK`` to JetStream) only
after the store accepted its lines; what is not acked comes again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType
from nats.js.api import StreamConfig as JsStreamConfig
from nats.js.errors import NotFoundError

from edugate.central.ingest.pulled import PulledIngestWorker
from edugate.central.ingest.worker import IngestConfig
from edugate.contract.topics import TOPIC_ROOT

log = logging.getLogger(__name__)

SUBJECT_ROOT = TOPIC_ROOT.replace("/", ".")  # edu/v1 -> edu.v1
KINDS = ("telemetry", "event", "state")


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

    def stream_config(self) -> JsStreamConfig:
        return JsStreamConfig(name=self.stream, subjects=list(self.subjects), retention=RetentionPolicy.WORK_QUEUE,
                              storage=StorageType.FILE, num_replicas=self.replicas, max_bytes=self.max_bytes,
                              max_age=self.max_age_s, discard=DiscardPolicy.OLD)

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                              deliver_policy=DeliverPolicy.ALL, ack_wait=self.ack_wait_s,
                              max_ack_pending=self.max_ack_pending, max_waiting=512)


def subject_to_topic(subject: str) -> str:
    """``edu.v1.s1.gw1.telemetry`` -> ``edu/v1/s1/gw1/telemetry`` (ids never hold '.' or '/': contract/ids.py)."""
    return subject.replace(".", "/")


async def ensure_stream(js: Any, settings: NatsSettings) -> None:
    """Create the stream and the durable consumer, or bring an existing stream to the configured settings."""
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
        js = self.nc.jetstream(timeout=5)
        psub = None
        delay = 0.2
        while not self._stop.is_set():
            try:
                if psub is None:
                    await ensure_stream(js, s)
                    psub = await js.pull_subscribe_bind(s.durable, s.stream)
                    stats.subscribed = True
                    self.worker.subscribed.set()
                    log.info("pulling from stream %s, durable consumer %s", s.stream, s.durable)
                msgs = await psub.fetch(s.fetch_batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:  # any failure: retry
                log.warning("stream %s: %s: %s; retrying", s.stream, type(exc).__name__, exc)
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


class NatsIngestWorker(PulledIngestWorker):
    """An ingest worker that pulls from the JetStream stream instead of subscribing over MQTT."""

    def __init__(self, cfg: IngestConfig, nats_settings: NatsSettings) -> None:
        self.nats = nats_settings
        super().__init__(cfg)

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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = NatsIngestWorker(
        IngestConfig(client_id=args.client_id, store_url=args.store, stats_file=args.stats_file,
                     events_db=args.events_db, stats_interval_s=0.2),
        NatsSettings(servers=tuple(args.nats), replicas=args.replicas, ack_wait_s=args.ack_wait_s,
                     max_bytes=args.max_bytes))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
