#!/usr/bin/env bash
# Training on a Slurm cluster: one task per node, each runs torchrun for the GPUs of its node. srun gives
# every node its rank (SLURM_NODEID) and the first node of the allocation becomes the rendezvous master.
#
#   bash scripts/slurm_train.sh PARTITION JOB_NAME CONFIG [tools/train.py arguments...]
#
#   NODES=2 GPUS_PER_NODE=8 bash scripts/slurm_train.sh gpu rsa_ssv1_8f configs/ssv1_rsa_8f.yaml
#
# Runs with --resume auto, so a requeued or restarted job continues from its last checkpoint. Environment:
# NODES (1), GPUS_PER_NODE (8), CPUS_PER_TASK (8 x GPUS_PER_NODE), MASTER_PORT (29500), SRUN_ARGS (extra).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: bash scripts/slurm_train.sh PARTITION JOB_NAME CONFIG [tools/train.py arguments...]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PARTITION="$1"; JOB_NAME="$2"; CONFIG="$3"; shift 3
NODES="${NODES:-1}"; GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
CPUS_PER_TASK="${CPUS_PER_TASK:-$((8 * GPUS_PER_NODE))}"; MASTER_PORT="${MASTER_PORT:-29500}"
ARGS=$(printf ' %q' "$@")

# Inside the allocation, on every node: the master is the first host of the job's node list.
srun -p "$PARTITION" --job-name="$JOB_NAME" --nodes="$NODES" --ntasks="$NODES" --ntasks-per-node=1 \
  --gres="gpu:$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  bash -c "
    set -euo pipefail
    MASTER_ADDR=\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | head -n 1)
    export OMP_NUM_THREADS=\${OMP_NUM_THREADS:-1}
    exec python -m torch.distributed.run --nnodes=\$SLURM_NNODES --node_rank=\$SLURM_NODEID \
      --nproc_per_node=$GPUS_PER_NODE --master_addr=\$MASTER_ADDR --master_port=$MASTER_PORT \
      '$ROOT/tools/train.py' --config '$CONFIG' --resume auto$ARGS
  "
