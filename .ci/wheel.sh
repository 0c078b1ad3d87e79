#!/usr/bin/env bash
# CI: the package as a user gets it. Builds the sdist and, from it, the wheel (python -m build), checks their
# metadata (twine check --strict), checks that every data file of lucent_inhibit/ is in the wheel, installs the
# wheel into a fresh virtualenv outside the repository (torch==2.14.1 torchvision==0.29.1 first, as the Makefile
# does), runs `pip check` there, and runs `lucent-inhibit demo --quick` from an empty folder: the report's
# index.html must appear. `make test` runs it (make wheel-check).
#
#   .ci/wheel.sh                  # PY (default .venv/bin/python) builds; PYTHON (default python3) makes the venv
#   KEEP=1 .ci/wheel.sh           # keep the temporary folder (its path is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}
PYTHON=${PYTHON:-python3}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lucent-inhibit-wheel.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "wheel check: keeping $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi
case "$TMP" in "$ROOT"/*) echo "wheel check: $TMP is inside the repository" >&2; exit 1;; esac
start=$SECONDS
step() { printf 'wheel check: %s (%ds)\n' "$1" $((SECONDS - start)); }

step "building the sdist and the wheel"
"$PY" -m build --outdir "$TMP/dist" . >"$TMP/build.log" 2>&1 || { tail -n 40 "$TMP/build.log" >&2; exit 1; }
"$PY" -m twine check --strict "$TMP"/dist/*

step "checking the wheel's files"
"$PY" - "$ROOT" "$TMP"/dist/*.whl "$TMP"/dist/*.tar.gz <<'EOF'
import os, sys, tarfile, zipfile
root, wheel, sdist = sys.argv[1:4]
names = set(zipfile.ZipFile(wheel).namelist())
data = sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
              for d, dirs, files in os.walk(os.path.join(root, "lucent_inhibit"))
              if "__pycache__" not in d for f in files if not f.endswith((".py", ".pyc")))
missing = [f for f in data if f not in names]
licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")]
in_sdist = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
problems = ([f"package data missing from the wheel: {missing}"] if missing else []) + \
           ([] if licenses else ["LICENSE missing from the wheel's .dist-info"]) + \
           ([] if "LICENSE" in in_sdist else ["LICENSE missing from the sdist"])
if problems:
    sys.exit("wheel check: " + "; ".join(problems))
print(f"wheel check: {os.path.basename(wheel)}: {len(names)} files, package data {data}, {licenses[0]}")
EOF

step "a fresh virtualenv in $TMP/venv"
"$PYTHON" -m venv "$TMP/venv"
VPIP="$TMP/venv/bin/python -m pip"
$VPIP install -q --upgrade pip
$VPIP install -q torch==2.14.1 torchvision==0.29.1
step "installing the wheel"
$VPIP install -q "$TMP"/dist/*.whl
step "pip check"
$VPIP check

step "lucent-inhibit demo --quick from an empty folder"
mkdir "$TMP/run"
cd "$TMP/run"
demo_start=$SECONDS
"$TMP/venv/bin/lucent-inhibit" demo --quick --out "$TMP/report"
demo_seconds=$((SECONDS - demo_start))
test -s "$TMP/report/index.html" || { echo "wheel check: no $TMP/report/index.html" >&2; exit 1; }
test -z "$(ls -A "$TMP/run")" || { echo "wheel check: the demo wrote into the working folder: $(ls -A "$TMP/run")" >&2; exit 1; }
where=$([ "${KEEP:-0}" = 1 ] && echo "; report at $TMP/report/index.html" || true)
step "passed: demo --quick took ${demo_seconds}s from the installed wheel$where"
