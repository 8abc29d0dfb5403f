"""``python -m edugate.gateway.update.smoke CONFIG``: can this installed version run this gateway?

Run by the version being replaced, with the new version's interpreter, before anything is switched
(:func:`edugate.gateway.update.installer.install`): it reads the config as ``edugate run`` does (the services
check their own sections) and imports what ``edugate run`` imports: its command line, the runtime, the driver
of every device. Only the gateway's own modules: a problem in central's commands must not block a gateway's
update. Exit code 0 and one ``OK`` line, or 2 and what failed.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edugate.gateway.update.smoke CONFIG", file=sys.stderr)
        return 2
    path = Path(argv[0])
    from edugate.contract import __version__
    from edugate.gateway.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"edugate {__version__} cannot read the config:\n{exc}", file=sys.stderr)
        return 2
    from edugate.drivers.registry import driver_class
    from edugate.gateway.runtime.gateway import Gateway  # noqa: F401

    # the command line `edugate run` loads (cli/ sits above gateway/: named, not imported, by this module)
    importlib.import_module("edugate.cli.gateway_commands")
    for dev in cfg.devices:
        driver_class(dev.driver)
    print(f"{path}: OK for edugate {__version__}: {len(cfg.devices)} devices")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
