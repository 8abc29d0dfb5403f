#!/usr/bin/env bash
# Set up everything and run the demo school: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/edugate demo "$@"
