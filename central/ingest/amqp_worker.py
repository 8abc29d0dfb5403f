"""Central ingest worker on a RabbitMQ cluster: competing consumers of one replicated quorum queue.

Gateways keep speaking MQTT to the cluster's MQTT listeners (``uplink.brokers`` lists every node). RabbitMQ's
MQTT plugin publishes what a gateway sends to the ``amq.topic`` exchange with the routing key made from the
topic (``edu/v1/{school}/{gateway}/{kind}`` -> ``edu.v1.{school}.{gateway}.{kind}``) and, for QoS 1, sends the
PUBACK only after every queue the message was routed to confirmed it (for a quorum queue: after a majority of
its replicas wrote it). The quorum queue ``edugate-ingest`` (one replica per node) is bound to telemetry, event
and state; every worker consumes from it with a prefetch window, so each message goes to one worker, adding a
worker adds throughput, and what a worker took but did not acknowledge (it died, its channel closed) is handed
to another worker at once.

Only the transport differs from the MQTT worker: :class:`AmqpIngestWorker` is an
:class:`~edugate.central.ingest.worker.IngestWorker` whose "client" is :class:`_AmqpTransport` (an asyncio loop
in its own thread running aio-pika). Conversion, the store write, the event log and the acknowledge-after-write
rule are the MQTT worker's own code: a delivery is acknowledged (``basic.ack``) only after the store accepted
its lines; what is not acknowledged comes again.

The queue must exist before the gateways publish: a message routed to no queue is confirmed and dropped by the
broker. The first worker declares it (or ``python -m edugate.central.ingest.amqp_worker --declare-only``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from edugate.central.ingest.pulled import PulledIngestWorker
from edugate.central.ingest.worker import IngestConfig
from edugate.contract.topics import TOPIC_ROOT

log = logging.getLogger(__name__)

ROUTING_ROOT = TOPIC_ROOT.replace("/", ".")  # edu/v1 -> edu.v1
KINDS = ("telemetry", "event", "state")


@dataclass(frozen=True)
class AmqpSettings:
    """Where the queue is and how it is kept (``ingest.amqp`` in ``central.yaml``)."""

    servers: tuple[str, ...] = ("amqp://guest:guest@127.0.0.1:5672/",)
    queue: str = "edugate-ingest"
    exchange: str = "amq.topic"  # where the MQTT plugin publishes (mqtt.exchange)
    replicas: int = 3  # x-quorum-initial-group-size: one replica per node of a 3-node cluster
    prefetch: int = 2000  # deliveries a worker holds unacknowledged at most
    connect_timeout_s: float = 3.0
    bindings: tuple[str, ...] = field(default=tuple(f"{ROUTING_ROOT}.*.*.{kind}" for kind in KINDS))

    def queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum", "x-quorum-initial-group-size": self.replicas}


def routing_key_to_topic(key: str) -> str:
    """``edu.v1.s1.gw1.telemetry`` -> ``edu/v1/s1/gw1/telemetry`` (ids never hold '.' or '/': contract/ids.py)."""
    return key.replace(".", "/")


async def declare_queue(channel: AbstractChannel, settings: AmqpSettings) -> AbstractQueue:
    """Declare the quorum queue (idempotent with the same arguments) and bind it to the gateways' topics."""
    queue = await channel.declare_queue(settings.queue, durable=True, arguments=settings.queue_arguments())
    exchange = await channel.get_exchange(settings.exchange, ensure=False)
    for key in settings.bindings:
        await queue.bind(exchange, routing_key=key)
    return queue


class _AmqpTransport:
    """What :class:`IngestWorker` calls its client: connect, loop, ack, disconnect; aio-pika underneath."""

    def __init__(self, worker: AmqpIngestWorker) -> None:
        self.worker = worker
        self.settings = worker.amqp
        self.broker = ", ".join(_safe_url(u) for u in self.settings.servers)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqp-ingest", daemon=True)
        self._ids = itertools.count(1)
        self._unacked: dict[int, AbstractIncomingMessage] = {}
        self._acks: list[AbstractIncomingMessage] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_async: asyncio.Event | None = None
        self._task: concurrent.futures.Future[None] | None = None
        self._inbound: asyncio.Queue[AbstractIncomingMessage] | None = None

    # the calls IngestWorker makes -------------------------------------------------------------------

    def connect_async_first(self) -> None:
        self._thread.start()

    def loop_start(self) -> None:
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)

    def ack(self, mid: int, _qos: int) -> None:
        with self._lock:
            msg = self._unacked.pop(mid, None)
            if msg is None:
                return
            self._acks.append(msg)
            first = len(self._acks) == 1
        if first:  # one hop to the loop for every batch of acks
            self._loop.call_soon_threadsafe(self._flush_acks)

    def forget(self, mid: int) -> None:
        """Not acknowledged: RabbitMQ delivers it again (to any worker) once this channel closes."""
        with self._lock:
            self._unacked.pop(mid, None)

    def disconnect(self) -> None:
        self._stop.set()
        if self._stop_async is not None:
            self._loop.call_soon_threadsafe(self._stop_async.set)
        if self._task is not None:
            with contextlib.suppress(Exception):
                self._task.result(timeout=self.settings.connect_timeout_s + 10)

    def loop_stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # the loop's side ---------------------------------------------------------------------------------

    def _flush_acks(self) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
        for msg in acks:
            self._loop.create_task(self._ack(msg))

    async def _ack(self, msg: AbstractIncomingMessage) -> None:
        try:
            await msg.ack()
        except Exception as exc:  # the channel is gone: the broker redelivers, the store keeps it once
            log.debug("ack of a delivery failed (%s); it will be delivered again", exc)

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        assert self._inbound is not None
        self._inbound.put_nowait(msg)  # bounded by the channel's prefetch

    async def _drain(self) -> None:
        """Hand deliveries to the run thread in batches (blocks while its inbox is full)."""
        assert self._inbound is not None
        while True:
            items = [await self._inbound.get()]
            while not self._inbound.empty() and len(items) < 1000:
                items.append(self._inbound.get_nowait())
            batch = []
            for msg in items:
                mid = next(self._ids)
                with self._lock:
                    self._unacked[mid] = msg
                batch.append((routing_key_to_topic(msg.routing_key or ""), msg.body, mid, bool(msg.redelivered)))
            await asyncio.to_thread(self.worker.deliver, batch)

    async def _connect(self, attempt: int) -> AbstractRobustConnection | None:
        s = self.settings
        url = s.servers[attempt % len(s.servers)]
        try:
            conn = await aio_pika.connect(url, timeout=s.connect_timeout_s,
                                          client_properties={"connection_name": self.worker.cfg.client_id})
        except Exception as exc:  # any failure: the next node
            log.warning("cannot reach RabbitMQ %s (%s: %s); trying the next node", _safe_url(url),
                        type(exc).__name__, exc)
            return None
        return conn  # type: ignore[return-value]

    async def _run(self) -> None:
        self._stop_async = asyncio.Event()
        if self._stop.is_set():
            self._stop_async.set()
        attempt = 0
        while not self._stop.is_set():
            conn = await self._connect(attempt)
            attempt += 1
            if conn is None:
                await asyncio.sleep(0.2 if attempt % len(self.settings.servers) else 1.0)
                continue
            await self._serve(conn)
            attempt += 1  # the next connection goes to the next node first

    async def _serve(self, conn: Any) -> None:
        stats, worker = self.worker.stats, self.worker
        closed = asyncio.Event()
        conn.close_callbacks.add(lambda *_: closed.set())
        self._inbound = asyncio.Queue()
        drain = asyncio.create_task(self._drain())
        try:
            channel = await conn.channel()
            channel.close_callbacks.add(lambda *_: closed.set())
            await channel.set_qos(prefetch_count=self.settings.prefetch)
            queue = await declare_queue(channel, self.settings)
            with worker._ack_lock:  # deliveries of an earlier channel can no longer be acknowledged
                worker._session += 1
                worker._pending.clear()
            tag = await queue.consume(self._on_message)
            stats.connects += 1
            stats.broker_connected = stats.subscribed = True
            worker.subscribed.set()
            log.info("consuming queue %s on %s", self.settings.queue, _safe_url(str(conn.url)))
            assert self._stop_async is not None
            stop = asyncio.create_task(self._stop_async.wait())
            lost = asyncio.create_task(closed.wait())
            await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            lost.cancel()
            if self._stop.is_set():
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)
                self._flush_acks()
                await asyncio.sleep(0.2)  # the last acks out before closing
        except Exception as exc:  # any failure: reconnect
            log.warning("queue %s: %s: %s; reconnecting", self.settings.queue, type(exc).__name__, exc)
        finally:
            drain.cancel()
            stats.broker_connected = stats.subscribed = False
            worker.subscribed.clear()
            with self._lock:
                self._unacked.clear()
                self._acks.clear()
            if not self._stop.is_set():
                stats.disconnects += 1
                log.warning("lost RabbitMQ %s; reconnecting (unacknowledged deliveries come again)",
                            _safe_url(str(conn.url)))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)


def with_password(url: str, password: str | None) -> str:
    """``amqp://user@host:port/`` with ``password`` put in (the password lives in a file, not in central.yaml)."""
    if password is None:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        raise ValueError(f"{_safe_url(url)}: a password file needs a user in the URL (amqp://user@host:port/)")
    netloc = f"{urllib.parse.quote(parts.username, safe='')}:{urllib.parse.quote(password, safe='')}@" \
             f"{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    head, _, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://{tail}" if head else url


class AmqpIngestWorker(PulledIngestWorker):
    """An ingest worker that consumes the quorum queue instead of subscribing over MQTT."""

    def __init__(self, cfg: IngestConfig, amqp_settings: AmqpSettings) -> None:
        self.amqp = amqp_settings
        super().__init__(cfg)

    def _make_client(self) -> Any:
        return _AmqpTransport(self)


async def declare_only(settings: AmqpSettings) -> None:
    """Declare and bind the queue, then disconnect (before the gateways publish: see the module's docstring)."""
    last: Exception | None = None
    for url in settings.servers:
        try:
            conn = await aio_pika.connect(url, timeout=settings.connect_timeout_s)
        except Exception as exc:  # the next node
            last = exc
            continue
        async with conn:
            await declare_queue(await conn.channel(), settings)
        return
    raise ConnectionError(f"no RabbitMQ node reachable ({', '.join(map(_safe_url, settings.servers))}): {last}")


def main(argv: list[str] | None = None) -> int:
    """``python -m edugate.central.ingest.amqp_worker``: one worker, for tests and benchmarks
    (operators select the transport in ``central.yaml``: ``ingest.transport: amqp``)."""
    import argparse
    import signal
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp", action="append", required=True, help="amqp://user:pass@host:port/ of a node "
                        "(repeat)")
    parser.add_argument("--store", default="http://127.0.0.1:8428")
    parser.add_argument("--client-id", default="ingest-1")
    parser.add_argument("--stats-file", type=Path)
    parser.add_argument("--events-db", type=Path)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=AmqpSettings.prefetch)
    parser.add_argument("--declare-only", action="store_true", help="declare and bind the queue, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = AmqpSettings(servers=tuple(args.amqp), replicas=args.replicas, prefetch=args.prefetch)
    if args.declare_only:
        asyncio.run(declare_only(settings))
        return 0
    worker = AmqpIngestWorker(
        IngestConfig(client_id=args.client_id, store_url=args.store, stats_file=args.stats_file,
                     events_db=args.events_db, stats_interval_s=0.2), settings)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
