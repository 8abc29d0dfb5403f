"""A lab kit on a serial cable: the reference node firmware, run under CPython on a pseudo-terminal.

The node process holds the master side of a pty; the gateway opens the slave side through a stable
symlink, as it would a ``/dev/serial/by-id/...`` name::

    kit = KitNodeProcess(tmp / "ttyKIT", state_dir=tmp / "kit-state")
    kit.start()          # a pty, and the node running on it
    kit.kill()           # kill -9: a node reset (the pty stays; the node's flash, state_dir, stays)
    kit.start()          # boots again from state_dir
    kit.unplug()         # the pty goes away: the gateway sees end-of-file, the name vanishes
    kit.plug(); kit.start()

The node is the very module a board runs (:mod:`edugate.firmware_bridge.node.main`), in a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tty
from collections.abc import Sequence
from pathlib import Path


class KitNodeProcess:
    def __init__(self, link: str | Path, state_dir: str | Path, *, node_id: str = "sim-kit-1",
                 board: str = "microbit-v2", firmware: str = "1.0.0", interval_ms: int = 200,
                 pubkey: str | Path | None = None, protocol_version: int = 1, extra: Sequence[str] = ()) -> None:
        self.link = Path(link)
        self.state_dir = Path(state_dir)
        self.args = ["--node-id", node_id, "--board", board, "--firmware", firmware, "--interval-ms",
                     str(interval_ms), "--protocol-version", str(protocol_version), *extra]
        if pubkey is not None:
            self.args += ["--pubkey", str(pubkey)]
        self.proc: subprocess.Popen[bytes] | None = None
        self._master = -1
        self._slave = -1
        self.starts = 0

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    def plug(self) -> None:
        if self.plugged:
            return
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        self._master, self._slave = master, slave
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(f".{self.link.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)

    def start(self) -> None:
        """Boot the node (plugging the cable in first if needed)."""
        self.plug()
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edugate.firmware_bridge.node.main", "--fd", str(self._master), "--state",
             str(self.state_dir), *self.args], pass_fds=(self._master,), stdin=subprocess.DEVNULL)
        self.starts += 1

    def kill(self) -> None:
        """kill -9 the node (a reset, or a power cut of the kit)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def unplug(self) -> None:
        """Pull the cable: the node stops, the pty closes, the name vanishes."""
        self.kill()
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def inject(self, data: bytes) -> None:
        """Bytes on the line as if the node had sent them (noise, a garbled frame)."""
        os.write(self._master, data)

    def close(self) -> None:
        self.unplug()
