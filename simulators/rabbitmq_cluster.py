"""A 3-node RabbitMQ cluster (Debian's ``rabbitmq-server`` 3.10) on free loopback ports, for tests and benchmarks.

Every node is its own Erlang node (``edugate-r{i}@localhost``) with its own AMQP, MQTT and distribution ports,
data directory, log directory and config file; all share one Erlang cookie and one ``epmd`` on a port of their
own (so the cluster neither needs nor disturbs a system RabbitMQ). The nodes find each other through
``classic_config`` peer discovery. Every node runs the MQTT plugin the gateways connect to, with persistent
MQTT sessions kept in quorum queues (``mqtt.durable_queue_type = quorum``).

A node can be killed with SIGKILL (its whole process group: beam and helpers) and started again on the same
ports and data directory; it rejoins the cluster and its quorum-queue replicas catch up from the others.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from edugate.simulators.servers import free_port, wait_for_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")  # Debian's scripts without the wrapper that switches to user rabbitmq
HOSTNAME = "localhost"


def rabbit_binary(name: str) -> str:
    path = RABBIT_BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (apt-get install -y rabbitmq-server)")
    return str(path)


@dataclass
class RabbitNode:
    """One node: its ports, directories and process."""

    name: str
    workdir: Path
    host: str = "127.0.0.1"
    amqp_port: int = 0
    mqtt_port: int = 0
    dist_port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attr in ("amqp_port", "mqtt_port", "dist_port"):
            if not getattr(self, attr):
                setattr(self, attr, free_port(self.host))

    @property
    def nodename(self) -> str:
        return f"{self.name}@{HOSTNAME}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.amqp_port}/"

    @property
    def mqtt_address(self) -> str:
        return f"{self.host}:{self.mqtt_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "rabbitmq.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "console.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def node_config(node: RabbitNode, peers: list[RabbitNode]) -> str:
    """The rabbitmq.conf of one node: loopback listeners, MQTT plugin settings, the cluster's members."""
    members = "\n".join(f"cluster_formation.classic_config.nodes.{i} = {p.nodename}"
                        for i, p in enumerate(peers, start=1))
    return f"""# written by edugate.simulators.rabbitmq_cluster (see docs/central.md, section 8)
listeners.tcp.default = {node.host}:{node.amqp_port}
cluster_formation.peer_discovery_backend = classic_config
{members}
# a node that lost its peers pauses instead of serving a minority (no split brain)
cluster_partition_handling = pause_minority
# queue counters (rabbitmqctl list_queues) refreshed every 0.5 s instead of 5 s
collect_statistics_interval = 500
mqtt.listeners.tcp.default = {node.host}:{node.mqtt_port}
mqtt.allow_anonymous = true
mqtt.vhost = /
mqtt.exchange = amq.topic
# persistent MQTT sessions (clean_session false) keep their subscriptions in replicated quorum queues
mqtt.durable_queue_type = quorum
mqtt.retained_message_store = rabbit_mqtt_retained_msg_store_dets
mqtt.prefetch = 100
log.console = true
log.console.level = info
log.file = false
"""


class RabbitCluster:
    """``size`` nodes on loopback; ``start()`` returns once every node runs and sees the others."""

    def __init__(self, workdir: Path, size: int = 3, host: str = "127.0.0.1") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server = rabbit_binary("rabbitmq-server")
        self.ctl = rabbit_binary("rabbitmqctl")
        self.epmd_port = free_port(host)
        self.nodes = [RabbitNode(f"edugate-r{i + 1}", self.workdir / f"r{i + 1}", host) for i in range(size)]
        cookie = self.workdir / ".erlang.cookie"  # $HOME/.erlang.cookie of every node and of rabbitmqctl
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        for node in self.nodes:
            node.config_path.write_text(node_config(node, self.nodes))

    @property
    def amqp_urls(self) -> list[str]:
        return [n.amqp_url for n in self.nodes]

    @property
    def mqtt_brokers(self) -> list[str]:
        """``host:port`` of every node's MQTT listener: a gateway's ``uplink.brokers`` list."""
        return [n.mqtt_address for n in self.nodes]

    def env(self, node: RabbitNode) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(self.workdir),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": node.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": node.host,
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(node.config_path),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.workdir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(node.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(node.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.workdir / "log"),
            "RABBITMQ_PID_FILE": str(node.workdir / "rabbit.pid"),
            "RABBITMQ_USE_LONGNAME": "false",
        }

    def start(self, timeout: float = 90.0) -> RabbitCluster:
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_running(node, timeout)
        self.wait_clustered(timeout)
        return self

    def start_node(self, node: RabbitNode | int, *, wait: bool = True, timeout: float = 90.0) -> RabbitNode:
        node = self._node(node)
        if node.running:
            return node
        with node.log_path.open("ab") as log:
            node.proc = subprocess.Popen([self.server], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=node.workdir, env=self.env(node), start_new_session=True)
        if wait:
            self.wait_running(node, timeout)
        return node

    def wait_running(self, node: RabbitNode | int, timeout: float = 90.0) -> None:
        """Until the node's AMQP and MQTT listeners accept connections (both open once the node has booted)."""
        node = self._node(node)
        try:
            wait_for_port(node.host, node.amqp_port, timeout, proc=node.proc)
            wait_for_port(node.host, node.mqtt_port, timeout, proc=node.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"rabbitmq {node.name}: {exc}: {node.log_path.read_text(errors='replace')[-3000:]}") \
                from None

    def rabbitmqctl(self, node: RabbitNode | int, *args: str, timeout: float = 30.0) -> str:
        """``rabbitmqctl -n node args``; raises ``RuntimeError`` with its output when it fails."""
        node = self._node(node)
        done = subprocess.run([self.ctl, "-n", node.nodename, *args], env=self.env(node), capture_output=True,
                              text=True, timeout=timeout, check=False)
        if done.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name}: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def running_nodes(self, node: RabbitNode | int = 0) -> set[str]:
        import json

        status = json.loads(self.rabbitmqctl(node, "cluster_status", "--formatter", "json"))
        return set(status.get("running_nodes", []))

    def wait_clustered(self, timeout: float = 90.0) -> None:
        want = {n.nodename for n in self.nodes if n.running}
        deadline = time.monotonic() + timeout
        while True:
            alive = next(n for n in self.nodes if n.running)
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, ValueError):
                if self.running_nodes(alive) >= want:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the nodes did not form one cluster of {sorted(want)} within {timeout:.0f} s")
            time.sleep(0.5)

    def queue_leader(self, queue: str) -> RabbitNode:
        """The node that leads the quorum queue ``queue`` now."""
        alive = next(n for n in self.nodes if n.running)
        out = self.rabbitmqctl(alive, "list_queues", "name", "leader", "--quiet", "--no-table-headers")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return next(n for n in self.nodes if n.nodename == parts[1])
        raise LookupError(f"queue {queue!r} not found (or without a leader): {out!r}")

    def queue_counts(self, queue: str) -> tuple[int, int] | None:
        """(ready, unacknowledged) messages of ``queue`` as the broker last counted them (refreshed every 0.5 s:
        ``collect_statistics_interval``); None while no node can answer."""
        alive = next((n for n in self.nodes if n.running), None)
        if alive is None:
            return None
        try:
            out = self.rabbitmqctl(alive, "list_queues", "name", "messages_ready", "messages_unacknowledged",
                                   "--quiet", "--no-table-headers")
        except (RuntimeError, subprocess.TimeoutExpired):
            return None
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == queue and parts[1].isdigit() and parts[2].isdigit():
                return int(parts[1]), int(parts[2])
        return None

    def kill(self, node: RabbitNode | int) -> RabbitNode:
        """SIGKILL to the node's whole process group: no goodbye to peers or clients, as when the machine dies."""
        node = self._node(node)
        if node.proc is not None and node.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(10)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGTERM)
                try:
                    node.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill(node)
        self._stop_epmd()

    def _stop_epmd(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], capture_output=True, timeout=10,
                           check=False, env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)})

    def _node(self, node: RabbitNode | int) -> RabbitNode:
        return self.nodes[node] if isinstance(node, int) else node

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
