"""``edugate central-doctor``: check the central broker against the fleet it must carry (issue 23).

Mosquitto needs one file descriptor per connected client. Debian's ``mosquitto.service`` sets no
``LimitNOFILE``, so the limit is 1024 and the gateways past about 1,015 are refused with a misleading
``denied access by tcpd`` log line. This check reads the running broker's limit (``/proc/<pid>/limits``) and
compares it with the number of provisioned gateways: given with ``--gateways``, or counted from the retained
``state`` messages on the broker (every gateway that ever connected left one).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit
from edugate.central.config import override_broker
from edugate.common.mqtt import BrokerConfig

DEFAULT_PID_FILE = Path("/run/mosquitto/mosquitto.pid")  # Debian's mosquitto.conf: pid_file
SPARE_DESCRIPTORS = 64  # listeners, the persistence file, ingest workers, pages, command tools, logs
SPARE_SHARE = 0.2  # and a fifth more than the fleet, for growth and reconnect overlap
SHIPPED_LIMIT = 65536  # config/mosquitto/mosquitto.service.d/edugate.conf


@dataclass(frozen=True)
class FdCheck:
    ok: bool
    limit: int
    needed: int
    gateways: int
    message: str


def needed_descriptors(gateways: int) -> int:
    """Descriptors a broker needs for ``gateways``, with the margin: one each, a fifth more, and 64 spare."""
    return int(gateways * (1 + SPARE_SHARE)) + SPARE_DESCRIPTORS


def process_fd_limit(pid: int) -> int | None:
    """The soft 'Max open files' limit of process ``pid`` (None: unlimited)."""
    text = Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\S+)", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"/proc/{pid}/limits has no 'Max open files' line")
    return None if match.group(1) == "unlimited" else int(match.group(1))


def find_broker_pid(pid_file: Path = DEFAULT_PID_FILE) -> int | None:
    """The broker's pid from its pid file, else the one process named ``mosquitto`` on this machine."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "mosquitto":
                    found.append(int(proc.name))
            except OSError:
                continue
    return found[0] if len(found) == 1 else None


def check_fd_limit(limit: int | None, gateways: int) -> FdCheck:
    needed = needed_descriptors(gateways)
    if limit is None or limit >= needed:
        shown = "unlimited" if limit is None else str(limit)
        return FdCheck(True, limit or 0, needed, gateways,
                       f"OK: the broker may open {shown} files; {gateways} gateways need about {needed}")
    return FdCheck(False, limit, needed, gateways,
                   f"WARNING: the broker may open only {limit} files, but {gateways} provisioned gateways need about "
                   f"{needed} (one each, a fifth more, {SPARE_DESCRIPTORS} spare): about {max(0, limit - 10)} can "
                   f"connect, the rest are refused (Mosquitto logs 'denied access by tcpd'). Install "
                   f"config/mosquitto/mosquitto.service.d/edugate.conf (LimitNOFILE={SHIPPED_LIMIT}) into "
                   f"/etc/systemd/system/mosquitto.service.d/, then systemctl daemon-reload && systemctl restart "
                   f"mosquitto")


def count_retained_gateways(cfg_broker: BrokerConfig, password: str | None, wait_s: float) -> int:
    """Gateways with a retained state on the broker (``edu/v1/+/+/state``), counted for ``wait_s`` seconds."""
    from edugate.common.mqtt import paho_client
    from edugate.contract.topics import TOPIC_ROOT

    seen: set[str] = set()
    done = threading.Event()
    client = paho_client(cfg_broker.model_copy(update={"client_id": f"edugate-doctor-{os.getpid()}",
                                                       "clean_session": True}), password=password)

    def on_connect(c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        if not getattr(reason, "is_failure", False):
            client.subscribe(f"{TOPIC_ROOT}/+/+/state", 1)

    def on_message(_c: object, _u: object, msg: object) -> None:
        if getattr(msg, "retain", False) and getattr(msg, "payload", b""):
            seen.add(str(getattr(msg, "topic", "")))

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect_async_first()
    client.loop_start()
    try:
        done.wait(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(seen)


def central_doctor(
    config: CentralConfigOpt = None,
    gateways: Annotated[int | None, typer.Option("--gateways", min=0, help="Provisioned gateways (default: those "
                                                 "with a retained state on the broker, counted for --wait s).",
                                                 show_default=False)] = None,
    broker_pid: Annotated[int | None, typer.Option("--broker-pid", help="The Mosquitto process to check (default: "
                                                   "from /run/mosquitto/mosquitto.pid, else the one 'mosquitto' "
                                                   "process here).", show_default=False)] = None,
    broker: Annotated[str | None, typer.Option("--broker", help="Broker URL to count retained states on "
                                               "(default: central.yaml's broker section).", show_default=False)]
    = None,
    wait: Annotated[float, typer.Option("--wait", min=0.1, help="Seconds to collect retained states.")] = 3.0,
) -> None:
    """Check the central broker on this machine against the fleet: its file-descriptor limit (exit code 1 if
    too low, 2 if it cannot be checked)."""
    pid = broker_pid if broker_pid is not None else find_broker_pid()
    if pid is None:
        typer.echo("cannot find the broker's process: give --broker-pid (run this on the broker's machine)", err=True)
        raise typer.Exit(2)
    try:
        limit = process_fd_limit(pid)
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot read the limits of process {pid}: {exc}", err=True)
        raise typer.Exit(2) from None
    if gateways is None:
        cfg = central_config_or_exit(config)
        try:
            broker_cfg = override_broker(cfg.broker, url=broker)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--broker") from None
        password = broker_cfg.password_file.read_text().strip() if broker_cfg.password_file else None
        gateways = count_retained_gateways(broker_cfg, password, wait)
        typer.echo(f"{gateways} gateways have a retained state on {', '.join(broker_cfg.brokers)}")
    result = check_fd_limit(limit, gateways)
    typer.echo(f"broker process {pid} ({os.uname().nodename}): {result.message}")
    if not result.ok:
        raise typer.Exit(1)
