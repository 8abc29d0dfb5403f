"""Remote configuration (issue 18): the ``config.get``, ``config.apply`` and ``driver.restart`` commands.

``config.apply`` carries a whole new YAML file. The gateway validates it exactly as ``edugate check`` does
(a refusal lists every ``file:line: path: message``, and nothing changes), keeps the file it replaces as
``<config>.prev``, writes the new one atomically, answers ``ok`` and restarts itself on it (the same process
re-executed: the outbox is closed cleanly before and keeps every record). The restarted gateway is on trial
(:mod:`edugate.gateway.update.trial`): unless it is healthy within ``deadline_s`` (uplink connected with a
message acknowledged, every device that was online before back online) the previous file is restored and
the gateway restarted on it. The outcome reaches central as a durable event: ``config.applied`` or
``config.rolled_back`` (with the reason), ``data.cmd_id`` naming the command.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from edugate.common.yamlconfig import ConfigError, Problem, format_path, line_of, parse_mapping
from edugate.contract.state import DeviceState
from edugate.drivers.base import CommandError
from edugate.gateway.config import GatewayConfigBase, config_warnings, parse_config
from edugate.gateway.downlink.registry import CommandArgs, CommandRegistry, current_command_id
from edugate.gateway.update.trial import (
    IN_PLACE,
    UNDO,
    Trial,
    TrialError,
    atomic_write,
    journal_path,
    reexec,
    restart_argv,
)

if TYPE_CHECKING:
    from edugate.gateway.runtime.gateway import Gateway
    from edugate.gateway.update.command import Updater

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 60_000  # the envelope is at most 64 KiB


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def backup_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".prev")


class ConfigGetArgs(CommandArgs):
    """``config.get`` takes no arguments."""


class ConfigApplyArgs(CommandArgs):
    yaml: str = Field(min_length=1, max_length=MAX_CONFIG_BYTES, description="The whole new config file.")
    expect_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Refuse unless the file in "
                                      "place still has this hash (from config.get): no blind overwrite of a "
                                      "change made meanwhile.")
    deadline_s: float = Field(60.0, ge=2, le=1800, description="Roll back unless healthy within this time.")
    dry_run: bool = Field(False, description="Only validate; change nothing.")


class DriverRestartArgs(CommandArgs):
    device: str = Field(pattern=r"^[a-z0-9_][a-z0-9_-]{0,62}$", description="Device id on this gateway.")


def validate(text: str, config_path: Path) -> tuple[GatewayConfigBase, list[str]]:
    """The parsed config and its warnings, or :class:`CommandError` listing every problem as ``edugate check``
    prints it (the file name is the gateway's config file, the lines those of ``text``)."""
    try:
        cfg = parse_config(text, str(config_path))
    except ConfigError as exc:
        raise CommandError(f"invalid config, nothing changed:\n{exc}") from None
    root, _, _ = parse_mapping(text, str(config_path))
    warnings = [str(Problem(str(config_path), line_of(root, loc), format_path(loc), f"warning: {message}"))
                for loc, message in config_warnings(cfg)]
    return cfg, warnings


def _undo_config(doc: Mapping[str, Any]) -> list[str] | None:
    """Put the previous file back (the journal's ``backup``) in place of the config."""
    config, backup = Path(doc["config"]), Path(doc["backup"])
    atomic_write(config, backup.read_bytes(), mode=config.stat().st_mode & 0o777)
    return None


def _config_in_place(doc: Mapping[str, Any]) -> str | None:
    found = sha256(Path(doc["config"]).read_bytes())
    return None if found == doc["report"]["sha256"] else f"{doc['config']} is not the new file (sha256 {found[:12]})"


UNDO["config"] = _undo_config
IN_PLACE["config"] = _config_in_place


class RemoteConfig:
    """The remote-configuration commands of one gateway, and the trial of a config just applied."""

    def __init__(self, gateway: Gateway, config_path: Path, trial: Trial | None) -> None:
        self.gateway = gateway
        self.config_path = config_path.resolve()
        self.trial = trial
        self.updater: Updater | None = None

    def register(self, registry: CommandRegistry) -> None:
        registry.register("config.get", ConfigGetArgs, self.get, description="The config file in use and its hash.")
        registry.register("config.apply", ConfigApplyArgs, self.apply, description="Validate, write and apply a "
                          "new config file; rolled back unless healthy within deadline_s.")
        registry.register("driver.restart", DriverRestartArgs, self.restart_driver,
                          description="Stop one device's driver and start it again.")
        from edugate.gateway.update.command import Updater  # gateway.update: the same trial, another change

        self.updater = Updater(self.gateway, self.config_path)
        self.updater.register(registry)

    async def run(self) -> None:
        """The trial of a change this start is running (a task on the gateway's loop)."""
        if self.trial is not None:
            await self.trial.watch(self.gateway)

    # ------------------------------------------------------------------ commands

    async def get(self, _: ConfigGetArgs) -> dict[str, Any]:
        data = self.config_path.read_bytes()
        return {"path": str(self.config_path), "sha256": sha256(data), "yaml": data.decode("utf-8", "replace")}

    async def apply(self, args: ConfigApplyArgs) -> dict[str, Any]:
        if self.updater is not None and self.updater.busy:
            raise CommandError("a gateway.update is being installed; wait for its outcome event")
        if journal_path(self.config_path).exists():
            raise CommandError("a change (config or update) is still on trial on this gateway; wait for its outcome "
                               "event")
        current = self.config_path.read_bytes()
        if args.expect_sha256 is not None and args.expect_sha256 != sha256(current):
            raise CommandError(f"the config file changed since it was read (sha256 {sha256(current)}, expected "
                               f"{args.expect_sha256}): read it again with config.get")
        new = args.yaml.encode()
        cfg, warnings = validate(args.yaml, self.config_path)
        old = self.gateway.cfg
        if (cfg.school, cfg.gateway) != (old.school, old.gateway):
            raise CommandError(f"school/gateway would change from {old.school}/{old.gateway} to "
                               f"{cfg.school}/{cfg.gateway}: a gateway's identity is changed where it stands, "
                               "not remotely")
        new_outbox = cfg.storage.path if cfg.storage.path.is_absolute() else \
            (self.config_path.parent / cfg.storage.path).resolve()
        if new_outbox != old.storage.path:
            raise CommandError(f"storage.path would move the outbox from {old.storage.path} to {new_outbox}, leaving "
                               "the records queued in it behind; move it at the gateway, with the gateway stopped")
        if not cfg.downlink.enabled:
            raise CommandError("downlink.enabled: false would cut this gateway off from central's commands (and "
                               "from a rollback command); change that on the gateway itself")
        result: dict[str, Any] = {"sha256": sha256(new), "previous_sha256": sha256(current), "warnings": warnings}
        if args.dry_run:
            return result | {"applied": False, "dry_run": True}
        if new == current:
            return result | {"applied": False, "unchanged": True}
        cmd_id = current_command_id.get() or "unknown"
        online = [d for d, drv in self.gateway.drivers.items() if drv.health.state == DeviceState.ONLINE]
        backup = backup_path(self.config_path)
        await asyncio.to_thread(self._write_change, current, new, cmd_id, args.deadline_s, online)  # fsyncs
        log.warning("config.apply %s: new config written (sha256 %s, previous kept as %s); restarting on it, "
                    "rolled back unless healthy within %g s", cmd_id, sha256(new)[:12], backup, args.deadline_s)
        self.gateway.restart(lambda: reexec(restart_argv()))
        return result | {"applied": True, "restarting": True, "deadline_s": args.deadline_s,
                         "outcome_event": "config.applied or config.rolled_back, data.cmd_id = this command's id"}

    def _write_change(self, current: bytes, new: bytes, cmd_id: str, deadline_s: float, online: list[str]) -> None:
        """Keep the file in place as the backup, write the journal, then the new file (each atomically)."""
        backup = backup_path(self.config_path)
        try:
            atomic_write(backup, current, mode=0o600)
            trial = Trial.begin(self.config_path, "config", cmd_id, deadline_s, online,
                                config=str(self.config_path), backup=str(backup),
                                report={"sha256": sha256(new), "previous_sha256": sha256(current)})
        except (OSError, TrialError) as exc:
            raise CommandError(f"cannot keep the previous config as {backup}: {exc}; nothing changed") from None
        try:
            atomic_write(self.config_path, new, mode=self.config_path.stat().st_mode & 0o777)
        except OSError as exc:
            trial.remove()
            raise CommandError(f"cannot write {self.config_path}: {exc}; nothing changed") from None

    async def restart_driver(self, args: DriverRestartArgs) -> dict[str, Any]:
        if args.device not in self.gateway.drivers:
            raise CommandError(f"unknown device {args.device!r} (not configured or not enabled on this gateway)")
        await self.gateway.restart_driver(args.device)
        return {"device": args.device, "restarted": True}
