#!/usr/bin/env bash
# Installs tensorflow-cpu from PyPI into a virtual environment under target/
# (on first use) and prints the path of the C library the wheel ships, for
# the tests of the `tensorflow` feature (and benches/compare.sh --models):
#
#   /…/target/tf-venv/lib/python3.11/site-packages/tensorflow/libtensorflow_cc.so.2
#
# On failure, prints "SKIP: <reason>" and exits 3.
#
#   bash tests/tensorflow/library.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
venv=${TF_VENV:-target/tf-venv}
version=2.21.0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

skip() { echo "SKIP: $1"; exit 3; }

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >"$log/venv.log" 2>&1 || skip "python3 -m venv failed: $(tail -1 "$log/venv.log")"
fi
# The version from the wheel's metadata: importing tensorflow takes seconds.
installed=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('tensorflow-cpu'))" 2>/dev/null)
if [ "$installed" != "$version" ]; then
  bash tests/pip_install.sh "$venv" "$log/pip.log" "tensorflow-cpu==$version" ||
    skip "could not install tensorflow-cpu==$version: $(tail -1 "$log/pip.log")"
fi
lib=$(ls "$venv"/lib/python3*/site-packages/tensorflow/libtensorflow_cc.so.2 2>/dev/null | head -1)
[ -n "$lib" ] || skip "the tensorflow-cpu wheel holds no tensorflow/libtensorflow_cc.so.2"
readlink -f "$lib"
