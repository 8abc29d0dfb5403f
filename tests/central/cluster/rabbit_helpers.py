"""What the RabbitMQ cluster tests share: workers as subprocesses, the queue's state, a process reaper."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edugate.simulators.rabbitmq_cluster import RabbitCluster, rabbit_binary
from edugate.simulators.servers import VictoriaMetrics
from tests.helpers import REPO, ingest_stats, wait_for

QUEUE = "edugate-ingest"


def skip_without_rabbitmq() -> None:
    try:
        rabbit_binary("rabbitmq-server")
    except FileNotFoundError:
        pytest.skip("rabbitmq-server is not installed (apt-get install -y rabbitmq-server)", allow_module_level=True)


def central_yaml(tmp_path: Path, cluster: RabbitCluster, vm: VictoriaMetrics, name: str, replicas: int) -> Path:
    """A central.yaml selecting the AMQP transport, the password in a file beside it (as operators keep it)."""
    (tmp_path / "amqp.password").write_text("guest\n")
    servers = ", ".join(f'"amqp://guest@{n.host}:{n.amqp_port}/"' for n in cluster.nodes)
    path = tmp_path / f"central-{name}.yaml"
    path.write_text(f"""store: {{url: "{vm.url}"}}
ingest:
  client_id: {name}
  transport: amqp
  stats_file: {name}.json
  stats_interval_s: 0.2
  amqp: {{servers: [{servers}], password_file: amqp.password, replicas: {replicas}, prefetch: 500}}
""")
    return path


def start_worker(tmp_path: Path, cluster: RabbitCluster, vm: VictoriaMetrics, name: str, *,
                 replicas: int = 3, via_config: bool = False) -> subprocess.Popen:
    """An AMQP ingest worker: ``python -m edugate.central.ingest.amqp_worker``, or with ``via_config``
    ``edugate ingest --config central.yaml`` (the operators' way)."""
    if via_config:
        argv = [sys.executable, "-m", "edugate.central.cli_ingest", "--config",
                str(central_yaml(tmp_path, cluster, vm, name, replicas))]
    else:
        argv = [sys.executable, "-m", "edugate.central.ingest.amqp_worker", "--client-id", name, "--store", vm.url,
                "--stats-file", str(tmp_path / f"{name}.json"), "--replicas", str(replicas), "--prefetch", "500"]
        for url in cluster.amqp_urls:
            argv += ["--amqp", url]
    with (tmp_path / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    wait_for(lambda: proc.poll() is not None or ingest_stats(tmp_path / f"{name}.json").get("subscribed"), 30,
             f"worker {name} consuming the queue")
    assert proc.poll() is None, (tmp_path / f"{name}.log").read_text(errors="replace")
    return proc


def queue_counts(cluster: RabbitCluster) -> tuple[int, int] | None:
    return cluster.queue_counts(QUEUE)


def queue_idle(cluster: RabbitCluster) -> bool:
    """Nothing ready and nothing unacknowledged, seen twice a second apart (the counters are refreshed every
    0.5 s: collect_statistics_interval in the nodes' config)."""
    if queue_counts(cluster) != (0, 0):
        return False
    time.sleep(1.0)
    return queue_counts(cluster) == (0, 0)


def ready_count(cluster: RabbitCluster) -> int | None:
    """Messages waiting in the queue for a consumer (a passive declare over AMQP: fast, unlike rabbitmqctl);
    None while no node answers."""
    import aio_pika

    async def ask() -> int | None:
        for url in (n.amqp_url for n in cluster.nodes if n.running):
            try:
                conn = await aio_pika.connect(url, timeout=3)
            except Exception:  # the next node
                continue
            async with conn:
                queue = await (await conn.channel()).declare_queue(QUEUE, passive=True)
                return queue.declaration_result.message_count
        return None
    return asyncio.run(ask())


def declare(cluster: RabbitCluster, replicas: int) -> None:
    """The queue, before anything publishes (a message routed to no queue is dropped)."""
    from edugate.central.ingest.amqp_worker import AmqpSettings, declare_only

    asyncio.run(declare_only(AmqpSettings(servers=tuple(cluster.amqp_urls), replicas=replicas)))
