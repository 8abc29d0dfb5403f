#!/usr/bin/env bash
# Set up everything and run the whole test suite (what CI runs): bash scripts/test.sh [pytest arguments]
# In order: lint (ruff), types (mypy, scripts/typecheck.sh), the suite (pytest), then the install a user gets
# (the wheel in a fresh venv: every example config checked, a 20-second demo; scripts/check_wheel.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
bash scripts/typecheck.sh
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
bash scripts/check_wheel.sh
