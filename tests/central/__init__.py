"""Canned wire records and helpers shared by the central-ingest tests.

Records are built exactly as the gateway publishes them (``docs/mqtt-contract.md``):
a JSON array per MQTT message, QoS 1, on ``edu/v1/{school}/{gateway}/{kind}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from tests.helpers import wait_for

BASE_TS = 1_763_900_000_000  # 2025-11-23, well inside the store's retention in the tests


def telemetry(seq: int, device: str = "lab1-th", *, ts: int | None = None, room: str | None = "lab-1",
              values: dict[str, Any] | None = None, synced: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {"seq": seq, "kind": "telemetry", "device": device,
                              "ts": BASE_TS + seq * 10 if ts is None else ts, "synced": synced,
                              "values": values if values is not None else {"temperature_c": 20 + (seq % 100) / 4,
                                                                           "humidity_pct": 40.5, "door_open": False}}
    if room is not None:
        record["room"] = room
    return record


def event(seq: int, device: str = "door-2", *, type_: str = "card_tap", ts: int | None = None,
          room: str | None = "lab-1", data: dict[str, Any] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"seq": seq, "kind": "event", "device": device,
                              "ts": BASE_TS + seq * 10 if ts is None else ts, "synced": True, "type": type_,
                              "data": data if data is not None else {"card": "p:3f9a1c", "decision": "allow"}}
    if room is not None:
        record["room"] = room
    return record


def batches(records: Sequence[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [list(records[i:i + size]) for i in range(0, len(records), size)]


def topic(school: str, gateway: str, kind: str) -> str:
    return f"edu/v1/{school}/{gateway}/{kind}"


class Publisher:
    """A gateway-like paho client: QoS 1 publishes, each waited for until PUBACKed."""

    def __init__(self, host: str, port: int, client_id: str = "test-gateway",
                 will: tuple[str, bytes] | None = None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def publish(self, topic_name: str, payload: bytes | list[Any] | dict[str, Any], *, retain: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        info = self.client.publish(topic_name, body, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"no PUBACK for {topic_name}"

    def publish_all(self, topic_name: str, payloads: Iterable[bytes | list[Any]]) -> None:
        for payload in payloads:
            self.publish(topic_name, payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def drop_connection(self) -> None:
        """Vanish without a DISCONNECT (as a crashed gateway would): the broker sends our will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2,
               what: str = "condition") -> Any:
    """``tests.helpers.wait_for`` (the suite's one wait helper) with this package's argument order."""
    return wait_for(condition, timeout, what, interval)
