"""``edugate sim NAME [OPTIONS]``: the device simulators, run by the installed ``edugate`` command.

Each subcommand runs one simulator's own ``main`` with the rest of the command line (``edugate sim em4100
--help`` shows its options), so the simulators need no ``python -m`` with the right interpreter: whichever
``edugate`` is on the PATH (``.venv/bin/edugate`` in a source checkout) has the package and its libraries.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

SIMULATORS: dict[str, tuple[str, str]] = {
    "ble-probes": ("ble_probes", "BLE lab probes (BTHome, ATC/PVVX thermometers) advertising on a simulated air."),
    "camera": ("camera", "A video for the camera driver (pedestrians or an empty classroom; needs the [ml] extra)."),
    "display-serial": ("display_serial", "RS-232 panels and projectors (LG, Epson ESC/VP21, BenQ) on a "
                                         "pseudo-terminal."),
    "em4100": ("em4100", "A 125 kHz EM4100 card reader (RDM6300-style) on a pseudo-terminal."),
    "gps-nmea": ("gps_nmea", "A GPS receiver on a school bus: NMEA 0183 sentences on a pseudo-terminal."),
    "modbus": ("modbus", "Modbus lab sensors and meters: a real pymodbus server, TCP or RTU on a pseudo-terminal."),
    "pjlink": ("pjlink", "A PJLink projector or interactive display (TCP, class 1 or 2)."),
    "pn532": ("pn532", "A PN532 NFC reader (ISO 14443 A) on a pseudo-terminal."),
    "sip2": ("sip2", "A SIP2 library system (the ACS) for the library gates and self-check stations."),
    "station": ("station", "A library gate or self-check station on a pseudo-terminal."),
    "thermometer": ("thermometer", "A serial line thermometer printing T=23.45 lines on a pseudo-terminal."),
}
"""Command name -> (module under ``edugate.simulators``, one line of help)."""

app = typer.Typer(name="sim", no_args_is_help=True, add_completion=False,
                  help="Run a device simulator (its options: edugate sim NAME --help).")

_PASS_THROUGH: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True,
                                 "help_option_names": []}  # --help goes to the simulator


def run_simulator(name: str, args: list[str]) -> int:
    """Run simulator ``name``'s ``main`` with ``args`` as its command line; its exit code."""
    module = importlib.import_module(f"edugate.simulators.{SIMULATORS[name][0]}")
    saved = sys.argv
    sys.argv = [f"edugate sim {name}", *args]  # every simulator's argparse reads sys.argv when given no argv
    try:
        code = module.main()
    finally:
        sys.argv = saved
    return code if isinstance(code, int) else 0


def _command(name: str) -> None:
    def simulator(ctx: typer.Context) -> None:
        raise typer.Exit(code=run_simulator(name, list(ctx.args)))

    simulator.__doc__ = SIMULATORS[name][1]
    app.command(name=name, context_settings=_PASS_THROUGH)(simulator)


for _name in SIMULATORS:
    _command(_name)
