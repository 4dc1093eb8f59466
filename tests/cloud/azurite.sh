#!/usr/bin/env bash
# Starts Azurite, Azure Blob Storage's emulator (npm's `azurite`, on
# Node.js), on loopback for the cloud storage tests. Installs it under
# target/ on first use. Prints, on success:
#
#   AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:PORT
#   AZURITE_ACCOUNT_URL=http://127.0.0.1:PORT/devstoreaccount1   (the development account)
#   BUCKET=bp-test                                               (a container, made)
#
# and returns while it runs. It stops when process WATCH (default: the
# caller) exits. On failure, prints "SKIP: <reason>" and exits 3.
#
#   bash tests/cloud/azurite.sh [WATCH_PID]
set -uo pipefail
cd "$(dirname "$0")/../.."
watch=${1:-$PPID}
dir=${AZURITE_DIR:-target/azurite}
# 3.35.0: later releases need Node.js 21 or newer.
version=3.35.0
container=bp-test
account=devstoreaccount1
log=$(mktemp -d)

skip() { echo "SKIP: $1"; exit 3; }

command -v node >/dev/null 2>&1 || skip "node is not installed (Azurite runs on Node.js)"
command -v npm >/dev/null 2>&1 || skip "npm is not installed (Azurite comes from the npm registry)"
for tool in curl flock python3; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed"
done
bin="$dir/node_modules/.bin/azurite-blob"
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  (
    # One install at a time: several test threads may start it at once.
    flock 9
    [ -x "$bin" ] || for _ in 1 2; do
      npm install --no-audit --no-fund --prefix "$dir" "azurite@$version" >"$log/npm.log" 2>&1 && break
    done
  ) 9>"$dir.lock"
  [ -x "$bin" ] || skip "could not install azurite@$version from npm: $(tail -1 "$log/npm.log" 2>/dev/null)"
fi

# Each try takes a free port; another server may take it first, so a try
# counts only once this Azurite itself says it listens.
started=
for _ in 1 2 3; do
  port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])") ||
    skip "python3 cannot find a free port"
  : >"$log/azurite.log"
  "$bin" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence --silent --disableTelemetry \
    >"$log/azurite.log" 2>&1 &
  server=$!
  for _ in $(seq 300); do
    kill -0 "$server" 2>/dev/null || break
    if grep -q "successfully listens" "$log/azurite.log"; then
      started=1
      break 2
    fi
    sleep 0.1
  done
  kill "$server" 2>/dev/null
done
[ -n "$started" ] || skip "Azurite did not start: $(tail -2 "$log/azurite.log" | tr '\n' ' ')"
# It stops when WATCH exits.
(
  while kill -0 "$watch" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 1; done
  kill "$server" 2>/dev/null
) >/dev/null 2>&1 &

url="http://127.0.0.1:$port"
# The tests' container, made with a request signed by the development
# account's published key (Shared Key authorization).
python3 - "$url" "$account" "$container" <<'PY' >"$log/container.log" 2>&1 || skip "cannot create the Azure container: $(tail -1 "$log/container.log")"
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
url, account, container = sys.argv[1:]
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
resource = f"/{account}/{account}/{container}\nrestype:container"
# VERB, then eleven standard headers, of which only Content-Type is sent.
to_sign = "PUT\n" + "\n" * 4 + "application/octet-stream\n" + "\n" * 6 + canonical_headers + resource
signature = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
request = urllib.request.Request(f"{url}/{account}/{container}?restype=container", method="PUT", data=b"",
                                 headers={**headers, "Content-Type": "application/octet-stream",
                                          "Authorization": f"SharedKey {account}:{signature}"})
try:
    urllib.request.urlopen(request).read()
except urllib.error.HTTPError as e:
    sys.exit(f"{e.code} {e.read()[:300]!r}")
PY
echo "AZURITE_BLOB_STORAGE_URL=$url"
echo "AZURITE_ACCOUNT_URL=$url/$account"
echo "BUCKET=$container"
rm -rf "$log"
exit 0
