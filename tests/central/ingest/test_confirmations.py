"""The ingest worker's confirmations on ``edu/v1/{school}/{gateway}/stored`` (the end-to-end acknowledgement),
against a real Mosquitto, a real VictoriaMetrics and (for the event store) a real PostgreSQL: one message per
gateway per write, the seq ranges of what it stored, and nothing while the store or the event store is down."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edugate.contract.stored import merge, parse
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central import Publisher, batches, event, telemetry, topic, wait_until
from tests.central.ingest.test_worker import running_worker, wait_for_samples

SCHOOL = "school-1"


class Confirmations:
    """Every confirmation the broker delivers, as a gateway would receive it: (gateway, kind) -> ranges."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: list[tuple[str, dict[str, list[tuple[int, int]]]]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="confirmations", clean_session=True)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe("edu/v1/+/+/stored", qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        gateway = msg.topic.split("/")[3]
        with self.lock:
            self.messages.append((gateway, parse(msg.payload).ranges))

    def ranges(self, gateway: str, kind: str) -> list[tuple[int, int]]:
        with self.lock:
            return merge(r for gw, doc in self.messages if gw == gateway for r in doc.get(kind, []))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def confirmations(mosquitto: Mosquitto) -> Iterator[Confirmations]:
    listener = Confirmations(mosquitto)
    yield listener
    listener.close()


def test_each_gateway_gets_the_ranges_stored(mosquitto: Mosquitto, victoria: VictoriaMetrics,
                                             confirmations: Confirmations) -> None:
    with running_worker(mosquitto, victoria.url) as worker:
        pub = Publisher(mosquitto.host, mosquitto.port)
        # gw-a: telemetry 1..20 in two messages, events 21..22 (their seqs interleave in the gateway's outbox)
        pub.publish_all(topic(SCHOOL, "gw-a", "telemetry"), batches([telemetry(s) for s in range(1, 21)], 10))
        pub.publish(topic(SCHOOL, "gw-a", "event"), [event(21), event(22)])
        # gw-b: telemetry 1..3 and 7..9 (4..6 thinned at the school), one bad record (counted, still confirmed)
        pub.publish(topic(SCHOOL, "gw-b", "telemetry"), [telemetry(s) for s in (1, 2, 3)])
        pub.publish(topic(SCHOOL, "gw-b", "telemetry"), [telemetry(7), {**telemetry(8), "ts": "soon"}, telemetry(9)])
        pub.close()
        wait_until(lambda: confirmations.ranges("gw-b", "telemetry") == [(1, 3), (7, 9)], 10, 0.05,
                   "gw-b's confirmation")
        wait_until(lambda: confirmations.ranges("gw-a", "event") == [(21, 22)], 10, 0.05, "gw-a's events confirmed")
        assert confirmations.ranges("gw-a", "telemetry") == [(1, 20)]
        assert confirmations.ranges("gw-b", "event") == []
        assert worker.stats.records_invalid == 1
        # one message per gateway and write, never more than the messages they confirm
        assert worker.stats.confirmations == len(confirmations.messages) <= 5


def test_nothing_is_confirmed_while_the_store_is_down(mosquitto: Mosquitto, victoria: VictoriaMetrics,
                                                      confirmations: Confirmations) -> None:
    recs = [telemetry(s) for s in range(1, 31)]
    with running_worker(mosquitto, victoria.url) as worker:
        victoria.stop()
        pub = Publisher(mosquitto.host, mosquitto.port)
        pub.publish_all(topic(SCHOOL, "gw-a", "telemetry"), batches(recs, 10))
        pub.close()
        wait_until(lambda: worker.stats.write_errors >= 3, 20, 0.05, "writes against the stopped store")
        assert confirmations.messages == [] and worker.stats.messages_acked == 0
        victoria.start()
        wait_until(lambda: confirmations.ranges("gw-a", "telemetry") == [(1, 30)], 20, 0.05, "the confirmation")
        wait_for_samples(victoria.url, 3 * len(recs))


try:
    from edugate.central.eventstore_pg import PgEventStore
    from edugate.simulators.postgres import Postgres, pg_bindir
    pg_bindir()
    HAVE_PG = True
except (ImportError, FileNotFoundError):
    HAVE_PG = False


@pytest.mark.skipif(not HAVE_PG, reason="PostgreSQL or psycopg missing")
@pytest.mark.timeout(120)
def test_postgres_down_nothing_acknowledged_nor_confirmed_until_the_events_are_in(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, confirmations: Confirmations) -> None:
    """The fixed loss: with the event store down the worker used to acknowledge the message anyway (its event rows
    lost for good). Now it retries, acknowledges nothing and confirms nothing until the rows are committed."""
    pg = Postgres().start()
    try:
        with running_worker(mosquitto, victoria.url) as worker:
            worker.events = PgEventStore(pg.dsn, connect_timeout_s=1)
            pg.stop()
            pub = Publisher(mosquitto.host, mosquitto.port)
            taps = [event(s, data={"card": "p:3f9a1c", "decision": "allow"}) for s in range(1, 6)]
            pub.publish(topic(SCHOOL, "gw-a", "event"), taps)
            pub.close()
            wait_until(lambda: worker.stats.events_store_errors >= 2, 20, 0.05, "writes against the stopped database")
            assert worker.stats.messages_acked == 0 and confirmations.messages == []
            assert not worker.stats.events_store_up
            pg.start()
            wait_until(lambda: confirmations.ranges("gw-a", "event") == [(1, 5)], 30, 0.05, "the confirmation")
            assert worker.stats.messages_acked == 1 and worker.stats.events_store_up
            stored = {e["seq"] for e in worker.events.query(gateway="gw-a")}
            assert stored == {1, 2, 3, 4, 5}
            worker.events.close()
    finally:
        pg.cleanup()


def test_the_payload_is_checked_and_says_what_is_wrong() -> None:
    """``contract/stored.py``: what the gateway accepts; a bad payload is refused saying what and where."""
    from edugate.contract.stored import Confirmation, InvalidConfirmation

    doc = Confirmation()
    for first, last in ((11, 20), (1, 10), (25, 30), (21, 22)):
        doc.add("telemetry", first, last)
    doc.add("event", 23, 23)
    assert doc.encode() == b'{"telemetry":[[1,22],[25,30]],"event":[[23,23]]}'  # merged only where they touch
    assert parse(doc.encode()).ranges == {"telemetry": [(1, 22), (25, 30)], "event": [(23, 23)]}
    for payload, said in ((b"[1, 2]", "expected a JSON object"), (b"{", "not JSON"),
                          (b'{"state": [[1, 2]]}', "unknown key(s) ['state']"),
                          (b'{"telemetry": [[5, 2]]}', "'telemetry'[0]: expected [first, last]"),
                          (b'{"event": [[1, 2], [3]]}', "'event'[1]: expected [first, last]"),
                          (b'{"event": [[1, 2.5]]}', "'event'[0]"), (b'{"event": 7}', "'event': expected a list")):
        with pytest.raises(InvalidConfirmation, match=re.escape(said)):
            parse(payload)


@pytest.mark.parametrize("confirm", [True, False])
def test_central_yaml_turns_the_confirmations_off(mosquitto: Mosquitto, victoria: VictoriaMetrics,
                                                  confirmations: Confirmations, tmp_path: Any, confirm: bool) -> None:
    """``ingest.confirm_stored`` in central.yaml reaches the worker that ``edugate ingest --config`` starts."""
    import subprocess
    import sys

    from tests.helpers import REPO, ingest_stats

    conf = tmp_path / "central.yaml"
    conf.write_text(f"broker: {{brokers: ['{mosquitto.host}:{mosquitto.port}']}}\nstore: {{url: {victoria.url}}}\n"
                    f"ingest: {{client_id: ingest-conf, confirm_stored: {str(confirm).lower()}}}\n")
    stats = tmp_path / "stats.json"
    worker = subprocess.Popen([sys.executable, "-m", "edugate.central.cli_ingest", "--config", str(conf),
                               "--stats-file", str(stats), "--stats-interval", "0.05"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: ingest_stats(stats).get("subscribed"), 30, 0.05, "the worker subscribed")
        pub = Publisher(mosquitto.host, mosquitto.port)
        pub.publish(topic(SCHOOL, "gw-a", "telemetry"), [telemetry(s) for s in (1, 2, 3)])
        pub.publish(topic(SCHOOL, "gw-a", "telemetry"), [telemetry(s) for s in (4, 5)])
        pub.close()
        wait_until(lambda: ingest_stats(stats).get("messages_acked", 0) >= 2, 20, 0.05, "both messages stored")
        if confirm:
            wait_until(lambda: confirmations.ranges("gw-a", "telemetry") == [(1, 5)], 10, 0.05, "the confirmation")
        else:
            assert confirmations.messages == [] and ingest_stats(stats).get("confirmations", 0) == 0
    finally:
        worker.terminate()
        worker.wait(20)
