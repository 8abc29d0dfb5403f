"""A private PostgreSQL (Debian's ``postgresql``) on a free loopback port, for tests and benchmarks.

``initdb`` makes a fresh cluster in its own directory (trust authentication on loopback only, user
``edugate``, database ``edugate``); ``pg_ctl``-style start and stop by PID. PostgreSQL refuses to run as root:
as root the directory is created outside root's private temp folders and handed to the ``postgres`` user, and
the server runs as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from edugate.simulators.servers import free_port, wait_for_port

USER = "edugate"
DATABASE = "edugate"


def pg_bindir() -> Path:
    """The newest installed ``/usr/lib/postgresql/<version>/bin`` (Debian keeps the server binaries there)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install -y postgresql)")
    return Path(found[-1]).parent


class Postgres:
    """One private PostgreSQL server; ``dsn`` is ready once ``start()`` returns."""

    def __init__(self, workdir: Path | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.bindir = pg_bindir()
        self.host = host
        self.port = port or free_port(host)
        self._as_root = os.geteuid() == 0
        # root's pytest folders (/tmp/pytest-of-root, mode 0700) are closed to the postgres user
        self.workdir = Path(tempfile.mkdtemp(prefix="edugate-pg-")) if self._as_root or workdir is None \
            else Path(workdir)
        self.datadir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self.proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{DATABASE}"

    def _run_as(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if self._as_root else []

    def _init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        subprocess.run([*self._run_as(), str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", USER,
                        "--auth=trust", "-E", "UTF8", "--no-sync"], check=True, capture_output=True)

    def start(self, timeout: float = 30.0) -> Postgres:
        if self.proc is not None and self.proc.poll() is None:
            return self
        fresh = not self.datadir.exists()
        if fresh:
            self._init()
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.fchown(log, pw.pw_uid, pw.pw_gid)
        self.proc = subprocess.Popen(
            [*self._run_as(), str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
             "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.workdir}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        os.close(log)
        wait_for_port(self.host, self.port, timeout, proc=self.proc)
        deadline = time.monotonic() + timeout
        while subprocess.run([str(self.bindir / "pg_isready"), "-h", self.host, "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL not ready after {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.1)
        if fresh:
            subprocess.run([str(self.bindir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", USER,
                            DATABASE], check=True, capture_output=True)
        return self

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT: PostgreSQL's 'fast' shutdown (SIGKILL for a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
