"""``edugate``, the console script: ``edugate run`` loads only the gateway's own commands
(:mod:`edugate.cli.gateway_commands`), any other command the whole command line (:mod:`edugate.cli.main`).

A gateway process lives for months on a 1 GB board: composing central's, provisioning's and the kits' commands
would load cryptography, jinja2 and central's config models into it for nothing (some 10 MB of RSS).
``python -m edugate.cli`` is the same as ``edugate``.
"""

from __future__ import annotations

import sys

LEAN = frozenset({"run"})  # the long-running commands


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in LEAN:
        from edugate.cli.gateway_commands import new_app
        app = new_app()
    else:
        from edugate.cli.main import app
    app()
