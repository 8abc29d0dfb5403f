"""Central's firmware tooling: ``sign`` an image (writes ``<image>.manifest.json``) and ``check`` one as a gateway
would before sending it. Run as ``python -m edugate.firmware_bridge.update.cli``; keys come from ``edugate keygen``.

Exit codes: 0 done / the update may be sent; 1 the check refuses it (the reason is printed); 2 bad usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edugate.firmware_bridge.update.manifest import (
    SignedManifest,
    UpdateRefused,
    check_update,
    load_private_key,
    load_public_key,
    manifest_path,
    sign_image,
)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

app = typer.Typer(name="edugate-firmware", help="Sign and check firmware images for lab kits.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ImageArg = Annotated[Path, typer.Argument(help="The firmware image (.bin).", show_default=False)]
BoardOpt = Annotated[str, typer.Option("--board", help="Board the image is for, as the kit's HELLO names it "
                                       "(e.g. microbit-v2, esp32).", show_default=False)]


@app.command()
def sign(image: ImageArg, board: BoardOpt,
         version: Annotated[str, typer.Option("--version", help="The image's version, dotted numbers (1.4.2).",
                                              show_default=False)],
         key: Annotated[Path, typer.Option("--key", help="Central's private key (PEM, from edugate keygen).",
                                           show_default=False)],
         allow_downgrade: Annotated[bool, typer.Option("--allow-downgrade", help="Let kits running a newer "
                                                       "version install this one.")] = False) -> None:
    """Write IMAGE.manifest.json: board, version, size and SHA-256 of IMAGE, signed with central's key."""
    try:
        data = image.read_bytes()
        signed = sign_image(data, board, version, load_private_key(key), allow_downgrade=allow_downgrade)
    except (OSError, ValueError) as exc:
        typer.echo(f"sign: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except UpdateRefused as exc:
        typer.echo(f"sign: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    out = manifest_path(image)
    out.write_text(signed.to_json(), encoding="utf-8")
    m = signed.manifest
    typer.echo(f"{out}: {m.board} {m.version}, {m.size} bytes, sha256 {m.sha256}"
               f"{', downgrade allowed' if m.allow_downgrade else ''}")


@app.command()
def check(image: ImageArg, board: BoardOpt,
          running: Annotated[str, typer.Option("--running", help="Version the kit runs now.", show_default=False)],
          pubkey: Annotated[Path, typer.Option("--pubkey", help="Central's public key (PEM).", show_default=False)],
          ) -> None:
    """Check IMAGE and its manifest exactly as a gateway does before it sends anything to a kit."""
    try:
        signed = SignedManifest.from_json(manifest_path(image).read_text(encoding="utf-8"))
        data = image.read_bytes()
        key = load_public_key(pubkey)
    except (OSError, ValueError) as exc:
        typer.echo(f"check: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except UpdateRefused as exc:
        typer.echo(f"check: {exc.reason}: {exc}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    try:
        m = check_update(signed, data, key, board=board, running=running)
    except UpdateRefused as exc:
        typer.echo(f"check: refused: {exc.reason}: {exc}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    typer.echo(f"ok: {image.name} may update a {board} from {running} to {m.version}")


if __name__ == "__main__":
    app()
