#!/usr/bin/env bash
# The comparison harness of issue #7: this crate against a bare serde_json
# loop, a Python executor, cat, gzip -dc and (if it installs) tf.data, on the
# same generated files. Arguments go to benches/compare.py (--records N,
# --rounds R, --no-tensorflow, --baseline REV). Needs python3; installs tensorflow-cpu into
# target/compare-venv on first use, and says so if it cannot.
#
# With --cloud first, the cloud storage backends against curl instead
# (benches/compare_cloud.py: --mb M, --records N, --rounds R, --big-gb G),
# on moto and fake-gcs-server started on loopback.
#
# With --models first, the model runtimes instead (benches/compare_models.py:
# --records N, --rounds R): onnxruntime jobs against a bare `ort` loop and
# tract, on the bundled MLP and a 500-tree gradient-boosting model.
#
# With --peers first, what users would run instead (benches/compare_peers.py:
# --records N, --rounds R, --no-ray, --no-beam): a hand-written Python
# script, Ray Data and Apache Beam with onnxruntime, on the same MLP jobs;
# installs them into target/peers-*-venv on first use.
#
# With --remote first, the remote predictor instead (benches/compare_remote.py:
# --records N, --rounds R, --threads T): a job against a model server that
# answers at once, against a bare Rust loop of the same requests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--cloud" ]; then
  shift
  exec python3 benches/compare_cloud.py "$@"
fi
if [ "${1:-}" = "--peers" ]; then
  shift
  exec python3 benches/compare_peers.py "$@"
fi
if [ "${1:-}" = "--remote" ]; then
  shift
  exec python3 benches/compare_remote.py "$@"
fi
if [ "${1:-}" = "--models" ]; then
  shift
  exec python3 benches/compare_models.py "$@"
fi
exec python3 benches/compare.py "$@"
