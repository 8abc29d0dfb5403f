#!/usr/bin/env bash
# Set up everything and run the demo school: bash scripts/demo.sh [--duration S] [--workdir DIR]
# setup.sh installs every extra, so the demo runs all of it: the models ([ml]), BLE probes ([ble]) and the
# lab kit; from an install without [ml] or [ble] the demo leaves those parts out and says so in one line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/edugate demo "$@"
