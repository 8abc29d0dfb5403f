"""MQTT uplink: drains the outbox to the broker at QoS 1, in batches, with a
bounded window of unacknowledged messages; a record leaves the outbox only
after the PUBACK of the message that carried it.

Connection handling: a retained ``online`` birth message on ``.../state`` and
a retained last will ``offline``; when the connection drops, everything not
PUBACKed is sent again from the outbox after reconnecting (the consumers are
idempotent on (gateway, seq)); reconnect attempts wait a random delay in
[0, ceiling], the ceiling doubling from 0.1 s up to ``uplink.reconnect_max_s``
(1 s by default; full jitter, so that after a broker restart the schools do not
reconnect in lock-step), and go through ``uplink.brokers`` in failover order.
Delivery resumes within about a second of the broker coming back. The client
is built by ``edugate.common.mqtt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt
import orjson

from edugate.common.mqtt import Backoff, BrokerAddress, Failover, LastWill, aiomqtt_client
from edugate.contract import topics
from edugate.contract.records import Kind
from edugate.gateway.config import GatewayConfigBase
from edugate.gateway.runtime.outbox import Outbox

if TYPE_CHECKING:
    from edugate.gateway.downlink.commands import Downlink

log = logging.getLogger(__name__)


def topic(cfg: GatewayConfigBase, kind: str) -> str:
    return topics.topic(cfg.school, cfg.gateway, kind)


@dataclass
class UplinkStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    published_messages: int = 0
    published_records: int = 0
    last_error: str | None = None
    connected_since: float | None = None
    last_publish_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "uplink_connected": self.connected,
            "uplink_reconnects": max(0, self.connects - 1),
            "published_messages": self.published_messages,
            "published_records": self.published_records,
            "uplink_last_error": self.last_error,
        }


SHORT_LIVED_S = 2.0
"""A connection the broker closes sooner than this after accepting it does not reset the reconnect back-off."""


class Uplink:
    def __init__(self, cfg: GatewayConfigBase, outbox: Outbox, state: Callable[[], dict[str, Any]],
                 downlink: Downlink | None = None) -> None:
        self.cfg = cfg
        self.downlink = downlink  # None: commands are ignored (downlink.enabled is false)
        self.outbox = outbox
        self.state = state  # returns the current "online" state document (devices etc.)
        self.stats = UplinkStats()
        self._client: aiomqtt.Client | None = None
        self._stopping = False
        self.broker_config = cfg.uplink.broker_config(f"edugate-{cfg.school}-{cfg.gateway}")
        self.failover = Failover(self.broker_config)
        self.backoff = Backoff(self.broker_config.reconnect)
        self._short_lived = 0  # connections in a row the broker closed within 2 s (issue 18: ACL refusals)

    # ------------------------------------------------------------------ connection loop

    async def run(self) -> None:
        while not self._stopping:
            connected = False
            try:
                async with self._make_client() as client:
                    self._client = client
                    connected = True
                    self._on_connected()
                    await self._session(client)
            except* (aiomqtt.MqttError, OSError) as group:
                self._on_disconnected(_first_message(group))
            finally:
                self._client = None
            if self._stopping:
                break
            if connected:  # lost a connection: start again from the preferred broker
                if self._short_lived == 0:  # it had worked for a while: reconnect quickly
                    self.backoff.reset()
                # else the broker closed it right after accepting it (an ACL refusal, a broker in trouble): keep
                # backing off, or every refused gateway would reconnect ten times a second
                self.failover.connected()
            else:
                self.failover.failed()
            await self.backoff.sleep()

    @property
    def broker(self) -> BrokerAddress:
        """The broker connected to, or tried last."""
        return self.failover.current

    def _make_client(self) -> aiomqtt.Client:
        will = LastWill(topic(self.cfg, "state"), orjson.dumps({"status": "offline", "reason": "connection lost"}))
        client: aiomqtt.Client = aiomqtt_client(self.broker_config, will=will, broker=self.failover.current,
                                                timeout=10, max_inflight_messages=self.cfg.uplink.inflight_window + 4)
        return client

    def _on_connected(self) -> None:
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.connected_since = time.time()
        log.info("uplink connected to %s", self.broker)

    def _on_disconnected(self, why: str) -> None:
        was = self.stats.connected
        before = self.stats.last_error  # log "cannot reach" once per distinct reason, not on every retry
        self.stats.connected = False
        self.stats.last_error = why
        if was:
            self.stats.disconnects += 1
            log.warning("uplink lost the broker (%s); records stay in the outbox, reconnecting", why)
            tls = self.broker_config.tls
            short = time.time() - (self.stats.connected_since or 0) < SHORT_LIVED_S
            self._short_lived = self._short_lived + 1 if short else 0
            if self._short_lived in (3, 100) and tls is not None and tls.cert_file is not None:
                log.error("the broker keeps closing the connection right after accepting it: it refuses what this "
                          "gateway publishes (ACL). Is %s the certificate provisioned for %s/%s? A certificate "
                          "may publish only under its own edu/v1/<school>/<gateway>/ (docs/security.md)",
                          tls.cert_file, self.cfg.school, self.cfg.gateway)
        elif self.stats.connects == 0 and before != why:
            log.warning("uplink cannot reach the broker %s: %s", self.broker, why)

    async def _session(self, client: aiomqtt.Client) -> None:
        await self.publish_state(client)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch(client), name="uplink-watch")
            tg.create_task(self._drain(client, tg), name="uplink-drain")

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Notice a lost connection: the message iterator raises MqttError when it drops (with or without a
        subscription). Only a gateway with ``downlink.enabled`` subscribes to its ``.../cmd/#`` (the contract,
        and the broker's ACLs: a gateway without it needs no read access at all)."""
        if self.downlink is not None:
            await client.subscribe(topic(self.cfg, "cmd") + "/#", qos=1)
        async for message in client.messages:
            if self.downlink is None:  # not subscribed: nothing arrives
                continue
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            answer = await self.downlink.handle(str(message.topic), bytes(payload))
            if answer is not None:
                await client.publish(answer[0], answer[1], qos=1, timeout=10)

    async def publish_state(self, client: aiomqtt.Client | None = None, status: str = "online",
                            reason: str | None = None) -> None:
        client = client or self._client
        if client is None:
            return
        doc = self.state() | {"status": status}
        if reason:
            doc["reason"] = reason
        await client.publish(topic(self.cfg, "state"), orjson.dumps(doc), qos=1, retain=True, timeout=10)

    async def shutdown(self) -> None:
        """Publish a clean ``offline`` state and stop reconnecting."""
        self._stopping = True
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self.publish_state(status="offline", reason="shutdown")

    # ------------------------------------------------------------------ draining the outbox

    async def _drain(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        up = self.cfg.uplink
        window = asyncio.Semaphore(up.inflight_window)
        cursor = {Kind.EVENT: 0, Kind.TELEMETRY: 0}  # everything not acked is sent again on a new connection
        topics = {Kind.EVENT: topic(self.cfg, "event"), Kind.TELEMETRY: topic(self.cfg, "telemetry")}
        while True:
            await window.acquire()
            kind, batch = await self._next_batch(cursor)
            cursor[kind] = batch[-1][0]
            tg.create_task(self._publish(client, topics[kind], kind, batch, window))

    async def _next_batch(self, cursor: dict[Kind, int]) -> tuple[Kind, list[tuple[int, bytes]]]:
        """The next batch to send: events first (taps and alarms jump the queue), then telemetry.

        The outbox's ``newest`` seq per kind says whether anything is past the cursor, so the
        (threaded) SQLite read only happens when it will return records. A telemetry batch that
        cannot be full yet waits ``batch_linger_ms`` first, so that it is read once, not twice.
        """
        up = self.cfg.uplink
        box = self.outbox
        while True:
            box.changed.clear()
            for kind in (Kind.EVENT, Kind.TELEMETRY):
                top = box.newest[kind]
                if top <= cursor[kind]:
                    continue
                # seqs are shared by both kinds, so top - cursor is at least the number of records waiting
                if kind is Kind.TELEMETRY and up.batch_linger_ms and top - cursor[kind] < up.batch_max_records:
                    await asyncio.sleep(up.batch_linger_ms / 1000)
                batch = await box.fetch(kind, cursor[kind], up.batch_max_records, up.batch_max_bytes)
                if batch:
                    return kind, batch
                cursor[kind] = max(cursor[kind], top)  # the rows up to top were thinned away (disk budget)
                break
            else:
                await box.changed.wait()

    async def _publish(self, client: aiomqtt.Client, topic_name: str, kind: Kind, batch: list[tuple[int, bytes]],
                       window: asyncio.Semaphore) -> None:
        try:
            payload = b"[" + b",".join(p for _, p in batch) + b"]"
            await client.publish(topic_name, payload, qos=1, timeout=30)
            self.outbox.ack(kind, [seq for seq, _ in batch])
            self.stats.published_messages += 1
            self.stats.published_records += len(batch)
            self.stats.last_publish_at = time.time()
        finally:
            window.release()


def _first_message(group: BaseExceptionGroup) -> str:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__
