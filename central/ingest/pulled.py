"""What the ingest workers that pull from a replicated queue share (``nats_worker``: a JetStream stream,
``amqp_worker``: a RabbitMQ quorum queue), as opposed to :class:`~edugate.central.ingest.worker.IngestWorker`'s
own MQTT subscription: deliveries handed over from the transport's event-loop thread, and no ``.../stored``
confirmations (the cluster's PUBACK to a gateway already comes after replication, so gateways delete at it)."""

from __future__ import annotations

import time
from typing import Any

from edugate.central.ingest.worker import IngestWorker, _Msg


class PulledIngestWorker(IngestWorker):
    """An ingest worker fed by :meth:`deliver` from its transport (``self._client``, which has ``forget``)."""

    _client: Any

    def _confirm(self, batch: Any) -> None:
        """No confirmations: the cluster's own acknowledgement to the gateway is already replicated and durable."""

    def deliver(self, items: list[tuple[str, bytes, int, bool]]) -> None:
        """Queue (topic, payload, message id, redelivered) for the run thread; blocks while the inbox is full, so
        pulling pauses."""
        for topic, payload, mid, redelivered in items:
            self.stats.messages += 1
            if redelivered:
                self.stats.messages_redelivered += 1
            if self._stopping.is_set():
                self._client.forget(mid)
                continue
            with self._ack_lock:
                self._pending[mid] = 1
                session = self._session
            msg = _Msg(topic, payload, mid, 1, session, int(time.time() * 1000))
            if not self._inbox.put(msg, self._stopping):
                self._release(msg)

    def _release(self, msg: _Msg) -> None:
        super()._release(msg)
        self._client.forget(msg.mid)
