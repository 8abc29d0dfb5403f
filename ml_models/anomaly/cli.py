"""``edugate model``: a school's own models. Light to import: the training libraries (the ``[ml-train]`` extra:
scikit-learn, skl2onnx, onnx) are loaded only when a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(name="model", help="On-device models: retrain the anomaly models on a school's own readings.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

EXIT_DATA, EXIT_USAGE = 1, 2


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            typer.echo(f"{option} {item!r}: give NAME=VALUE", err=True)
            raise typer.Exit(EXIT_USAGE)
        out[key.strip()] = value.strip()
    return out


@app.command("train-anomaly")
def train_anomaly(
    device: Annotated[list[str], typer.Option("--device", help="DEVICE=KIND (fridge, fume_hood, projector); "
                                              "repeat for each device to learn from.", show_default=False)],
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Readings as CSV: time,device,<value>...",
                                                  show_default=False)] = None,
    store_url: Annotated[str | None, typer.Option("--store-url", help="The central store (VictoriaMetrics), e.g. "
                                                  "http://127.0.0.1:8428: its /api/v1/export is read.",
                                                  show_default=False)] = None,
    vm_export: Annotated[Path | None, typer.Option("--vm-export", help="A file saved from the store's "
                                                   "/api/v1/export (JSON lines).", show_default=False)] = None,
    school: Annotated[str | None, typer.Option("--school", help="With --store-url: the school's id.",
                                               show_default=False)] = None,
    start: Annotated[str | None, typer.Option("--start", help="With --store-url: from (RFC 3339, Unix time or "
                                              "e.g. 14d ago as -14d); default: the store's retention.",
                                              show_default=False)] = None,
    end: Annotated[str | None, typer.Option("--end", help="With --store-url: until (default: now).",
                                            show_default=False)] = None,
    channel: Annotated[list[str] | None, typer.Option("--channel", help="MODEL_CHANNEL=VALUE_NAME where the "
                                                      "readings name a channel otherwise (e.g. temp=temperature).",
                                                      show_default=False)] = None,
    resample: Annotated[float, typer.Option("--resample", help="Seconds per row the model sees (it was designed "
                                            "for one a minute); 0 keeps the readings as they come.")] = 60.0,
    version: Annotated[str | None, typer.Option("--version", help="Version to write (default: "
                                                "school-YYYY.MM.DD.HHMM, UTC).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder to write anomaly/ into.")] = Path("school-models"),
) -> None:
    """Learn a school's normal equipment behaviour from its readings (central store or CSV) and write a versioned
    anomaly model with its manifest, ready to install on the gateway."""
    sources = [s for s in (csv_file, store_url, vm_export) if s is not None]
    if len(sources) != 1:
        typer.echo("give one source of readings: --csv FILE, --store-url URL (with --school) or --vm-export FILE",
                   err=True)
        raise typer.Exit(EXIT_USAGE)
    if store_url is not None and not school:
        typer.echo("--store-url needs --school (the store holds every school's readings)", err=True)
        raise typer.Exit(EXIT_USAGE)
    devices = _pairs(device, "--device")
    channels = _pairs(channel or [], "--channel")
    try:
        from edugate.ml_models.anomaly import train_school as ts
    except ModuleNotFoundError as exc:
        typer.echo(f"training needs the [ml-train] extra (pip install 'edugate[ml-train]'): {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        if csv_file is not None:
            data, source = ts.read_csv(csv_file), str(csv_file)
        elif vm_export is not None:
            with vm_export.open("rb") as f:
                data, source = ts.read_vm_export(f, str(vm_export)), str(vm_export)
        else:
            assert store_url is not None and school is not None
            kinds = {ts.KINDS[k].channels for k in devices.values() if k in ts.KINDS}
            values = sorted({channels.get(c, c) for chans in kinds for c in chans})
            data = ts.vm_export(store_url, school, sorted(devices), values, start, end)
            source = f"{store_url} (school {school})"
        result = ts.train_school(data, devices, out, channel_map=channels, resample_s=resample, version=version,
                                 source=source)
    except (ts.TrainingDataError, OSError) as exc:
        typer.echo(f"train-anomaly: {exc}", err=True)
        raise typer.Exit(EXIT_DATA) from None
    for line in ts.install_hint(result):
        typer.echo(line)
