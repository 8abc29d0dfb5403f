"""Start real Mosquitto and VictoriaMetrics servers on free loopback ports.

Used by the tests, the demo and the benchmarks: nothing needs to run
beforehand, every server gets its own port and data directory, and is
stopped (and can be stopped and restarted on the same port) by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def find_binary(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in ("/usr/sbin", "/usr/bin", *extra_dirs) if (Path(d) / name).exists()), None
    )
    if not found:
        raise FileNotFoundError(f"{name} is not installed (apt-get install -y {name.replace('-prod', '')})")
    return found


@dataclass
class _Server:
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)

    def _argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{type(self).__name__.lower()}.log"

    def start(self) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=True)
        log.close()
        wait_for_port(self.host, self.port, proc=self.proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


SHIPPED_CONF = Path(__file__).resolve().parents[1] / "config" / "mosquitto" / "conf.d" / "edugate-central.conf"
"""The central broker settings the project ships (in a source checkout; None-safe: check ``.exists()``)."""


@dataclass
class Mosquitto(_Server):
    """A private Mosquitto broker. ``persistence`` keeps sessions and queued
    messages across a stop/start (written at shutdown and every few seconds)."""

    persistence: bool = True
    extra_conf: str = ""
    # A broker settings file (the shipped config/mosquitto/conf.d/edugate-central.conf, see SHIPPED_CONF)
    # used instead of the tests' own autosave/queue settings; the listener and folders stay ours.
    conf_file: Path | None = None

    def _argv(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        ours = [
            f"persistence {'true' if self.persistence else 'false'}",
            "autosave_interval 1",
            "max_inflight_messages 0",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_packet_size 268435455",
        ]
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # as root, mosquitto would switch to user "mosquitto" and could not write its persistence
            # file in our folder; stay the user who started it
            "user root" if os.geteuid() == 0 else "",
            f"persistence_location {self.workdir}/",
            *(ours if self.conf_file is None else [Path(self.conf_file).read_text()]),
            # a log file, not stdout: Mosquitto flushes its file after each line, while stdout into a file
            # is block-buffered and would show nothing until the broker stops
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            self.extra_conf,
        ]
        conf.write_text("\n".join(lines) + "\n")
        return [find_binary("mosquitto"), "-c", str(conf)]

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


@dataclass
class VictoriaMetrics(_Server):
    """A private single-node VictoriaMetrics with deduplication on, so a sample
    written twice (same series, same timestamp) is stored once."""

    dedup: bool = True

    def _argv(self) -> list[str]:
        argv = [
            find_binary("victoria-metrics", "/usr/local/bin"),
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]
        if self.dedup:
            argv.append("-dedup.minScrapeInterval=1ms")
        return argv

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"VictoriaMetrics at {self.url} not healthy")

    def flush(self) -> None:
        """Make recently written samples visible to queries (test/demo helper)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10) as r:
            r.read()
