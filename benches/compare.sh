#!/usr/bin/env bash
# The comparison harness of issue #7: this crate against a bare serde_json
# loop, a Python executor, cat, gzip -dc and (if it installs) tf.data, on the
# same generated files. Arguments go to benches/compare.py (--records N,
# --rounds R, --no-tensorflow). Needs python3; installs tensorflow-cpu into
# target/compare-venv on first use, and says so if it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 benches/compare.py "$@"
