#!/usr/bin/env bash
# Type-check the package with mypy (settings: [tool.mypy] in pyproject.toml): bash scripts/typecheck.sh
#
# The repository's top-level folders install as edugate.<folder> (setup.py's package_dir), a mapping mypy
# cannot follow from the source tree by itself: it would see `gateway/` as a top-level module `gateway`, and
# the editable install's import hook is invisible to it. So mypy reads a throwaway tree of symlinks,
# <temporary folder>/edugate/<folder> -> <repository>/<folder>, whose paths are the import names; its messages
# are printed with the repository's paths. The tree is made anew for each run (two runs at once do not meet)
# and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-$REPO/.venv/bin/python}

folders=$("$PY" -c 'import ast
tree = ast.parse(open("setup.py").read())
[value] = [n.value for n in tree.body if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "FOLDERS" for t in n.targets)]
print(" ".join(ast.literal_eval(value)))')

TREE=$(mktemp -d)
trap 'rm -rf "$TREE"' EXIT
mkdir "$TREE/edugate"
: > "$TREE/edugate/__init__.py"
for folder in $folders; do
  ln -s "$REPO/$folder" "$TREE/edugate/$folder"
done

cd "$TREE"
status=0
"$PY" -m mypy --config-file "$REPO/pyproject.toml" --cache-dir "$REPO/.mypy_cache" -p edugate 2>&1 \
  | sed -e 's#^edugate/##' || status=$?
# The wire contract and the driver contract once more with mypy --strict itself (issue 11), so that they stay
# strict even if a flag is dropped from their override in pyproject.toml. Its own cache: other flags.
"$PY" -m mypy --strict --config-file "$REPO/pyproject.toml" --cache-dir "$REPO/.mypy_cache/strict" \
  -p edugate.contract -m edugate.drivers.base -m edugate.drivers.registry 2>&1 \
  | { grep -v '^[^ ]*pyproject.toml: note: unused section' || true; } | sed -e 's#^edugate/##' || status=$?
exit "$status"
