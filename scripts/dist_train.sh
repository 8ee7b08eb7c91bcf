#!/usr/bin/env bash
# Distributed training with torchrun, on one node or several.
#
#   bash scripts/dist_train.sh CONFIG GPUS [tools/train.py arguments...]
#
#   bash scripts/dist_train.sh configs/ssv1_rsa_8f.yaml 8 --resume auto             # one node, 8 GPUs
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash scripts/dist_train.sh configs/ssv1_rsa_8f.yaml 8   # on node0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash scripts/dist_train.sh configs/ssv1_rsa_8f.yaml 8   # on node1
#
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), MASTER_PORT (29500), TRAIN (tools/train.py;
# set TRAIN=tools/test.py to run a distributed test with the same launcher).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: bash scripts/dist_train.sh CONFIG GPUS [tools/train.py arguments...]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="$1"; GPUS="$2"; shift 2
NNODES="${NNODES:-1}"; NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"; MASTER_PORT="${MASTER_PORT:-29500}"
TRAIN="${TRAIN:-$ROOT/tools/train.py}"
# One intra-op thread per process unless told otherwise: the GPU does the work, the CPU cores feed the loaders.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec python -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  "$TRAIN" --config "$CONFIG" "$@"
