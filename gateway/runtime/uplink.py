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

End-to-end acknowledgement (``uplink.end_to_end_ack``, on by default): the
gateway subscribes to its ``.../stored`` topic, where central's ingest confirms
the seq ranges it stored (``edugate.contract.stored``). Once central has
confirmed anything (remembered in the outbox), a record PUBACKed by the broker
stays in the outbox until confirmed (:class:`_Confirmations`); before that, and
with a central that never confirms, the PUBACK deletes it as it always did. A
record still unconfirmed ``uplink.confirm_timeout_s`` after its PUBACK, while
central confirms records sent after it, was lost on the way (a broker that
dropped it): it is sent again. Central silent altogether (its worker down) is
only reported (a warning a minute, ``uplink_unconfirmed_age_s``): its broker
queue keeps the records, and a reconnect sends every unconfirmed record again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiomqtt
import orjson

from edugate.common.mqtt import Backoff, BrokerAddress, Failover, LastWill, aiomqtt_client
from edugate.contract import topics
from edugate.contract.records import Kind
from edugate.contract.stored import InvalidConfirmation
from edugate.contract.stored import parse as parse_confirmation
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
    confirming: bool = False  # records wait for central's confirmation (end_to_end_ack, and central confirms)
    confirmations: int = 0  # .../stored messages received
    confirmations_invalid: int = 0
    confirm_resends: int = 0  # records sent again: unconfirmed past uplink.confirm_timeout_s
    unconfirmed_age_s: float = 0.0  # since the PUBACK of the oldest record awaiting confirmation

    def as_dict(self) -> dict[str, Any]:
        return {
            "uplink_connected": self.connected,
            "uplink_reconnects": max(0, self.connects - 1),
            "published_messages": self.published_messages,
            "published_records": self.published_records,
            "uplink_last_error": self.last_error,
            "uplink_end_to_end_ack": int(self.confirming),
            "uplink_confirmations": self.confirmations,
            "uplink_confirm_resends": self.confirm_resends,
            "uplink_unconfirmed_age_s": round(self.unconfirmed_age_s, 1),
        }


SHORT_LIVED_S = 2.0
PENDING_RESULTS_MAX = 100  # cmd-results kept while the broker is away (commands are rare; a bound all the same)
"""A connection the broker closes sooner than this after accepting it does not reset the reconnect back-off."""
SILENT_WARN_EVERY_S = 60.0
"""While central confirms nothing past the deadline: one warning a minute."""


@dataclass
class _Checkpoint:
    at: float  # monotonic time of the PUBACK
    upto: int  # every record of the kind up to this seq sent on this connection was PUBACKed by then


@dataclass
class _Confirmations:
    """One connection's bookkeeping of records PUBACKed and awaiting central's confirmation, per kind: not per
    record but checkpoints, at most one per ``granularity`` seconds, so memory does not grow with the backlog."""

    granularity: float
    checkpoints: dict[Kind, deque[_Checkpoint]] = field(
        default_factory=lambda: {Kind.EVENT: deque(), Kind.TELEMETRY: deque()})
    inflight: dict[Kind, dict[int, int]] = field(
        default_factory=lambda: {Kind.EVENT: {}, Kind.TELEMETRY: {}})  # first seq of a message -> copies in flight
    confirmed_upto: dict[Kind, int] = field(default_factory=lambda: {Kind.EVENT: 0, Kind.TELEMETRY: 0})
    resend: dict[Kind, tuple[int, int]] = field(default_factory=dict)  # kind -> (cursor, up to): being sent again
    resent_upto: dict[Kind, int] = field(default_factory=lambda: {Kind.EVENT: 0, Kind.TELEMETRY: 0})

    def handed(self, kind: Kind, cursor: int) -> int:
        """Every record of ``kind`` up to this seq was PUBACKed (``cursor``: the last one handed to publish)."""
        firsts = self.inflight[kind]
        return min(firsts) - 1 if firsts else cursor

    def add(self, kind: Kind, upto: int, now: float) -> None:
        marks = self.checkpoints[kind]
        if marks and now - marks[-1].at < self.granularity:
            marks[-1].upto = max(marks[-1].upto, upto)
        else:
            marks.append(_Checkpoint(now, upto))

    def oldest_at(self) -> float | None:
        return min((m[0].at for m in self.checkpoints.values() if m), default=None)


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
        self.stored_topic = topics.stored_topic(cfg.school, cfg.gateway)
        self._confirms = self._new_confirmations()
        self._cursor = {Kind.EVENT: 0, Kind.TELEMETRY: 0}
        # cmd-results of commands that finished while the broker was away: published at the next connection
        self._pending_results: deque[tuple[str, bytes]] = deque(maxlen=PENDING_RESULTS_MAX)
        self._silent_warned_at = float("-inf")
        self._last_confirm_at = float("-inf")
        self._resend_logged_at = float("-inf")
        self._resends_unlogged = 0

    def _new_confirmations(self) -> _Confirmations:
        return _Confirmations(granularity=max(0.05, self.cfg.uplink.confirm_timeout_s / 8))

    @property
    def confirming(self) -> bool:
        """Records wait for central's confirmation after their PUBACK: enabled, and central has confirmed before."""
        return self.cfg.uplink.end_to_end_ack and self.outbox.central_confirms

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
        self._confirms = self._new_confirmations()  # a new connection sends everything unconfirmed again
        await self.publish_state(client)
        await self._publish_pending_results(client)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch(client), name="uplink-watch")
            tg.create_task(self._drain(client, tg), name="uplink-drain")
            if self.cfg.uplink.end_to_end_ack:
                tg.create_task(self._check_confirmations(), name="uplink-confirmations")

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Notice a lost connection: the message iterator raises MqttError when it drops (with or without a
        subscription). Only a gateway with ``downlink.enabled`` subscribes to its ``.../cmd/#`` (the contract,
        and the broker's ACLs: a gateway without it needs no read access at all)."""
        if self.cfg.uplink.end_to_end_ack:  # subscribed before the first publish: the broker handles it first
            await client.subscribe(self.stored_topic, qos=1)
        if self.downlink is not None:
            await client.subscribe(topic(self.cfg, "cmd") + "/#", qos=1)
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            if message.topic.value == self.stored_topic:
                self._on_stored(bytes(payload))
                continue
            if self.downlink is None:  # not subscribed: nothing arrives
                continue
            # checked here, in order; run in a task of its own (a kit's firmware update takes minutes)
            try:
                await self.downlink.dispatch(str(message.topic), bytes(payload), self._publish_result)
            except Exception:  # a message the checks did not foresee must not take the uplink down with it
                log.exception("uplink: a message on %s could not be checked; it is dropped", message.topic)

    async def _publish_result(self, result_topic: str, payload: bytes) -> None:
        """A command's cmd-result, on the connection open now (a long command may outlive the one it came on).
        With no connection, or when the publish fails, it waits for the next connection (the newest
        ``PENDING_RESULTS_MAX``; a gateway restart forgets them: ``edugate send`` then times out and says so)."""
        client = self._client
        if client is not None:
            try:
                await client.publish(result_topic, payload, qos=1, timeout=10)
                return
            except aiomqtt.MqttError as exc:
                why = str(exc)
        else:
            why = "not connected to the broker"
        if len(self._pending_results) == self._pending_results.maxlen:
            log.warning("uplink: %d command results wait for the broker; the oldest is dropped",
                        len(self._pending_results))
        self._pending_results.append((result_topic, payload))
        log.info("uplink: a command result waits for the broker (%s); sent at the next connection", why)

    async def _publish_pending_results(self, client: aiomqtt.Client) -> None:
        """Results of commands that finished while the broker was away, oldest first."""
        while self._pending_results:
            result_topic, payload = self._pending_results[0]
            await client.publish(result_topic, payload, qos=1, timeout=10)
            self._pending_results.popleft()

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
        self._cursor = cursor
        topics = {Kind.EVENT: topic(self.cfg, "event"), Kind.TELEMETRY: topic(self.cfg, "telemetry")}
        while True:
            await window.acquire()
            while True:
                resent = await self._next_resend()
                if resent is not None:
                    kind, batch = resent
                    break
                found = await self._next_batch(cursor)
                if found is not None:
                    kind, batch = found
                    cursor[kind] = batch[-1][0]
                    firsts = self._confirms.inflight[kind]
                    firsts[batch[0][0]] = firsts.get(batch[0][0], 0) + 1
                    break
            tg.create_task(self._publish(client, topics[kind], kind, batch, window, resent is not None))

    async def _next_resend(self) -> tuple[Kind, list[tuple[int, bytes]]] | None:
        """The next batch of records being sent again (:meth:`_check_confirmations`), if any."""
        up = self.cfg.uplink
        resend = self._confirms.resend
        for kind in (Kind.EVENT, Kind.TELEMETRY):
            if kind not in resend:
                continue
            after, upto = resend[kind]
            batch = await self.outbox.fetch(kind, after, up.batch_max_records, up.batch_max_bytes, upto=upto)
            if batch and resend.get(kind) == (after, upto):
                resend[kind] = (batch[-1][0], upto)
                return kind, batch
            resend.pop(kind, None)
        return None

    async def _next_batch(self, cursor: dict[Kind, int]) -> tuple[Kind, list[tuple[int, bytes]]] | None:
        """The next batch to send: events first (taps and alarms jump the queue), then telemetry; None when
        records are to be sent again (:meth:`_next_resend` first).

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
                if self._confirms.resend:  # records to send again: the caller takes them first
                    return None
                await box.changed.wait()

    async def _publish(self, client: aiomqtt.Client, topic_name: str, kind: Kind, batch: list[tuple[int, bytes]],
                       window: asyncio.Semaphore, resent: bool = False) -> None:
        try:
            payload = b"[" + b",".join(p for _, p in batch) + b"]"
            await client.publish(topic_name, payload, qos=1, timeout=30)
            self._on_puback(kind, batch, resent)
            self.stats.published_messages += 1
            self.stats.published_records += len(batch)
            self.stats.last_publish_at = time.time()
        finally:
            window.release()

    def _on_puback(self, kind: Kind, batch: list[tuple[int, bytes]], resent: bool) -> None:
        """The broker has the batch: delete it, or (end-to-end) note it as awaiting central's confirmation."""
        confirms = self._confirms
        if not resent:
            firsts = confirms.inflight[kind]
            left = firsts.get(batch[0][0], 0) - 1
            if left > 0:
                firsts[batch[0][0]] = left
            else:
                firsts.pop(batch[0][0], None)
        if not self.confirming:
            self.outbox.ack(kind, [seq for seq, _ in batch])
            return
        self.stats.confirming = True
        now = time.monotonic()
        if resent:
            self.stats.confirm_resends += len(batch)
            confirms.add(kind, batch[-1][0], now)
            return
        upto = confirms.handed(kind, self._cursor[kind])
        confirms.add(kind, upto, now)
        if kind is Kind.TELEMETRY:
            self.outbox.handed(upto)

    # ------------------------------------------------------------------ central's confirmations

    def _on_stored(self, payload: bytes) -> None:
        """A confirmation on ``.../stored``: delete what central stored."""
        try:
            confirmation = parse_confirmation(payload)
        except InvalidConfirmation as exc:
            self.stats.confirmations_invalid += 1
            log.warning("%s: confirmation ignored: %s", self.stored_topic, exc)
            return
        self.stats.confirmations += 1
        self._last_confirm_at = time.monotonic()
        if not self.outbox.central_confirms:
            log.info("central confirms what it stores (%s): records now stay in the outbox until confirmed",
                     self.stored_topic)
        for kind_name, ranges in confirmation.ranges.items():
            kind = Kind(kind_name)
            self.outbox.confirm(kind, ranges)
            top = max(last for _, last in ranges)
            self._confirms.confirmed_upto[kind] = max(self._confirms.confirmed_upto[kind], top)
        self.stats.confirming = self.confirming

    def _log_resend(self, kind: Kind, after: int, upto: int, now: float) -> None:
        """One warning a minute at most (with how many more resends there were meanwhile)."""
        self._resends_unlogged += 1
        if now - self._resend_logged_at >= SILENT_WARN_EVERY_S:
            log.warning("central confirmed later records but not the %s records after seq %d up to %d within %.0f s "
                        "of the broker's acknowledgement (lost on the way): sending them again (%d such resend(s) "
                        "since the last line)", kind.value, after, upto, self.cfg.uplink.confirm_timeout_s,
                        self._resends_unlogged)
            self._resend_logged_at, self._resends_unlogged = now, 0

    async def _check_confirmations(self) -> None:
        """Every ``granularity``: forget checkpoints central confirmed; send again what it skipped past."""
        timeout = self.cfg.uplink.confirm_timeout_s
        while True:
            confirms = self._confirms
            await asyncio.sleep(confirms.granularity)
            now = time.monotonic()
            for kind, marks in confirms.checkpoints.items():
                if not marks:
                    continue
                oldest = await self.outbox.oldest(kind)
                while marks and (oldest is None or oldest > marks[0].upto):
                    marks.popleft()  # everything up to it is confirmed
                overdue = None
                while kind not in confirms.resend and marks and now - marks[0].at > timeout \
                        and confirms.confirmed_upto[kind] > marks[0].upto:
                    overdue = marks.popleft()  # central stored records sent after it: these were lost on the way
                if overdue is not None:
                    # what an earlier resend covered has checkpoints of its own: start after it, unless it is
                    # that resend which went unconfirmed
                    after = confirms.resent_upto[kind] if overdue.upto > confirms.resent_upto[kind] else 0
                    confirms.resend[kind] = (after, overdue.upto)
                    confirms.resent_upto[kind] = max(confirms.resent_upto[kind], overdue.upto)
                    self._log_resend(kind, after, overdue.upto, now)
                    self.outbox.changed.set()
            oldest_at = confirms.oldest_at()
            self.stats.unconfirmed_age_s = 0.0 if oldest_at is None else now - oldest_at
            silent = now - self._last_confirm_at > timeout and self.stats.unconfirmed_age_s > timeout
            if silent and now - self._silent_warned_at >= SILENT_WARN_EVERY_S:
                self._silent_warned_at = now
                log.warning("central has confirmed nothing the broker acknowledged in the last %.0f s; the records "
                            "stay in the outbox (%d queued) and are sent again at the next reconnect. Is central's "
                            "ingest worker running? A central that does not confirm: set uplink.end_to_end_ack: "
                            "false", self.stats.unconfirmed_age_s, sum(self.outbox.stats.records.values()))


def _first_message(group: BaseExceptionGroup) -> str:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__
