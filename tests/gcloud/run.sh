#!/usr/bin/env bash
# Google's own gcloud against `batch-prediction serve`, as a team leaving AI
# Platform would use it: models and versions created with gcloud, jobs
# submitted by model, by version and by model directory (TEXT over JSON
# lines, as gcloud's --data-format text submits them), on an ONNX model and
# a TensorFlow SavedModel; describe, list with a filter and paging, label
# updates, cancel. Every step's output is checked, not only its exit code.
#
# gcloud comes from Debian's google-cloud-cli package (installed with apt
# when missing); its configuration goes under target/gcloud-config, its
# endpoint through CLOUDSDK_API_ENDPOINT_OVERRIDES_ML, its token from a
# file. Without gcloud (or the model runtimes' libraries) it says SKIP and
# exits 0; under CI=true that is a failure.
#
#   bash tests/gcloud/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
here=$PWD

skip() {
  if [ "${CI:-}" = true ]; then echo "FAIL (under CI a skip is a failure): $1"; exit 1; fi
  echo "SKIP: $1"; exit 0
}

if ! command -v gcloud >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing google-cloud-cli with apt..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends google-cloud-cli; } \
      >target/gcloud-apt.log 2>&1 || skip "apt-get install google-cloud-cli failed: $(tail -1 target/gcloud-apt.log)"
  else
    skip "gcloud is not installed (apt-get install google-cloud-cli)"
  fi
fi
ort=$(bash tests/ort/library.sh) || skip "no onnxruntime library: $ort"
tf=$(bash tests/tensorflow/library.sh) || skip "no TensorFlow library: $tf"

cargo build --quiet --all-features --bin batch-prediction
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c "import json, sys; print(json.load(sys.stdin)['target_directory'])")

root=$(mktemp -d)
work=$(mktemp -d)
# The bucket the jobs read and write, mapped into the root: the ONNX iris
# model, the Keras MLP SavedModel, and their instances as JSON lines.
mkdir -p "$root/bucket/models/iris" "$root/bucket/models/mlp" "$root/bucket/models/parse_example" \
  "$root/bucket/in/iris" "$root/bucket/in/mlp" "$root/bucket/in/big" "$root/bucket/in/records"
cp examples/iris/model/model.onnx "$root/bucket/models/iris/"
cp -r tests/data/tensorflow/models/mlp/. "$root/bucket/models/mlp/"
cp -r tests/data/tensorflow/models/parse_example/. "$root/bucket/models/parse_example/"
cp tests/data/tensorflow/examples.tfrecord tests/data/tensorflow/examples.tfrecord.gz "$root/bucket/in/records/"
cp examples/iris/instances.jsonl "$root/bucket/in/iris/"
cp tests/data/tensorflow/examples.jsonl "$root/bucket/in/mlp/"
python3 -c "
import json
with open('$root/bucket/in/big/big.jsonl', 'w') as f:
    for i in range(300000):
        f.write(json.dumps({'key': i, 'x': [1.0, 2.0, 3.0, 4.0]}) + '\n')
"

port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
ORT_DYLIB_PATH=$ort TENSORFLOW_DYLIB_PATH=$tf \
  "$target_dir/debug/batch-prediction" serve --port "$port" --root "$root" 2>"$work/serve.log" &
pid=$!
cleanup() {
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$root" "$work"
}
trap cleanup EXIT
for _ in $(seq 300); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "serve exited:"; cat "$work/serve.log"; exit 1; fi
  sleep 0.1
done

# gcloud's own configuration, under target/; the emulator takes the token
# as the caller's principal.
export CLOUDSDK_CONFIG=$here/target/gcloud-config
mkdir -p "$CLOUDSDK_CONFIG"
echo "user:gcloud-test@example.com" >"$work/token"
export CLOUDSDK_AUTH_ACCESS_TOKEN_FILE=$work/token
export CLOUDSDK_API_ENDPOINT_OVERRIDES_ML=http://127.0.0.1:$port/
export CLOUDSDK_CORE_PROJECT=bp-gcloud-test
export CLOUDSDK_CORE_DISABLE_PROMPTS=1
export CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1

fail() { echo "FAIL: $1"; echo "--- serve log (last 30 lines)"; tail -30 "$work/serve.log"; exit 1; }
# Runs gcloud; its stdout in $out, failing with its stderr when it fails.
g() {
  if ! out=$(gcloud "$@" 2>"$work/gcloud.err"); then
    fail "gcloud $*: $(cat "$work/gcloud.err")"
  fi
}
# Checks a Python expression over the JSON in $out, bound to `j`.
check() {
  echo "$out" | python3 -c "import json, sys; j = json.load(sys.stdin); assert $1, j" ||
    fail "$2"
}
# Waits until job $1 is finished; its JSON in $out.
finished() {
  for _ in $(seq 600); do
    g ai-platform jobs describe "$1" --format json
    if echo "$out" | python3 -c "import json, sys; sys.exit(json.load(sys.stdin)['state'] not in ('SUCCEEDED', 'FAILED', 'CANCELLED'))"; then
      return
    fi
    sleep 0.2
  done
  fail "job $1 did not finish: $out"
}
steps=0
ok() { steps=$((steps + 1)); echo "ok: $1"; }

# Models and versions (gcloud prefixes the host of any other --region).
g ai-platform models create iris --region global --description "ONNX iris" --labels team=ml
g ai-platform models describe iris --region global --format json
check "j['name'] == 'projects/bp-gcloud-test/models/iris' and j['labels'] == {'team': 'ml'} and j['regions'] == ['us-central1']" "models describe"
g ai-platform versions create v1 --model iris --region global --origin gs://bucket/models/iris \
  --framework scikit-learn --runtime-version 2.11 --python-version 3.7
g ai-platform versions create v2 --model iris --region global --origin gs://bucket/models/iris \
  --framework scikit-learn --runtime-version 2.11 --python-version 3.7
g ai-platform versions list --model iris --region global --format json
check "[v['name'].split('/')[-1] for v in j] == ['v1', 'v2'] and [v.get('isDefault', False) for v in j] == [True, False] and j[0]['framework'] == 'SCIKIT_LEARN' and j[0]['deploymentUri'] == 'gs://bucket/models/iris'" "versions list"
g ai-platform versions set-default v2 --model iris --region global
g ai-platform models describe iris --region global --format json
check "j['defaultVersion']['name'].endswith('/versions/v2')" "set-default"
g ai-platform models create mlp --region global
g ai-platform versions create v1 --model mlp --region global --origin gs://bucket/models/mlp \
  --framework tensorflow --runtime-version 2.11 --python-version 3.7
g ai-platform models list --region global --format json
check "sorted(m['name'].split('/')[-1] for m in j) == ['iris', 'mlp']" "models list"
ok "models and versions: create, describe, list, set-default"

# A job naming a model that does not exist is refused, naming it.
if gcloud ai-platform jobs submit prediction nope_1 --model nope --input-paths 'gs://bucket/in/iris/*' \
  --output-path gs://bucket/out/nope_1 --region us-central1 --data-format text >/dev/null 2>"$work/gcloud.err"; then
  fail "a job naming a missing model was accepted"
fi
grep -q "projects/bp-gcloud-test/models/nope" "$work/gcloud.err" || fail "the refusal does not name the model: $(cat "$work/gcloud.err")"
ok "a job naming a missing model is refused"

# Jobs by model (its default version), by version, and by model directory,
# with every other flag of jobs submit prediction.
g ai-platform jobs submit prediction by_model --model iris --input-paths 'gs://bucket/in/iris/*' \
  --output-path gs://bucket/out/by_model --region us-central1 --data-format text --labels team=ml,step=one
g ai-platform jobs submit prediction by_version --model iris --version v1 --input-paths 'gs://bucket/in/iris/*' \
  --output-path gs://bucket/out/by_version --region us-central1 --data-format text --batch-size 8 \
  --max-worker-count 2 --labels team=ml
g ai-platform jobs submit prediction by_dir --model-dir gs://bucket/models/iris --input-paths 'gs://bucket/in/iris/*' \
  --output-path gs://bucket/out/by_dir --region us-central1 --data-format text --runtime-version 2.11 \
  --signature-name serving_default --batch-size 16 --max-worker-count 1 --labels team=other
g ai-platform jobs submit prediction saved_model --model mlp --input-paths 'gs://bucket/in/mlp/*' \
  --output-path gs://bucket/out/saved_model --region us-central1 --data-format text
for job in by_model by_version by_dir; do
  finished "$job"
  check "j['state'] == 'SUCCEEDED' and j['predictionOutput']['predictionCount'] == '30' and j['predictionOutput']['errorCount'] == '1'" "$job: $out"
  lines=$(cat "$root"/bucket/out/$job/prediction.results-* | wc -l)
  [ "$lines" = 30 ] || fail "$job wrote $lines result lines, not 30"
done
finished by_version
check "j['predictionInput']['versionName'] == 'projects/bp-gcloud-test/models/iris/versions/v1' and j['predictionInput']['batchSize'] == '8' and j['predictionInput']['maxWorkerCount'] == '2' and j['predictionInput']['dataFormat'] == 'TEXT'" "by_version's fields"
finished by_dir
check "j['predictionInput']['uri'] == 'gs://bucket/models/iris' and j['predictionInput']['signatureName'] == 'serving_default' and j['predictionInput']['runtimeVersion'] == '2.11'" "by_dir's fields"
head -1 "$root"/bucket/out/by_model/prediction.results-00000-of-00001 | python3 -c "
import json, sys
p = json.loads(sys.stdin.read())
assert p['key'] == 'flower-00' and len(p['probabilities']) == 3 and 'class_id' in p, p
" || fail "by_model's first prediction"
finished saved_model
check "j['state'] == 'SUCCEEDED' and j['predictionOutput']['predictionCount'] == '100' and j['predictionOutput']['errorCount'] == '0'" "saved_model: $out"
python3 - "$root/bucket/out/saved_model" <<'PY' || fail "the SavedModel's predictions are not TensorFlow's"
import glob, json, sys
want = json.load(open("tests/data/tensorflow/models/expected.json"))["mlp"]["predictions"]
got = [json.loads(l) for f in sorted(glob.glob(sys.argv[1] + "/prediction.results-*")) for l in open(f)]
assert len(got) == 100
for i, p in enumerate(got):
    assert p["id"] == i, p
    assert all(abs(a - b) <= 1e-6 for a, b in zip(p["output_0"], want[i])), (p, want[i])
PY
ok "jobs by model, by version, by model directory, and on a SavedModel"

# TFRecord inputs, plain and gzip: serialized tf.train.Examples go to a
# signature that parses them, as they are.
g ai-platform jobs submit prediction records --model-dir gs://bucket/models/parse_example \
  --input-paths gs://bucket/in/records/examples.tfrecord --output-path gs://bucket/out/records \
  --region us-central1 --data-format tf-record
g ai-platform jobs submit prediction records_gz --model-dir gs://bucket/models/parse_example \
  --input-paths gs://bucket/in/records/examples.tfrecord.gz --output-path gs://bucket/out/records_gz \
  --region us-central1 --data-format tf-record-gzip
for job in records records_gz; do
  finished "$job"
  check "j['state'] == 'SUCCEEDED' and j['predictionOutput']['predictionCount'] == '100'" "$job: $out"
done
finished records_gz
check "j['predictionInput']['dataFormat'] == 'TF_RECORD_GZIP'" "records_gz's format"
cmp -s "$root"/bucket/out/records/prediction.results-00000-of-00001 "$root"/bucket/out/records_gz/prediction.results-00000-of-00001 ||
  fail "gzip TFRecords predicted otherwise than plain ones"
ok "jobs over TFRecord and gzip TFRecord files"

# describe, list with a filter, paging and a limit.
g ai-platform jobs list --filter 'labels.team=ml' --format json
check "sorted(x['jobId'] for x in j) == ['by_model', 'by_version']" "list --filter"
g ai-platform jobs list --page-size 1 --limit 3 --format json
check "len(j) == 3" "list --page-size 1 --limit 3"
grep -q "GET /v1/projects/bp-gcloud-test/jobs?.*pageSize=1" "$work/serve.log" || fail "list --page-size did not page"
ok "list with --filter, --page-size and --limit"

# Labels: get, then patch with the etag.
g ai-platform jobs update by_model --update-labels env=dev --remove-labels step
g ai-platform jobs describe by_model --format json
check "j['labels'] == {'team': 'ml', 'env': 'dev'}" "update labels"
ok "update --update-labels --remove-labels"

# Cancel a job while it is queued or running.
g ai-platform jobs submit prediction to_cancel --model-dir gs://bucket/models/mlp --input-paths 'gs://bucket/in/big/*' \
  --output-path gs://bucket/out/to_cancel --region us-central1 --data-format text --batch-size 4 --max-worker-count 1
g ai-platform jobs cancel to_cancel
finished to_cancel
check "j['state'] == 'CANCELLED'" "cancel"
ok "cancel"

# Versions and models deleted as gcloud deletes them (it waits on the operation).
g ai-platform versions delete v1 --model iris --region global
g ai-platform versions list --model iris --region global --format json
check "[v['name'].split('/')[-1] for v in j] == ['v2']" "versions delete"
ok "versions delete"

echo "gcloud: $steps passed, 0 failed"
