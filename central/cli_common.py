"""What every central command shares: the ``--config central.yaml`` option, loading it, and logging."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from edugate.central.config import CentralConfig, load_central_config
from edugate.common.yamlconfig import ConfigError, exit_with_problems

T = TypeVar("T")

CentralConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="central.yaml (see config/central.yaml); the options below override its values. "
    "Without it, the defaults shown apply.", show_default=False)]


def central_config_or_exit(path: Path | None) -> CentralConfig:
    """The validated ``central.yaml`` (defaults without one); on problems print them all and exit with code 2."""
    try:
        return load_central_config(path)
    except ConfigError as exc:
        assert path is not None
        exit_with_problems(path, exc)


def given(flag: T | None, from_file: T) -> T:
    """A flag given on the command line wins over the file's value."""
    return from_file if flag is None else flag


def log_level_or_exit(text: str) -> int:
    level = getattr(logging, text.upper(), None)
    if not isinstance(level, int):
        raise typer.BadParameter(f"{text!r}: use DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
    return level


def setup_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("urllib3", "influxdb_client", "aiomqtt", "mqtt"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))
