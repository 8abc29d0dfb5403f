"""``edugate firstboot CONFIG``: apply a first-boot bundle from the SD card's boot partition (gateway/firstboot.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edugate.gateway.firstboot import DEFAULT_BOOT_DIR, SERVICE_USER, FirstBootError, apply_bundle


def firstboot(
    config: Annotated[Path, typer.Argument(help="Where the gateway's config goes (the unit's: "
                                           "/etc/edugate/gateway.yaml).", show_default=False)],
    boot_dir: Annotated[Path, typer.Option("--boot-dir", help="The bundle on the SD card's boot partition.")]
    = DEFAULT_BOOT_DIR,
    user: Annotated[str, typer.Option("--user", help="Owner of the installed files when run as root ('' leaves "
                                      "them root's).")] = SERVICE_USER,
) -> None:
    """Apply a first-boot bundle (from 'edugate provision batch') found on the boot partition, then remove it
    from there; no bundle: nothing to do. Run as root before the gateway starts. Exit code: 0 applied or
    nothing to do, 1 applied but the bundle could not be removed, 2 refused (nothing installed)."""
    try:
        result = apply_bundle(config, boot_dir, user or None)
    except FirstBootError as exc:
        typer.echo(f"first boot: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if result is None:
        typer.echo(f"first boot: no bundle in {boot_dir}: nothing to do")
        return
    if result.installed:
        typer.echo(f"first boot: {result.school}/{result.gateway}: installed {', '.join(result.installed)}")
    else:
        typer.echo(f"first boot: {result.school}/{result.gateway}: this bundle was applied before (firstboot.json); "
                   "not again")
    if result.warning:
        typer.echo(f"first boot: {result.warning}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"first boot: the bundle is removed from {boot_dir}")


def register(app: typer.Typer) -> None:
    app.command()(firstboot)
