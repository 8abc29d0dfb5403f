"""systemd's notify protocol (sd_notify), spoken directly: one datagram to ``$NOTIFY_SOCKET``, no library.

``READY=1`` once the gateway runs (``Type=notify`` units wait for it), ``WATCHDOG=1`` every half
``$WATCHDOG_USEC`` from the event loop (``WatchdogSec=``: a gateway whose loop is stuck stops pinging and
systemd restarts it), ``STOPPING=1`` when it shuts down. Outside systemd (no ``$NOTIFY_SOCKET``) nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; False when not run by systemd or the send failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", message.split("\n", 1)[0], exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd asked for (``WatchdogSec=``), or None without a watchdog for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.01, int(usec) / 1e6 / 2)
    except ValueError:
        return None


async def watchdog() -> None:
    """Ping systemd's watchdog from the event loop for as long as the loop runs (returns at once without one)."""
    interval = watchdog_interval_s()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
