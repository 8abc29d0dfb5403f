"""The ``gateway.update`` command (issue 19): install a new version beside the running one, switch to it, keep it
only if the gateway is healthy on it within ``deadline_s``; otherwise the previous version comes back by itself.

The command carries the wheel's URL and its sha256: the command is signed by central, so the hash makes the
wheel as trusted as the command. The handler answers at once (``installing``); the download, the new
environment and its config check run in the background (minutes on an SD card, longer than a command may
take). A failure there is reported as a ``gateway.update_failed`` event and changes nothing. Then the change
goes on trial (:mod:`edugate.gateway.update.trial`): ``gateway.update_trial``, then ``gateway.updated`` or
``gateway.update_rolled_back``, each with ``data.cmd_id``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from edugate.contract import __version__
from edugate.contract.records import Event
from edugate.contract.state import DeviceState
from edugate.drivers.base import CommandError
from edugate.gateway.downlink.registry import CommandArgs, CommandRegistry, current_command_id
from edugate.gateway.runtime.pipeline import GATEWAY_DEVICE
from edugate.gateway.update.installer import Layout, UpdateError, fetch, install, wheel_version
from edugate.gateway.update.trial import Trial, TrialError, journal_path, reexec

if TYPE_CHECKING:
    from edugate.gateway.runtime.gateway import Gateway

log = logging.getLogger(__name__)


class UpdateArgs(CommandArgs):
    url: str = Field(min_length=1, max_length=2000, description="http(s) or file URL (or absolute path) of the "
                     "EduGate wheel, e.g. from the department's package repository.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The wheel's SHA-256: only that file is installed.")
    deadline_s: float = Field(120.0, ge=2, le=3600, description="Roll back unless healthy within this time.")
    deps: Literal["shared", "install"] = Field("shared", description="'shared': the new version uses the "
                                               "running one's libraries (only the wheel is downloaded); "
                                               "'install': pip installs its dependencies too.")
    index_url: str | None = Field(None, max_length=2000, description="Package index for deps: install.")


class Updater:
    """``gateway.update`` for one gateway: at most one update at a time."""

    def __init__(self, gateway: Gateway, config_path: Path, layout: Layout | None = None) -> None:
        self.gateway = gateway
        self.config_path = config_path
        self.layout = layout or Layout.detect()
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """An update is being downloaded or installed."""
        return self._task is not None and not self._task.done()

    def register(self, registry: CommandRegistry) -> None:
        registry.register("gateway.update", UpdateArgs, self.update, description="Install a new EduGate version "
                          "beside this one and switch to it; rolled back unless healthy within deadline_s.")

    async def update(self, args: UpdateArgs) -> dict[str, Any]:
        try:
            version = wheel_version(Path(args.url.rsplit("/", 1)[-1]).name)
        except UpdateError as exc:
            raise CommandError(str(exc)) from None
        if self.busy:
            raise CommandError("an update is being installed already; wait for its outcome event")
        if journal_path(self.config_path).exists():
            raise CommandError("a change is still on trial on this gateway; wait for its outcome event")
        cmd_id = current_command_id.get() or "unknown"
        self._task = asyncio.create_task(self._install(args, cmd_id, version), name="gateway-update")
        return {"installing": version, "running": __version__, "root": str(self.layout.root),
                "outcome_event": "gateway.updated, gateway.update_rolled_back or gateway.update_failed, "
                                 "data.cmd_id = this command's id"}

    async def _install(self, args: UpdateArgs, cmd_id: str, version: str) -> None:
        layout = self.layout
        previous = layout.running()
        try:
            wheel = await asyncio.to_thread(fetch, args.url, args.sha256, layout.wheels)
            log.info("gateway.update %s: %s downloaded; installing it beside %s", cmd_id, wheel.name, previous)
            venv = await asyncio.to_thread(install, layout, wheel, config=self.config_path.resolve(),
                                           deps=args.deps, index_url=args.index_url, share_from=previous)
            online = [d for d, drv in self.gateway.drivers.items() if drv.health.state == DeviceState.ONLINE]
            trial = Trial.begin(self.config_path, "update", cmd_id, args.deadline_s, online, root=str(layout.root),
                                previous=str(previous), new=str(venv),
                                report={"from_version": __version__, "to_version": version})
            try:
                layout.switch(venv)
            except OSError:
                trial.remove()
                raise
        except (UpdateError, TrialError, OSError) as exc:
            log.error("gateway.update %s failed, nothing changed: %s", cmd_id, exc)
            await self.gateway.emit(Event(GATEWAY_DEVICE, "gateway.update_failed",
                                          {"cmd_id": cmd_id, "version": version, "reason": str(exc)}))
            return
        log.warning("gateway.update %s: version %s installed in %s; restarting on it, rolled back to %s unless "
                    "healthy within %g s", cmd_id, version, venv, previous, args.deadline_s)
        argv = layout.current_argv()
        self.gateway.restart(lambda: reexec(argv))
