"""``edugate central-doctor``: check the central broker against the fleet it must carry (issue 23).

Mosquitto needs one file descriptor per connected client. Debian's ``mosquitto.service`` sets no
``LimitNOFILE``, so the limit is 1024 and the gateways past about 1,015 are refused with a misleading
``denied access by tcpd`` log line. This check reads the running broker's limit (``/proc/<pid>/limits``) and
compares it with the number of provisioned gateways: given with ``--gateways``, or counted from the retained
``state`` messages on the broker (every gateway that ever connected left one).

Read from those retained states, it also checks that the gateways of each school report one card identity rule
(issue 22, :mod:`edugate.central.card_rules`): a school whose gateways differ gives one card several pseudonyms.

It also says what the broker WILL get (issue 23): the ``LimitNOFILE`` systemd gives ``mosquitto.service`` at its
next start, read from the unit files on disk (:mod:`.unit_limits`; the only check when no broker runs here, or
under ``--root``, a copy of the broker machine's files), and counts as provisioned the gateways holding a valid
certificate of the provisioning CA (``--ca``: its ``records.jsonl``), connected or not, with those that left a
retained state.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from edugate.central.card_rules import RuleMismatch, rule_mismatches
from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit
from edugate.central.config import override_broker
from edugate.central.ingest.unit_limits import UnitFileError, unit_nofile_limit
from edugate.common.mqtt import BrokerConfig
from edugate.common.provisioning import ProvisioningError, provisioned_gateways

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


class BrokerUnreachable(ConnectionError):
    """The broker did not accept our connection while we waited for its retained states."""


def count_retained_gateways(cfg_broker: BrokerConfig, password: str | None, wait_s: float) -> int:
    """Gateways with a retained state on the broker (``edu/v1/+/+/state``), counted for ``wait_s`` seconds."""
    return len(retained_states(cfg_broker, password, wait_s))


def card_rule_mismatches(states: Mapping[str, bytes]) -> tuple[list[RuleMismatch], list[str]]:
    """The schools whose gateways report different card rules in ``states`` (topic -> retained payload), and
    the problems of payloads that could not be read (each naming its topic)."""
    from edugate.central.fleet import FleetTable, InvalidState, parse_state
    from edugate.contract.topics import InvalidTopic, parse_topic

    table = FleetTable()
    problems: list[str] = []
    now = int(time.time() * 1000)
    for name, payload in sorted(states.items()):
        try:
            topic = parse_topic(name)
            doc, doc_problems = parse_state(payload)
        except (InvalidTopic, InvalidState) as exc:
            problems.append(f"{name}: {exc}")
            continue
        problems += [f"{name}: {p}" for p in doc_problems]
        if doc is not None:
            table.apply(topic.school, topic.gateway, doc, now)
    return rule_mismatches(table.snapshot()), problems


def retained_states(cfg_broker: BrokerConfig, password: str | None, wait_s: float) -> dict[str, bytes]:
    """The retained state payloads on the broker (``edu/v1/+/+/state``) by topic, collected for ``wait_s`` s."""
    from edugate.common.mqtt import paho_client
    from edugate.contract.topics import TOPIC_ROOT

    seen: dict[str, bytes] = {}
    done = threading.Event()
    connected = threading.Event()
    client = paho_client(cfg_broker.model_copy(update={"client_id": f"edugate-doctor-{os.getpid()}",
                                                       "clean_session": True}), password=password)

    def on_connect(c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        if not getattr(reason, "is_failure", False):
            connected.set()
            client.subscribe(f"{TOPIC_ROOT}/+/+/state", 1)

    def on_message(_c: object, _u: object, msg: object) -> None:
        if getattr(msg, "retain", False) and getattr(msg, "payload", b""):
            seen[str(getattr(msg, "topic", ""))] = bytes(getattr(msg, "payload", b""))

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect_async_first()
    client.loop_start()
    try:
        done.wait(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    if not connected.is_set():
        raise BrokerUnreachable(f"the broker ({', '.join(cfg_broker.brokers)}) did not accept a connection within "
                                f"{wait_s} s")
    return dict(seen)


def ca_gateways(ca: Path) -> set[str]:
    """The gateways (``school/gateway``) holding a valid certificate of the CA in ``ca``; says how many."""
    try:
        issued = provisioned_gateways(ca)
    except ProvisioningError as exc:
        typer.echo(f"cannot count the provisioned gateways: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(issued.valid)} gateways hold a valid certificate of the CA in {ca} (left out: "
               f"{len(issued.revoked)} revoked, {len(issued.expired)} expired)")
    return set(issued.valid)


def check_unit_files(root: Path, gateways: int) -> bool | None:
    """Say what systemd will give Mosquitto at its next start (unit files under ``root``) and whether it is
    enough; None if there is no mosquitto.service there."""
    try:
        unit = unit_nofile_limit("mosquitto.service", root)
    except UnitFileError as exc:
        typer.echo(f"systemd's files under {root}: {exc}", err=True)
        return None
    result = check_fd_limit(unit.limit.soft, gateways)
    where = "" if root == Path("/") else f" under {root}"
    typer.echo(f"mosquitto.service{where} at its next start: {unit.explain()}; Mosquitto gets the soft limit: "
               f"{result.message}")
    return result.ok


def central_doctor(
    config: CentralConfigOpt = None,
    gateways: Annotated[int | None, typer.Option("--gateways", min=0, help="Provisioned gateways (default: those "
                                                 "of --ca and those with a retained state on the broker, counted "
                                                 "for --wait s).", show_default=False)] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="The provisioning CA folder (`edugate provision ca`): "
                                            "count the gateways holding a valid certificate in its records.jsonl "
                                            "(revoked.jsonl left out), connected or not. Read only.",
                                            show_default=False)] = None,
    retained: Annotated[bool, typer.Option("--retained/--no-retained", help="Count the gateways with a retained "
                                           "state on the broker too (with --ca, an unreachable broker is then "
                                           "only noted).")] = True,
    broker_pid: Annotated[int | None, typer.Option("--broker-pid", help="The Mosquitto process to check (default: "
                                                   "from /run/mosquitto/mosquitto.pid, else the one 'mosquitto' "
                                                   "process here).", show_default=False)] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Check what systemd will give the broker from the "
                                              "unit files under this folder (mosquitto.service, then its "
                                              "mosquitto.service.d/*.conf drop-ins), e.g. a copy of the broker "
                                              "machine's files; no running broker is looked for. Default: the "
                                              "running broker here and the unit files under /.",
                                              show_default=False, exists=True, file_okay=False)] = None,
    broker: Annotated[str | None, typer.Option("--broker", help="Broker URL to count retained states on "
                                               "(default: central.yaml's broker section).", show_default=False)]
    = None,
    wait: Annotated[float, typer.Option("--wait", min=0.1, help="Seconds to collect retained states.")] = 3.0,
) -> None:
    """Check the central broker against the fleet: its file-descriptor limit, running and at its next start under
    systemd (exit code 1 if too low, 2 if it cannot be checked) and, unless --gateways is given, that the gateways
    of each school report one card identity rule (exit code 1 if not)."""
    pid = broker_pid if broker_pid is not None or root is not None else find_broker_pid()
    limit: int | None = None
    if pid is not None:
        try:
            limit = process_fd_limit(pid)
        except (OSError, ValueError) as exc:
            typer.echo(f"cannot read the limits of process {pid}: {exc}", err=True)
            raise typer.Exit(2) from None
    mismatches: list[RuleMismatch] = []
    if gateways is None and not retained and ca is None:
        raise typer.BadParameter("nothing to count the gateways from: give --gateways N or --ca",
                                 param_hint="--no-retained")
    if gateways is None:
        fleet = ca_gateways(ca) if ca is not None else set()
        states: dict[str, bytes] = {}
        if retained:
            cfg = central_config_or_exit(config)
            try:
                broker_cfg = override_broker(cfg.broker, url=broker)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--broker") from None
            try:
                password = broker_cfg.password("broker.password_file")
            except ValueError as exc:  # PasswordFileError: its message names the option and the file
                raise typer.BadParameter(str(exc)) from None
            try:
                states = retained_states(broker_cfg, password, wait)
            except BrokerUnreachable as exc:
                if ca is None:
                    typer.echo(f"cannot count the gateways: {exc}; give --gateways N or --ca (the provisioning CA "
                               "folder)", err=True)
                    raise typer.Exit(2) from None
                typer.echo(f"note: {exc}: counted the CA's gateways only")
            else:
                typer.echo(f"{len(states)} gateways have a retained state on {', '.join(broker_cfg.brokers)}")
        fleet |= {"/".join(topic.split("/")[2:4]) for topic in states}
        if ca is not None and retained:
            typer.echo(f"{len(fleet)} provisioned gateways in all (the CA's and those with a retained state)")
        gateways = len(fleet)
        mismatches, problems = card_rule_mismatches(states)
        for problem in problems:
            typer.echo(f"note: {problem}", err=True)
        for mismatch in mismatches:
            typer.echo(f"WARNING: {mismatch.message}")
        if not mismatches:
            typer.echo("OK: the gateways of each school report one card identity rule")
    checked: list[bool] = []
    if pid is not None:
        result = check_fd_limit(limit, gateways)
        typer.echo(f"broker process {pid} ({os.uname().nodename}): {result.message}")
        checked.append(result.ok)
    if broker_pid is None:
        unit_ok = check_unit_files(root or Path("/"), gateways)
        if unit_ok is not None:
            checked.append(unit_ok)
    if not checked:
        typer.echo("no broker runs here and no mosquitto.service is installed: give --broker-pid, or --root with a "
                   "copy of the broker machine's systemd files", err=True)
        raise typer.Exit(2)
    if not all(checked) or mismatches:
        raise typer.Exit(1)
