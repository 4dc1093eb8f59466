#!/usr/bin/env bash
# Installs packages into a test virtual environment under target/, one
# install at a time: the test binaries start their servers from several
# threads at once, and concurrent pip runs share (and can corrupt) pip's
# cache. Tries twice. Output goes to LOG; exits non-zero on failure.
#
#   bash tests/pip_install.sh VENV LOG PACKAGE...
set -uo pipefail
venv=$1 log=$2
shift 2
cd "$(dirname "$0")/.."
mkdir -p target
exec 9>target/.pip-install.lock
flock 9
for _ in 1 2; do
  "$venv/bin/pip" install --quiet "$@" >"$log" 2>&1 && exit 0
done
exit 1
