#!/usr/bin/env bash
# Training on a Slurm cluster as a batch job that survives time limits and pre-emption. The job runs one
# task per node; each runs torchrun for the GPUs of its node (srun gives every node its rank, SLURM_NODEID,
# and the first node of the allocation becomes the rendezvous master).
#
#   bash scripts/slurm_train.sh PARTITION JOB_NAME CONFIG [tools/train.py arguments...]
#
#   NODES=2 GPUS_PER_NODE=8 TIME=2-00:00:00 bash scripts/slurm_train.sh gpu rsa_ssv1_8f configs/ssv1_rsa_8f.yaml
#
# submits the job with sbatch and prints its id; the log is slurm-<job id>.out, appended across requeues.
# SIGNAL_SECONDS before the time limit Slurm sends SIGTERM to this script, which passes it on to training:
# every rank finishes its step, last.pth is written (tools/train.py exits with 143), and the script then
# requeues the job (`scontrol requeue`). Training always runs with --resume auto, so a requeued job
# continues where it stopped; so does one that Slurm pre-empted with SIGTERM.
# Environment: NODES (1), GPUS_PER_NODE (8), CPUS_PER_TASK (8 x GPUS_PER_NODE), TIME (the partition's
# default), SIGNAL_SECONDS (300), MASTER_PORT (29500), SBATCH_ARGS / SRUN_ARGS (extra options) and
# TORCH_ELASTIC_SHUTDOWN_TIMEOUT (120: seconds torchrun lets its workers take to save before killing them).
set -euo pipefail

run_job() {  # inside the allocation: sbatch runs this file as `slurm_train.sh --job ROOT CONFIG [args...]`
  local root="$1" config="$2"; shift 2
  local args stopping=0 rc=0 pid
  args=$(printf ' %q' "$@")
  trap 'stopping=1; echo "[slurm_train] SIGTERM: training saves and stops, then job $SLURM_JOB_ID is requeued"; kill -TERM "$pid" 2>/dev/null || true' TERM
  srun --nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    bash -c "
      set -euo pipefail
      MASTER_ADDR=\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | head -n 1)
      export OMP_NUM_THREADS=\${OMP_NUM_THREADS:-1} TORCH_ELASTIC_SHUTDOWN_TIMEOUT=\${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}
      exec python -m torch.distributed.run --nnodes=\$SLURM_NNODES --node_rank=\$SLURM_NODEID \
        --nproc_per_node=${GPUS_PER_NODE:-8} --master_addr=\$MASTER_ADDR --master_port=${MASTER_PORT:-29500} \
        '$root/tools/train.py' --config '$config' --resume auto$args
    " &
  pid=$!
  while :; do  # a trapped signal interrupts `wait`; keep waiting until srun itself has ended
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  if [[ $stopping -eq 1 ]]; then
    scontrol requeue "$SLURM_JOB_ID" || echo "[slurm_train] could not requeue job $SLURM_JOB_ID" >&2
  fi
  exit "$rc"
}

if [[ "${1:-}" == "--job" ]]; then
  shift
  run_job "$@"
fi
if [[ $# -lt 3 ]]; then
  echo "usage: bash scripts/slurm_train.sh PARTITION JOB_NAME CONFIG [tools/train.py arguments...]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PARTITION="$1"; JOB_NAME="$2"; CONFIG="$3"; shift 3
export GPUS_PER_NODE="${GPUS_PER_NODE:-8}" MASTER_PORT="${MASTER_PORT:-29500}"
NODES="${NODES:-1}"; CPUS_PER_TASK="${CPUS_PER_TASK:-$((8 * GPUS_PER_NODE))}"
SBATCH=(sbatch --parsable -p "$PARTITION" --job-name="$JOB_NAME" --nodes="$NODES" --ntasks-per-node=1
        --gres="gpu:$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --requeue --open-mode=append
        --signal="B:TERM@${SIGNAL_SECONDS:-300}" --output="slurm-%j.out")
if [[ -n "${TIME:-}" ]]; then SBATCH+=(--time="$TIME"); fi
JOB=$("${SBATCH[@]}" ${SBATCH_ARGS:-} "$ROOT/scripts/slurm_train.sh" --job "$ROOT" "$CONFIG" "$@")
echo "submitted job $JOB ($JOB_NAME): log slurm-$JOB.out, checkpoints in the config's work dir"
