#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 300) with libFuzzer on
# stable Rust (cargo fuzz -s none: no sanitizer, debug assertions on), seeded
# with the test fixtures, and prints each target's exec count.
# A crash is saved under fuzz/artifacts/TARGET/; turn it into a test in
# tests/integration/fuzz_regressions.rs with the input in tests/data/fuzz/.
#   bash fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(json_lines text_lines tfrecord tfrecord_gzip job_json rest json_fast_path)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

mkdir -p fuzz/corpus/{json_lines,text_lines,tfrecord,tfrecord_gzip,job_json,rest,json_fast_path}
cp tests/data/tensorflow/examples.jsonl fuzz/corpus/json_lines/
cp tests/data/tensorflow/examples.jsonl fuzz/corpus/text_lines/
cp tests/data/tensorflow/examples.jsonl fuzz/corpus/json_fast_path/
cp tests/data/tensorflow/examples.tfrecord fuzz/corpus/tfrecord/
cp tests/data/tensorflow/examples.tfrecord.gz fuzz/corpus/tfrecord_gzip/
cp examples/sample/job.json fuzz/corpus/job_json/
printf '\001/v1/projects/fuzz-proj/jobs?alt=json\nBearer user:a@example.com\n%s' "$(cat examples/sample/job.json)" > fuzz/corpus/rest/create
printf '\000/v1/projects/fuzz-proj/jobs?filter=state%%3DQUEUED&pageSize=1&fields=jobs(jobId)\n\n' > fuzz/corpus/rest/list
printf '\002/v1/projects/fuzz-proj/jobs/j1?update_mask=labels\n\n{"labels": {"a": "b"}}' > fuzz/corpus/rest/patch
printf '\001/v1/projects/fuzz-proj/jobs\n\n{"jobId": "j2", "predictionInput": {"dataFormat": "JSON", "inputPaths": ["gs://b/in"], "outputPath": "gs://b/o2", "region": "r", "uri": "gs://b/m"}}\n--\n\002/v1/projects/fuzz-proj/jobs/j2?updateMask=labels\n\n{"labels": {"x": "y"}}\n--\n\000/v1/projects/fuzz-proj/jobs?filter=labels.x%%3Dy\n\n\n--\n\001/v1/projects/fuzz-proj/jobs/j2:cancel\n\n' > fuzz/corpus/rest/sequence
for f in tests/data/fuzz/*; do [ -f "$f" ] && cp "$f" "fuzz/corpus/$(basename "$f" | cut -d- -f1)/" 2>/dev/null || true; done

status=0
for t in "${targets[@]}"; do
  log=$(mktemp)
  if cargo fuzz run -s none "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH; status=1
    grep -E "panicked|ERROR|artifact" "$log" | head -5
  fi
  execs=$(grep -oP 'stat::number_of_executed_units: \K[0-9]+' "$log" || echo "?")
  cov=$(grep -oP '^#[0-9]+\s+DONE\s+cov: \K[0-9]+' "$log" || echo "?")
  echo "$t: $result, $execs execs in ${seconds}s, coverage $cov edges"
  rm -f "$log"
done
exit $status
