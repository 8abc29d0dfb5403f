#!/usr/bin/env bash
# Vendor the web pages' front-end library into the package (run by a developer, not at install or run time).
#   bash scripts/vendor_assets.sh
# The files land in gateway/web/static/vendor/ and are committed with their licence: the pages never load
# anything from a CDN, so they work on a school LAN with no Internet. Bump the pinned version here, run
# this script, look at the pages (pytest tests/web) and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."

UPLOT_VERSION=1.6.32   # https://github.com/leeoniya/uPlot (MIT)
DEST=gateway/web/static/vendor

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@${UPLOT_VERSION}" >/dev/null)
tar -xzf "$tmp"/uplot-"${UPLOT_VERSION}".tgz -C "$tmp"
mkdir -p "$DEST"
cp "$tmp/package/dist/uPlot.iife.min.js" "$DEST/uPlot.iife.min.js"
cp "$tmp/package/dist/uPlot.min.css" "$DEST/uPlot.min.css"
cp "$tmp/package/LICENSE" "$DEST/LICENSE-uPlot"
echo "uplot ${UPLOT_VERSION}" > "$DEST/VERSIONS"
sha256sum "$DEST"/uPlot.* | sed "s|$DEST/||" >> "$DEST/VERSIONS"
echo "vendored uPlot ${UPLOT_VERSION} into $DEST"
