"""Test helpers: a gateway in a subprocess, an MQTT collector, waiting on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def send_command(broker_url: str, key: Path, school: str, gateway: str, name: str, args: dict) -> dict:
    """Sign and send a command with ``edugate send``; return the gateway's cmd-result."""
    result = subprocess.run(
        [sys.executable, "-m", "edugate.central.command_tools", "send", "--key", f"{key}.pem", "--broker", broker_url,
         "--school", school, "--gateway", gateway, "--name", name, "--args", json.dumps(args),
         "--ttl", "120", "--timeout", "15"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


class _Deadline:
    """The clock and the failure message shared by ``wait_for`` and ``wait_for_async``."""

    def __init__(self, timeout: float, what: str) -> None:
        self.timeout, self.what = timeout, what
        self.end = time.monotonic() + timeout

    def check(self, last: Any) -> None:
        if time.monotonic() > self.end:
            shown = repr(last) if len(repr(last)) <= 200 else repr(last)[:200] + "..."
            raise AssertionError(f"timed out after {self.timeout:g} s waiting for {self.what} (last: {shown})")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; after ``timeout`` s fail naming
    ``what``. For a condition with no event to await (a file, a subprocess's output, a broker's delivery)."""
    deadline = _Deadline(timeout, what)
    while not (value := condition()):
        deadline.check(value)
        time.sleep(interval)
    return value


async def wait_for_async(condition: Callable[[], Any], timeout: float, what: str,  # noqa: ASYNC109 - as wait_for
                         interval: float = 0.05) -> Any:
    """``wait_for`` inside an event loop, for tests whose simulators run on that loop; ``condition`` may be a
    coroutine function."""
    deadline = _Deadline(timeout, what)
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        deadline.check(value)
        await asyncio.sleep(interval)


async def assert_stops_when_cancelled_as_it_wakes(run: Callable[[], Any], wakeup: Callable[[], Any],
                                                   tries: int = 20) -> None:
    """A service loop that sleeps on an ``asyncio.Event`` (``wakeup()`` returns the one it waits on now) must end
    when it is cancelled just as the event is set. Python 3.11's ``asyncio.wait_for`` drops such a cancellation
    (gh-86296), and stopping the gateway then waits for ever. ``run()`` starts one run of the loop."""
    for _ in range(tries):  # the interleaving depends on the loop's order: try it a few times
        task = asyncio.create_task(run())
        event = await wait_for_async(lambda: (e := wakeup()) is not None and e._waiters and e, 5,
                                     "the service waiting")
        event.set()
        await asyncio.sleep(0)  # the inner wait completes in this turn of the loop ...
        task.cancel()  # ... as the cancellation arrives
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done and task.cancelled(), "the service kept running after it was cancelled"


wait_async = wait_for_async  # the name its first callers use (tests/e2e/test_cards.py, test_bus.py, test_library.py)


def undelivered(collector: Collector, outbox: Path) -> set[int]:
    """Seqs the outbox committed that are neither at the collector nor still queued: the broker has them
    (acknowledged, on their way), unless the disk budget thinned them."""
    next_seq, queued = outbox_state(outbox)
    return set(range(1, next_seq)) - queued - collector.distinct()


def ingest_stats(stats_file: Path) -> dict[str, Any]:
    """The counters an ingest worker writes to its ``--stats-file`` ({} before the first write)."""
    try:
        return json.loads(stats_file.read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Collector:
    """Subscribes to ``edu/v1/#`` at QoS 1 with a persistent session and keeps every record it sees."""

    port: int
    client_id: str = "test-collector"
    records: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    states: list[dict] = field(default_factory=list)
    arrivals: list[tuple[float, str, int]] = field(default_factory=list)  # (time, kind, n records)
    raw: list[bytes] = field(default_factory=list)  # every payload as it crossed the broker
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe("edu/v1/#", qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)

    def start(self) -> Collector:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, "collector connected")
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        with self.lock:
            self.raw.append(msg.topic.encode() + b" " + bytes(msg.payload))
        if "/cmd" in msg.topic or kind == "stored":  # commands, and central's confirmations: not records
            return
        payload = json.loads(msg.payload) if msg.payload else None
        with self.lock:
            if kind == "state":
                self.states.append(payload)
                return
            self.records[kind].extend(payload)
            self.arrivals.append((time.time(), kind, len(payload)))

    def seqs(self, kind: str | None = None) -> list[int]:
        with self.lock:
            kinds = [kind] if kind else list(self.records)
            return [r["seq"] for k in kinds for r in self.records[k]]

    def distinct(self, kind: str | None = None) -> set[int]:
        return set(self.seqs(kind))

    def by_device(self, kind: str = "telemetry") -> Counter[str]:
        """Distinct records per device."""
        with self.lock:
            seen = {(r["device"], r["seq"]) for r in self.records[kind]}
        return Counter(device for device, _ in seen)


def outbox_state(path: Path) -> tuple[int, set[int]]:
    """(next seq, seqs still queued) read straight from the outbox file, as a separate reader would."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        queued = {s for (s,) in conn.execute("SELECT seq FROM telemetry UNION ALL SELECT seq FROM events")}
    finally:
        conn.close()
    return (row[0] if row else 1), queued


def outbox_ready(path: Path) -> bool:
    """The outbox file exists with its tables (``outbox_state`` can read it)."""
    if not path.exists():
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is not None
    finally:
        conn.close()


RUNNING: set[subprocess.Popen] = set()
"""Gateway processes started by :class:`GatewayProcess` and not yet stopped: ``tests/conftest.py`` kills what a
test left running (a failed assertion before its ``stop()``), so that no gateway outlives its test."""


def reap_running(keep: set[subprocess.Popen] | frozenset[subprocess.Popen] = frozenset()) -> list[int]:
    """Kill every gateway a test left running, but those in ``keep`` (started by a wider-scoped fixture before
    the test began); their pids."""
    pids = []
    for proc in list(RUNNING - set(keep)):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pids.append(proc.pid)
        RUNNING.discard(proc)
    return pids


@dataclass
class GatewayProcess:
    """``edugate run`` in a subprocess with a config written from a dict."""

    workdir: Path
    config: dict[str, Any]
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.setdefault("storage", {}).setdefault("path", str(self.workdir / "outbox.sqlite"))
        self.config.setdefault("privacy", {}).setdefault("secret_file", str(self.workdir / "school.key"))
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.log_path = self.workdir / "gateway.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.yaml"

    @property
    def outbox_path(self) -> Path:
        return Path(self.config["storage"]["path"])

    def start(self) -> GatewayProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "edugate.cli", "run", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=os.environ.copy())
        RUNNING.add(self.proc)
        log.close()
        wait_for(lambda: outbox_ready(self.outbox_path), 20, "the gateway to create its outbox")
        return self

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and the exit code. A gateway that has not ended within ``timeout`` is a hang: the failure
        carries where each of its threads stood (py-spy, when installed) and the end of its log."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stacks = _thread_stacks(self.proc.pid)
            self.kill()
            raise AssertionError(f"the gateway did not stop within {timeout:g} s of SIGTERM; its threads:\n"
                                 f"{stacks}\nits log ends:\n{self.log()[-3000:]}") from None
        RUNNING.discard(self.proc)
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        RUNNING.discard(self.proc)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _thread_stacks(pid: int) -> str:
    """Every thread's Python stack of process ``pid`` (py-spy dump, with the bench extra), else why not."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return "(py-spy is not installed: no stacks)"
    try:
        out = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(py-spy dump failed: {exc})"
    return out.stdout or out.stderr


@contextlib.contextmanager
def fd_limit(soft: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE set to ``soft`` (a broker started meanwhile inherits it)."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft > hard:
        pytest.skip(f"the hard descriptor limit here is {hard}, below {soft}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))
