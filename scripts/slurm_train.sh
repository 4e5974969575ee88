#!/usr/bin/env bash
# Multi-node medclip training under SLURM: one torchrun per node, c10d rendezvous on the job's first node.
#
#   sbatch --nodes 2 --gpus-per-node 8 scripts/slurm_train.sh cxr_vitb16_clinicalbert \
#       data.manifest=/shared/data/manifest train.out_dir=/shared/runs/vitb16
#
# train.out_dir must be on a filesystem every node sees: rank 0 writes the checkpoints, every rank reads them on
# resume. The job always passes --resume, so a preempted or requeued job (--requeue) continues from the newest
# checkpoint in OUT/checkpoints, and a first start begins at step 0. train.batch_size is per GPU: the contrastive
# batch is batch_size x nodes x GPUs per node.
#SBATCH --job-name=medclip
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_train.sh CONFIG [key=value ...]}
shift
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L | wc -l)}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
# Data loading workers share the node's cores with the GPUs' processes.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( ${SLURM_CPUS_PER_TASK:-8} / GPUS_PER_NODE ))}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
# NCCL_SOCKET_IFNAME / NCCL_IB_HCA may need setting for your cluster's network.

echo "medclip: $SLURM_NNODES node(s) x $GPUS_PER_NODE GPU(s), rendezvous $MASTER_ADDR:$MASTER_PORT"
srun --kill-on-bad-exit=1 torchrun \
  --nnodes "$SLURM_NNODES" \
  --nproc-per-node "$GPUS_PER_NODE" \
  --rdzv-id "$SLURM_JOB_ID" \
  --rdzv-backend c10d \
  --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" \
  -m medclip.cli train "$CONFIG" "$@" --resume
