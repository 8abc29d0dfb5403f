#!/usr/bin/env bash
# Build the gateway's Debian package: dist/edugate_<version>_<arch>.deb
#   bash scripts/build_deb.sh [OUTDIR]
#
# What it does: builds the project's wheel, makes a venv with Debian's own python3 (/usr/bin/python3, the
# interpreter the package depends on) at the package's path /opt/edugate/venv inside a staging tree, installs
# the wheel with its [gateway] and [audit] extras there, rewrites the staging path out of the venv's scripts, adds the config
# (/etc/edugate/gateway.yaml, a conffile), the hardened unit (packaging/systemd/edugate.service), the docs and
# the maintainer scripts (packaging/debian/), and builds the .deb with dpkg-deb --build --root-owner-group.
#
# Why dpkg-deb and not debhelper: the package bundles a venv of PyPI wheels (pydantic-core, orjson, cryptography...
# are not all in Debian at the versions needed). debhelper/dh-python build from Debian's own python3-* packages
# and forbid network access while building, and dh-virtualenv adds a build dependency for what is a copy and a
# path rewrite. A staged tree and dpkg-deb, which every Debian system has, build the same binary package
# without root, and the maintainer scripts are the same ones debhelper would generate, written out.
#
# The wheels are the build machine's: build on the architecture you install on (arm64 for a Raspberry Pi 4/5
# with 64-bit Raspberry Pi OS, or in an arm64 chroot/container), with Debian bookworm's python3 (3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${1:-$REPO/dist}
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "build_deb: needs Debian's python3 (apt-get install python3 python3-venv)" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "build_deb: needs dpkg-deb (Debian)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/stage
VENV=/opt/edugate/venv

echo "build_deb: building the wheel"
mkdir "$WORK/src"
tar -C "$REPO" --exclude='./.*' --exclude=./build --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ \
  -cf - . | tar -C "$WORK/src" -xf -
"$PY" -m venv "$WORK/buildenv"
"$WORK/buildenv/bin/pip" wheel -q --no-deps --wheel-dir "$WORK/dist" "$WORK/src" > "$WORK/pip.log" 2>&1 \
  || { cat "$WORK/pip.log" >&2; exit 1; }
WHEEL=$(ls "$WORK"/dist/edugate-*.whl)

echo "build_deb: installing $(basename "$WHEEL")[gateway] into $VENV (staged)"
"$PY" -m venv "$STAGE$VENV"
"$STAGE$VENV/bin/pip" install -q --no-compile "$WHEEL[gateway,audit]" > "$WORK/pip.log" 2>&1 \
  || { cat "$WORK/pip.log" >&2; exit 1; }
# the venv was made at the staging path: its scripts' #! lines and pyvenv.cfg must name the installed path
grep -rlI --null "$STAGE$VENV" "$STAGE$VENV/bin" "$STAGE$VENV/pyvenv.cfg" \
  | xargs -0 -r sed -i "s#$STAGE$VENV#$VENV#g"
if grep -rqI "$STAGE" "$STAGE$VENV/bin" "$STAGE$VENV/pyvenv.cfg"; then
  echo "build_deb: the staging path is still in the venv's scripts" >&2; exit 1
fi
find "$STAGE$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +  # postinst compiles on the machine
rm -f "$STAGE$VENV"/lib/python3*/site-packages/edugate-*.dist-info/direct_url.json  # names the build folder
VERSION=$("$STAGE$VENV/bin/python" -c "from importlib.metadata import version; print(version('edugate'))")

echo "build_deb: staging the files"
install -d "$STAGE/usr/bin" "$STAGE/etc/edugate" "$STAGE/lib/systemd/system" "$STAGE/var/lib/edugate" \
  "$STAGE/usr/share/doc/edugate/samples" "$STAGE/DEBIAN"
# /opt/edugate/current names the version in use: the package's venv, or one a signed gateway.update installed
# beside it under /opt/edugate/versions/ (gateway/update/installer.py). Installing or upgrading the package
# points it back at the package's venv: the administrator's choice wins.
ln -s venv "$STAGE/opt/edugate/current"
ln -s /opt/edugate/current/bin/edugate "$STAGE/usr/bin/edugate"
install -m 0640 packaging/debian/gateway.yaml "$STAGE/etc/edugate/gateway.yaml"
install -m 0644 packaging/systemd/edugate.service "$STAGE/lib/systemd/system/edugate.service"
install -m 0644 packaging/debian/copyright "$STAGE/usr/share/doc/edugate/copyright"
install -m 0644 docs/operators.md README.md "$STAGE/usr/share/doc/edugate/"
for sample in drivers/*/sample.yaml; do
  install -m 0644 "$sample" "$STAGE/usr/share/doc/edugate/samples/$(basename "$(dirname "$sample")").yaml"
done
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$STAGE/DEBIAN/"
install -m 0644 packaging/debian/conffiles "$STAGE/DEBIAN/conffiles"
ARCH=$(dpkg --print-architecture)
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION-1/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" packaging/debian/control.in \
  > "$STAGE/DEBIAN/control"

mkdir -p "$OUT"
DEB=$OUT/edugate_${VERSION}-1_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
echo "build_deb: $DEB ($(du -h "$DEB" | cut -f1), installed $((SIZE / 1024)) MB)"
