#!/usr/bin/env bash
# Multi-node medclip training under SLURM: one torchrun per node, c10d rendezvous on the job's first node.
#
#   sbatch --nodes 2 --gpus-per-node 8 scripts/slurm_train.sh cxr_vitb16_clinicalbert \
#       data.manifest=/shared/data/manifest train.out_dir=/shared/runs/vitb16
#
# train.out_dir must be on a filesystem every node sees (or an s3:// URL where supported): rank 0 writes the
# checkpoints, every rank adds its random state to them and reads them on resume. The job always passes --resume,
# so a preempted or requeued job (--requeue) continues from the newest checkpoint in OUT/checkpoints, and a first
# start begins at step 0. train.batch_size is per GPU: the contrastive batch is batch_size x nodes x GPUs per node.
#
# Dry run: MEDCLIP_DRY_RUN=1 prints the exact command (environment, srun, torchrun) instead of running it, e.g.
#   MEDCLIP_DRY_RUN=1 sbatch --nodes 2 scripts/slurm_train.sh CONFIG key=value ...   (sbatch passes the variable on)
#   salloc --nodes 2 --gpus-per-node 8  then  MEDCLIP_DRY_RUN=1 bash scripts/slurm_train.sh CONFIG key=value ...
# The node count, host names and job id come from the allocation (SLURM_NNODES, SLURM_JOB_NODELIST, SLURM_JOB_ID);
# GPUs per node from SLURM_GPUS_ON_NODE, else nvidia-smi. MASTER_PORT (default 29500) sets the rendezvous port.
#SBATCH --job-name=medclip
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: [MEDCLIP_DRY_RUN=1] sbatch scripts/slurm_train.sh CONFIG [key=value ...]}
shift
: "${SLURM_NNODES:?not inside a SLURM allocation: submit with sbatch, or run under salloc}"
if [[ -n ${SLURM_GPUS_ON_NODE:-} ]]; then
  GPUS_PER_NODE=$SLURM_GPUS_ON_NODE
elif command -v nvidia-smi >/dev/null; then
  GPUS_PER_NODE=$(nvidia-smi -L | wc -l)
else
  echo "slurm_train.sh: SLURM_GPUS_ON_NODE is unset and nvidia-smi is missing; request GPUs (--gpus-per-node)" >&2
  exit 2
fi
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
# Data loading workers share the node's cores with the GPUs' processes (at least one thread each).
THREADS=$(( ${SLURM_CPUS_PER_TASK:-8} / GPUS_PER_NODE ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( THREADS > 0 ? THREADS : 1 ))}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
# NCCL_SOCKET_IFNAME / NCCL_IB_HCA may need setting for your cluster's network.

cmd=(
  srun --kill-on-bad-exit=1 torchrun
  --nnodes "$SLURM_NNODES"
  --nproc-per-node "$GPUS_PER_NODE"
  --rdzv-id "$SLURM_JOB_ID"
  --rdzv-backend c10d
  --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT"
  -m medclip.cli train "$CONFIG" "$@" --resume
)
echo "medclip: $SLURM_NNODES node(s) x $GPUS_PER_NODE GPU(s), rendezvous $MASTER_ADDR:$MASTER_PORT"
if [[ ${MEDCLIP_DRY_RUN:-0} != 0 ]]; then
  # One shell-quoted line: copy it to run the job step by hand inside the allocation.
  line=$(printf '%q ' "OMP_NUM_THREADS=$OMP_NUM_THREADS" "HF_HUB_OFFLINE=$HF_HUB_OFFLINE" \
    "TOKENIZERS_PARALLELISM=$TOKENIZERS_PARALLELISM" "${cmd[@]}")
  echo "${line% }"
  exit 0
fi
"${cmd[@]}"
