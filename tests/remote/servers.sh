#!/usr/bin/env bash
# Starts real model servers on loopback for the remote predictor's tests:
# KServe (a kserve.Model serving a scikit-learn classifier over the v1 and v2
# protocols, tests/remote/kserve_server.py) and Seldon MLServer (its
# scikit-learn runtime, over v2), both from PyPI, each installed into its own
# virtual environment under target/ on first use (their pins conflict).
# Trains the model first (tests/remote/train.py). Prints, on success:
#
#   KSERVE=http://127.0.0.1:PORT      (model "iris": v1 and v2)
#   MLSERVER=http://127.0.0.1:PORT    (model "iris", version "v1": v2; "iris_bare" declaring no inputs)
#   DATA=DIR                          (instances.jsonl, expected.jsonl)
#
# and returns while the servers run. They stop when process WATCH (default:
# the caller) exits. On failure, prints "SKIP: <reason>" and exits 3.
#
#   bash tests/remote/servers.sh [WATCH_PID]
set -uo pipefail
cd "$(dirname "$0")/../.."
here=tests/remote
watch=${1:-$PPID}
kserve_venv=${KSERVE_VENV:-target/kserve-venv}
mlserver_venv=${MLSERVER_VENV:-target/mlserver-venv}
work=$(mktemp -d)

skip() { echo "SKIP: $1"; exit 3; }

venv() { # DIR IMPORTS PACKAGES...
  local dir=$1 imports=$2; shift 2
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir" >"$work/venv.log" 2>&1 || skip "python3 -m venv failed: $(tail -1 "$work/venv.log")"
  fi
  if ! "$dir/bin/python" -c "import $imports" 2>/dev/null; then
    bash tests/pip_install.sh "$dir" "$work/pip.log" "$@" ||
      skip "could not install $*: $(tail -1 "$work/pip.log")"
  fi
}
venv "$kserve_venv" "kserve, sklearn, joblib" "kserve==0.21.0" "scikit-learn==1.9.1" "joblib"
venv "$mlserver_venv" "mlserver, mlserver_sklearn" "mlserver==1.7.1" "mlserver-sklearn==1.7.1" "scikit-learn==1.9.1"

"$kserve_venv/bin/python" "$here/train.py" "$work" >"$work/train.log" 2>&1 ||
  skip "training the test model failed: $(tail -1 "$work/train.log")"

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
kserve_port=$(free_port)
mlserver_port=$(free_port)

# MLServer reads its settings and its models' from a directory.
mkdir -p "$work/mlserver/iris"
cp "$work/model.joblib" "$work/mlserver/iris/model.joblib"
cat >"$work/mlserver/settings.json" <<JSON
{"http_port": $mlserver_port, "grpc_port": $(free_port), "metrics_port": $(free_port),
 "host": "127.0.0.1", "parallel_workers": 0, "metrics_endpoint": null}
JSON
cat >"$work/mlserver/iris/model-settings.json" <<JSON
{"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
 "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}],
 "parameters": {"uri": "./model.joblib", "version": "v1"}}
JSON
# The same model declaring no inputs, as many model settings do.
mkdir -p "$work/mlserver/iris_bare"
cp "$work/model.joblib" "$work/mlserver/iris_bare/model.joblib"
cat >"$work/mlserver/iris_bare/model-settings.json" <<JSON
{"name": "iris_bare", "implementation": "mlserver_sklearn.SKLearnModel",
 "parameters": {"uri": "./model.joblib"}}
JSON

# Each server runs beside a watchdog that stops it when WATCH exits.
start() {
  local name=$1; shift
  (
    "$@" >"$work/$name.log" 2>&1 &
    server=$!
    while kill -0 "$watch" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 1; done
    kill "$server" 2>/dev/null
  ) >/dev/null 2>&1 &
}
start kserve "$kserve_venv/bin/python" "$here/kserve_server.py" "$work" "$kserve_port" "$(free_port)"
start mlserver "$mlserver_venv/bin/mlserver" start "$work/mlserver"

for _ in $(seq 600); do
  if curl -sf "http://127.0.0.1:$kserve_port/v2/models/iris/ready" >/dev/null 2>&1 &&
     curl -sf "http://127.0.0.1:$mlserver_port/v2/models/iris/versions/v1/ready" >/dev/null 2>&1 &&
     curl -sf "http://127.0.0.1:$mlserver_port/v2/models/iris_bare/ready" >/dev/null 2>&1; then
    echo "KSERVE=http://127.0.0.1:$kserve_port"
    echo "MLSERVER=http://127.0.0.1:$mlserver_port"
    echo "DATA=$work"
    exit 0
  fi
  sleep 0.1
done
skip "the model servers did not answer within 60 s: $(tail -3 "$work"/kserve.log "$work"/mlserver.log | tr '\n' ' ')"
