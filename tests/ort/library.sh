#!/usr/bin/env bash
# Installs onnxruntime from PyPI into a virtual environment under target/ (on
# first use) and prints the path of the shared library the wheel ships, for
# the tests of the `ort` feature:
#
#   /…/target/ort-venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1
#
# On failure, prints "SKIP: <reason>" and exits 3.
#
#   bash tests/ort/library.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
venv=${ORT_VENV:-target/ort-venv}
version=1.31.1
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

skip() { echo "SKIP: $1"; exit 3; }

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >"$log/venv.log" 2>&1 || skip "python3 -m venv failed: $(tail -1 "$log/venv.log")"
fi
if ! "$venv/bin/python" -c "import onnxruntime, sys; sys.exit(onnxruntime.__version__ != '$version')" 2>/dev/null; then
  bash tests/pip_install.sh "$venv" "$log/pip.log" "onnxruntime==$version" ||
    skip "could not install onnxruntime==$version: $(tail -1 "$log/pip.log")"
fi
lib=$("$venv/bin/python" -c "import onnxruntime, pathlib; print(next(pathlib.Path(onnxruntime.__file__).parent.glob('capi/libonnxruntime.so.*')).resolve())" 2>"$log/find.log") ||
  skip "the onnxruntime wheel holds no capi/libonnxruntime.so.*: $(tail -1 "$log/find.log")"
echo "$lib"
