#!/usr/bin/env bash
# One batch prediction job spread over a Slurm job array of N parts, then merged.
#
#   sbatch --parsable --array=0-3 examples/scale-out/slurm-array.sh JOB.json 4
#   sbatch --dependency=afterany:<array job id> --wrap "batch-prediction run JOB.json --merge"
#
# Array task I runs part I of N: the plan shards k with k % N == I, writing
# their files into the job's outputPath on a shared file system. N is an
# argument because Slurm sets SLURM_ARRAY_TASK_COUNT to the size of each
# submission: a failed part is redone alone with the same N
# (sbatch --array=2 slurm-array.sh JOB.json 4); a finished part run again
# changes nothing.
#
# The merge waits with afterany: a part that failed, then was requeued and
# succeeded leaves an afterok dependency never satisfied (with afterok, add
# --kill-on-invalid-dep=yes). A merge run before every part finished fails,
# naming the shards still to run: redo their parts, then rerun the merge.
# A task requeued because its node died starts again only once the job's
# credential expired (AuthInfo's cred_expire, 120 s by default).
#
# BATCH_PREDICTION names the binary (default: batch-prediction on PATH) and
# BATCH_PREDICTION_ARGS adds flags, e.g. "--shard-bytes 64M"; the merge must
# get the same --shard-bytes. sbatch passes the environment on. No --mem here:
# give one to sbatch (--mem=4G) on clusters that want it.
#SBATCH --job-name=batch-predict
#SBATCH --cpus-per-task=2
set -euo pipefail
usage="usage: sbatch --array=0-(N-1) slurm-array.sh JOB.json N"
job=${1:?$usage}
n=${2:?$usage}
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive number: $n ($usage)" >&2; exit 2; }
[[ -n ${SLURM_ARRAY_TASK_ID:-} ]] || { echo "not an array task ($usage)" >&2; exit 2; }
read -ra args <<<"${BATCH_PREDICTION_ARGS:-}"
exec "${BATCH_PREDICTION:-batch-prediction}" run "$job" --shard "${SLURM_ARRAY_TASK_ID}/${n}" \
  --threads "${SLURM_CPUS_PER_TASK:-2}" ${args[@]+"${args[@]}"}
