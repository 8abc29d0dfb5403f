"""The gateway's own commands: ``check``, ``schema``, ``run`` and ``demo``.

Everything an ``edugate run`` process loads for its command line is here: a gateway runs for months, so the
other commands (central's, provisioning, the kits' firmware, the models' training, the simulators) and their
libraries (cryptography, jinja2...) are composed only by :mod:`edugate.cli.main`, which ``edugate`` loads for
any other command (:mod:`edugate.cli.entry`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from edugate.common.yamlconfig import exit_with_problems
from edugate.gateway.config import ConfigError, GatewayConfigBase, json_schema, load_config, load_warnings


def new_app() -> typer.Typer:
    """The ``edugate`` command with the gateway's own commands; :mod:`edugate.cli.main` adds the rest."""
    app = typer.Typer(
        name="edugate",
        help="EduGate: the open-source edge gateway for smart schools.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for command in (check, schema, run, demo):
        app.command()(command)
    return app


ConfigArg = Annotated[Path, typer.Argument(help="The gateway's YAML config file.", show_default=False)]
LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (EduGate's own log).")]
LibraryLogLevel = Annotated[str | None, typer.Option(
    "--library-log-level", help="The log level of third-party libraries (pymodbus, the MQTT client, the web "
    "server...): by default INFO, or --log-level if that is higher. DEBUG shows e.g. every Modbus frame.")]


def setup_logging(level: str, library_level: str | None = None) -> None:
    """EduGate's loggers (``edugate.*``) at ``level``; third-party libraries at ``library_level``, by default
    INFO (or ``level`` if higher), so that ``--log-level DEBUG`` is not drowned in pymodbus's wire dumps."""
    ours = getattr(logging, level.upper(), logging.INFO)
    libraries = getattr(logging, library_level.upper(), logging.INFO) if library_level else max(logging.INFO, ours)
    logging.basicConfig(
        level=libraries,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger().setLevel(libraries)
    logging.getLogger("edugate").setLevel(ours)
    logging.getLogger("__main__").setLevel(ours)
    # The drivers report device trouble once, clearly; the libraries' own per-retry lines are noise.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if libraries <= logging.DEBUG else logging.CRITICAL)
    for noisy in ("aiomqtt", "mqtt"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, libraries))


def _load_or_exit(path: Path) -> GatewayConfigBase:
    try:
        return load_config(path)
    except ConfigError as exc:
        exit_with_problems(path, exc)


class UnusableFile(Exception):
    """A file the config names cannot be used; the message says which option, which file and why."""


def password_file_problem(cfg: GatewayConfigBase) -> str | None:
    """Why ``uplink.password_file`` cannot be used (missing, unreadable, not UTF-8 text), or None. ``run`` checks
    it before starting: the uplink would otherwise retry it every second, each time with a traceback."""
    from edugate.common.mqtt import PasswordFileError, read_password_file

    path = cfg.uplink.password_file
    if path is None:
        return None
    try:
        read_password_file(path, "uplink.password_file")
    except PasswordFileError as exc:
        return str(exc)
    return None


def check(config: ConfigArg) -> None:
    """Validate a config file; print every problem as file:line: path: message."""
    cfg = _load_or_exit(config)
    for warning in load_warnings(config, cfg):
        typer.echo(str(warning), err=True)
    drivers = sorted({d.driver for d in cfg.devices})
    typer.echo(f"{config}: OK: school {cfg.school}, gateway {cfg.gateway}, {len(cfg.devices)} devices "
               f"({', '.join(drivers) or 'none'}), broker {', '.join(cfg.uplink.broker_list)}")


def schema(output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None) -> None:
    """Print the JSON schema of the config file (for editors: yaml-language-server)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


def run(config: ConfigArg, log_level: LogLevel = "INFO", library_log_level: LibraryLogLevel = None) -> None:
    """Run the gateway: read devices, keep records in the outbox, forward them to the broker."""
    from edugate.common.privacy import KeyFileError
    from edugate.gateway.downlink.config import DownlinkSetupError
    from edugate.gateway.runtime.gateway import Gateway
    from edugate.gateway.runtime.outbox import OutboxSchemaError
    from edugate.gateway.update.trial import Trial, TrialError

    setup_logging(log_level, library_log_level)
    try:  # a remote config.apply or gateway.update in progress: this start runs its trial (issue 18, 19)
        trial = Trial.resume(config)
    except TrialError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    cfg = _load_or_exit(config)
    if cfg.syslog is not None:  # security events to the sector's monitoring, RFC 5424 (issue 18)
        from edugate.common.syslog5424 import install_syslog

        install_syslog(cfg.syslog)

    async def main() -> Gateway:
        try:
            if problem := password_file_problem(cfg):
                raise UnusableFile(problem)
            gw = Gateway(cfg, config_path=config, trial=trial)
        except (KeyFileError, DownlinkSetupError, UnusableFile) as exc:
            if trial is not None and trial.phase == "trial":
                trial.undo(f"the gateway cannot start: {exc}")  # restores the previous state, restarts
            typer.echo(f"{config}: {exc}", err=True)
            raise typer.Exit(code=2) from None
        gw.install_signal_handlers()
        try:
            await gw.run()
        except OutboxSchemaError as exc:  # an outbox from a newer EduGate (issue 19)
            typer.echo(str(exc), err=True)
            raise typer.Exit(code=2) from None
        return gw

    gateway = asyncio.run(main())
    if gateway.after_stop is not None:  # restart on a new config or version, or roll back (never returns)
        gateway.after_stop()


def demo(
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")]
    = None,
    workdir: Annotated[Path | None, typer.Option(help="Keep logs and data here (default: a temporary folder).")]
    = None,
) -> None:
    """Run a simulated school through the real gateway, a private broker and store, and show what arrives."""
    from edugate.cli.demo import run_demo

    raise typer.Exit(code=run_demo(duration, workdir))
