"""``central.yaml`` selects the NATS transport and the PostgreSQL event store: ``edugate ingest --config``
against a real one-node NATS (JetStream + MQTT), VictoriaMetrics and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from edugate.simulators.servers import VictoriaMetrics, find_binary
from tests.central import event, telemetry
from tests.helpers import REPO, ingest_stats, wait_for
from tests.vmquery import sample_count

try:
    find_binary("nats-server")
    from edugate.central.eventstore_pg import PgEventStore
    from edugate.simulators.nats_cluster import NatsCluster
    from edugate.simulators.postgres import Postgres, pg_bindir
    pg_bindir()
except (FileNotFoundError, ImportError) as exc:
    pytest.skip(f"nats-server, PostgreSQL or their clients missing: {exc}", allow_module_level=True)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    server = Postgres().start()
    yield server
    server.cleanup()


def test_central_yaml_selects_nats_and_postgres(tmp_path: Path, victoria: VictoriaMetrics,
                                                postgres: Postgres) -> None:
    cluster = NatsCluster(tmp_path / "nats", size=1).start()
    try:
        conf = tmp_path / "central.yaml"
        conf.write_text(yaml.safe_dump({
            "store": {"url": victoria.url},
            "ingest": {"client_id": "w1", "transport": "nats", "stats_file": "w1.json", "stats_interval_s": 0.1,
                       "nats": {"servers": cluster.nats_urls, "replicas": 1, "max_bytes_mb": 64,
                                "source": "stream"}},  # not the default (auto): the key reaches the worker
            "events": {"postgres_dsn": postgres.dsn},
        }))
        with (tmp_path / "w1.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "edugate.central.cli_ingest", "--config", str(conf)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_for(lambda: proc.poll() is not None or ingest_stats(tmp_path / "w1.json").get("subscribed"), 30,
                     "the worker pulling from the stream")
            assert proc.poll() is None, (tmp_path / "w1.log").read_text()
            node = cluster.nodes[0]
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-test")
            pub.connect(node.host, node.mqtt_port)
            pub.loop_start()
            events = [event(i) for i in range(1, 6)]
            infos = [pub.publish("edu/v1/school-1/gw-a/event", orjson.dumps(events), qos=1),
                     pub.publish("edu/v1/school-1/gw-a/event", orjson.dumps(events[2:]), qos=1),  # again: once
                     pub.publish("edu/v1/school-1/gw-a/telemetry", orjson.dumps([telemetry(6)]), qos=1),
                     pub.publish("edu/v1/school-1/gw-a/event", b"not json", qos=1)]
            for info in infos:
                info.wait_for_publish(10)
            pub.loop_stop()
            pub.disconnect()
            wait_for(lambda: ingest_stats(tmp_path / "w1.json").get("messages_acked", 0) >= 4, 20,
                     "the worker to write and acknowledge all four")
            stats = ingest_stats(tmp_path / "w1.json")
            assert stats["events_stored"] == 5 and stats["messages_invalid"] == 1 and stats["events_store_errors"] == 0
            store = PgEventStore(postgres.dsn)
            assert [e["seq"] for e in store.query(school="school-1")] == [5, 4, 3, 2, 1]
            store.close()
            assert sample_count(victoria.url, '{__name__=~"edugate_temperature_c",gateway="gw-a"}') == 1
        finally:
            proc.terminate()
            assert proc.wait(20) == 0, (tmp_path / "w1.log").read_text()
        # ingest.nats.source: stream, as central.yaml said (auto would pull $MQTT_msgs on 2.10+: docs/central.md 6)
        assert "pulling from stream EDUGATE" in (tmp_path / "w1.log").read_text()
        out = subprocess.run([sys.executable, "-m", "edugate.cli.main", "events", "--config", str(conf),
                              "--gateway", "gw-a", "--limit", "3"], capture_output=True, text=True, cwd=REPO,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert [orjson.loads(line)["seq"] for line in out.stdout.splitlines()] == [5, 4, 3]
    finally:
        cluster.stop()
