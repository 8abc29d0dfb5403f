"""The ``edugate`` command."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from edugate.gateway.config import ConfigError, json_schema, load_config

app = typer.Typer(
    name="edugate",
    help="EduGate: the open-source edge gateway for smart schools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="The gateway's YAML config file.", show_default=False)]
LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")]


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    root = logging.getLogger().level
    # The drivers report device trouble once, clearly; the libraries' own per-retry lines are noise.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if root <= logging.DEBUG else logging.CRITICAL)
    for noisy in ("aiomqtt", "mqtt"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root))


def _load_or_exit(path: Path):
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        typer.echo(f"{path}: {len(exc.problems)} problem(s); nothing was started", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def check(config: ConfigArg) -> None:
    """Validate a config file; print every problem as file:line: path: message."""
    cfg = _load_or_exit(config)
    drivers = sorted({d.driver for d in cfg.devices})
    typer.echo(f"{config}: OK: school {cfg.school}, gateway {cfg.gateway}, {len(cfg.devices)} devices "
               f"({', '.join(drivers) or 'none'}), broker {cfg.uplink.host}:{cfg.uplink.port}")


@app.command()
def schema(output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None) -> None:
    """Print the JSON schema of the config file (for editors: yaml-language-server)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@app.command()
def run(config: ConfigArg, log_level: LogLevel = "INFO") -> None:
    """Run the gateway: read devices, keep records in the outbox, forward them to the broker."""
    from edugate.common.privacy import KeyFileError
    from edugate.gateway.downlink.config import DownlinkSetupError
    from edugate.gateway.runtime.gateway import Gateway

    setup_logging(log_level)
    cfg = _load_or_exit(config)

    async def main() -> None:
        try:
            gw = Gateway(cfg)
        except (KeyFileError, DownlinkSetupError) as exc:
            typer.echo(f"{config}: {exc}", err=True)
            raise typer.Exit(code=2) from None
        gw.install_signal_handlers()
        await gw.run()

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


def _register_optional() -> None:
    """Commands that live in their own modules."""
    try:
        from edugate.central.cli_ingest import ingest
    except ImportError:  # pragma: no cover - during development only
        return
    app.command(help="Central ingest: broker -> VictoriaMetrics (shared subscription worker).")(ingest)
    from edugate.central.cli_events import events
    from edugate.central.command_tools import register as register_command_tools
    from edugate.gateway.cli_privacy import pseudonym

    register_command_tools(app)
    from edugate.gateway.web.cli import register as register_web  # web-user, central (issue 5)

    register_web(app)
    app.command()(pseudonym)
    app.command()(events)
    from edugate.central.library_report import library_report

    app.command(name="library-report")(library_report)


_register_optional()

if __name__ == "__main__":
    app()
