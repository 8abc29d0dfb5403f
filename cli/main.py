"""The ``edugate`` command: the gateway's commands (check, schema, run, demo, web-user, pseudonym) and central's
(``edugate.central.cli``), composed into one."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from edugate.central.cli import register as register_central
from edugate.cli.sim import app as sim_app
from edugate.common.provisioning_cli import app as provision_app
from edugate.common.yamlconfig import exit_with_problems
from edugate.firmware_bridge.update.cli import app as kit_app
from edugate.gateway.cli_card_check import card_check
from edugate.gateway.cli_privacy import pseudonym
from edugate.gateway.config import ConfigError, GatewayConfigBase, json_schema, load_config, load_warnings
from edugate.gateway.doctor.cli import register as register_doctor
from edugate.gateway.web.cli import register as register_web_users
from edugate.ml_models.anomaly.cli import app as model_app

app = typer.Typer(
    name="edugate",
    help="EduGate: the open-source edge gateway for smart schools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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


@app.command()
def check(config: ConfigArg) -> None:
    """Validate a config file; print every problem as file:line: path: message."""
    cfg = _load_or_exit(config)
    for warning in load_warnings(config, cfg):
        typer.echo(str(warning), err=True)
    drivers = sorted({d.driver for d in cfg.devices})
    typer.echo(f"{config}: OK: school {cfg.school}, gateway {cfg.gateway}, {len(cfg.devices)} devices "
               f"({', '.join(drivers) or 'none'}), broker {', '.join(cfg.uplink.broker_list)}")


@app.command()
def schema(output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None) -> None:
    """Print the JSON schema of the config file (for editors: yaml-language-server)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@app.command()
def run(config: ConfigArg, log_level: LogLevel = "INFO", library_log_level: LibraryLogLevel = None) -> None:
    """Run the gateway: read devices, keep records in the outbox, forward them to the broker."""
    from edugate.common.privacy import KeyFileError
    from edugate.gateway.downlink.config import DownlinkSetupError
    from edugate.gateway.runtime.gateway import Gateway
    from edugate.gateway.runtime.outbox import OutboxSchemaError

    setup_logging(log_level, library_log_level)
    cfg = _load_or_exit(config)

    async def main() -> None:
        try:
            gw = Gateway(cfg)
        except (KeyFileError, DownlinkSetupError) as exc:
            typer.echo(f"{config}: {exc}", err=True)
            raise typer.Exit(code=2) from None
        gw.install_signal_handlers()
        try:
            await gw.run()
        except OutboxSchemaError as exc:  # an outbox from a newer EduGate (issue 19)
            typer.echo(str(exc), err=True)
            raise typer.Exit(code=2) from None

    asyncio.run(main())


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")]
    = None,
    workdir: Annotated[Path | None, typer.Option(help="Keep logs and data here (default: a temporary folder).")]
    = None,
) -> None:
    """Run a simulated school through the real gateway, a private broker and store, and show what arrives."""
    from edugate.cli.demo import run_demo

    raise typer.Exit(code=run_demo(duration, workdir))


# the gateway's other commands: who may log in to the pages (a gateway's or central's), re-identification
register_web_users(app)
register_doctor(app)  # edugate doctor, edugate migrate (issue 19)
app.command()(pseudonym)
app.command(name="card-check")(card_check)
# central's commands (ingest, central, keygen/sign/send, events, library-report, central-check)
register_central(app)
# the device simulators (edugate sim NAME ...)
app.add_typer(sim_app, name="sim")
app.add_typer(provision_app, name="provision")  # identities for mTLS, the broker's TLS listener and ACL (issue 18)
app.add_typer(kit_app, name="kit", help="Lab kits' firmware: sign an image (central), check it as a gateway "
              "would (docs/firmware-bridge.md).")  # issue 17
app.add_typer(model_app, name="model")  # a school's own anomaly models (issue 14, docs/models.md)

if __name__ == "__main__":
    app()
