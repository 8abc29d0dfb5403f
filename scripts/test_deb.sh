#!/usr/bin/env bash
# The Debian package's tests (slow: builds the package, and the first time debootstraps a bookworm root into
# $EDUGATE_DEB_BASE, default /var/tmp/edugate-bookworm-base). As root (chroot, mount namespaces).
#   bash scripts/test_deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q -p no:cacheprovider -m slow tests/packaging/test_deb.py "$@"
