#!/usr/bin/env bash
# One batch prediction job spread over a Slurm job array, then merged.
#
#   sbatch --array=0-3 examples/scale-out/slurm-array.sh JOB.json     # 4 parts
#   sbatch --dependency=afterok:<array job id> --wrap "batch-prediction run JOB.json --merge"
#
# Each array task runs part SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT:
# the plan shards k with k % N == index, writing their files into the job's
# outputPath on a shared file system. A failed task can be resubmitted alone
# (sbatch --array=2 …); a finished part run again changes nothing.
#SBATCH --job-name=batch-predict
#SBATCH --cpus-per-task=2
#SBATCH --mem=1G
set -euo pipefail
job=${1:?usage: sbatch --array=0-(N-1) slurm-array.sh JOB.json}
exec batch-prediction run "$job" --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" --threads "${SLURM_CPUS_PER_TASK:-2}"
