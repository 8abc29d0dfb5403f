#!/usr/bin/env bash
# The install a user gets: build the wheel once, install it into a fresh venv (.venv-wheel/) with the
# gateway and central extras, then, from a folder outside the repository (so nothing is imported from the
# checkout), validate every example config and run a 20-second demo. Called by scripts/test.sh.
#   bash scripts/check_wheel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "check_wheel: building the wheel"
# from a copy: setuptools leaves build/ (whose stale files would ship in later wheels) where it builds
mkdir "$WORK/src"
tar -C "$REPO" --exclude='./.*' --exclude=./build --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ \
  -cf - . | tar -C "$WORK/src" -xf -
"$REPO/.venv/bin/pip" wheel -q --no-deps --wheel-dir "$WORK/dist" "$WORK/src" > "$WORK/pip.log" 2>&1 \
  || { cat "$WORK/pip.log" >&2; exit 1; }
WHEEL=$(ls "$WORK"/dist/edugate-*.whl)

echo "check_wheel: installing $(basename "$WHEEL")[gateway,central] into a fresh .venv-wheel"
"$PY" -m venv --clear "$REPO/.venv-wheel"
VENV=$REPO/.venv-wheel
"$VENV/bin/pip" install -q "$WHEEL[gateway,central]" > "$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; exit 1; }

cd "$WORK"  # outside the repository from here on: only the installed package can be imported

# 1. the package comes from the venv, it put nothing but edugate/ and its dist-info at the top of site-packages,
#    and every file of the package folders (code, profiles, samples, templates, models) is in it
"$VENV/bin/python" - "$VENV" "$WORK/src" <<'EOF'
import ast
import sys
from importlib.metadata import distribution
from pathlib import Path

import edugate

venv = Path(sys.argv[1]).resolve()
where = Path(edugate.__path__[0]).resolve()
assert venv in where.parents, f"edugate imported from {where}, not from {venv}"
dist = distribution("edugate")
top = {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}  # ../../../bin/edugate is the script
expected = {"edugate", f"edugate-{dist.version}.dist-info"}
assert top == expected, f"the wheel installs {sorted(top - expected)} at the top of site-packages (only {sorted(expected)})"
print(f"check_wheel: site-packages gets only {', '.join(sorted(top))}")

src = Path(sys.argv[2])
setup = ast.parse((src / "setup.py").read_text())
[folders] = [ast.literal_eval(n.value) for n in setup.body if isinstance(n, ast.Assign)
             and any(getattr(t, "id", "") == "FOLDERS" for t in n.targets)]
installed = {str(f) for f in dist.files or []}


def shipped(path: Path) -> bool:
    """Files that belong in the wheel: all but caches and hidden files."""
    rel = path.relative_to(src)
    return path.is_file() and not any(part == "__pycache__" or part.startswith(".") for part in rel.parts)


missing = sorted(name for folder in folders for p in (src / folder).rglob("*")
                 if shipped(p) and (name := f"edugate/{p.relative_to(src)}") not in installed)
assert not missing, f"{len(missing)} file(s) of the package folders are not in the wheel: {missing[:20]}"
print(f"check_wheel: every file of {', '.join(folders)} is in the wheel")
EOF

# 2. every example config validates with the installed package (its profiles and data files are in the wheel):
#    the gateways' with `edugate check`, central's (central*.yaml) with `edugate central-check`
shopt -s nullglob
configs=("$REPO"/config/*.yaml "$REPO"/cli/demo-school.yaml "$REPO"/config/samples/*.yaml "$REPO"/drivers/*/sample.yaml
         "$REPO"/packaging/debian/gateway.yaml)  # the last: the Debian package's default config
[ ${#configs[@]} -gt 0 ] || { echo "check_wheel: no example configs found" >&2; exit 1; }
for config in "${configs[@]}"; do
  case "$(basename "$config")" in
    central*.yaml) "$VENV/bin/edugate" central-check "$config" ;;
    *) "$VENV/bin/edugate" check "$config" ;;
  esac
done
echo "check_wheel: ${#configs[@]} example configs valid"

# 3. the demo school runs end to end from the installed package and exits cleanly
"$VENV/bin/edugate" demo --duration 20 --workdir "$WORK/demo" > "$WORK/demo.out" 2>&1 || {
  status=$?; tail -n 60 "$WORK/demo.out" >&2; echo "check_wheel: the demo failed (exit $status)" >&2; exit 1; }
grep -q "gw-main: online" "$WORK/demo.out" || {
  tail -n 60 "$WORK/demo.out" >&2; echo "check_wheel: the demo ran but central never saw gw-main online" >&2; exit 1; }
echo "check_wheel: the 20-second demo ran from the wheel"

# 4. a gateway installs only [gateway]: without central's libraries, its command still starts and validates
"$PY" -m venv --clear "$REPO/.venv-wheel-gateway"
GW=$REPO/.venv-wheel-gateway
"$GW/bin/pip" install -q "$WHEEL[gateway]" > "$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; exit 1; }
for module in influxdb_client croniter openpyxl psycopg nats aio_pika; do
  if "$GW/bin/python" -c "import $module" 2>/dev/null; then
    echo "check_wheel: edugate[gateway] installed $module, a central-only library" >&2; exit 1
  fi
done
"$GW/bin/edugate" check "$REPO/cli/demo-school.yaml"
echo "check_wheel: edugate[gateway] alone installs without central's libraries and validates a config"

# 5. a central server installs only [central]: without the gateway's device libraries, central's command starts
#    and validates central.yaml
"$PY" -m venv "$WORK/venv-central"  # a throwaway: removed with the work folder
CE=$WORK/venv-central
"$CE/bin/pip" install -q "$WHEEL[central]" > "$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; exit 1; }
for module in serial pymodbus pynmea2 cobs; do
  if "$CE/bin/python" -c "import $module" 2>/dev/null; then
    echo "check_wheel: edugate[central] installed $module, a gateway-only library" >&2; exit 1
  fi
done
"$CE/bin/edugate" central-check "$REPO/config/central.yaml"
echo "check_wheel: edugate[central] alone installs without the gateway's device libraries and validates central.yaml"
