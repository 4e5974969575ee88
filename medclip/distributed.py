"""torch.distributed helpers: rank/world, init from torchrun's environment, all-gather that keeps gradients.

``torchrun --nproc-per-node N medclip train CONFIG`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the
rendezvous for multi-node); :func:`init_distributed` reads them. Without them every helper acts as a world of one,
so single-process code needs no special case.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medclip.errors import SetupError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank and world size as torchrun (or SLURM via torchrun) exports them; a world of one otherwise."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def resolve_device(name: str, *, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` -> this process's GPU.

    ``key`` is the config key the name came from, for the error when CUDA is asked for and absent.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SetupError(f"{key}={name} but no CUDA device is available; use {key}=cpu")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def init_distributed(device_name: str = "auto", *, timeout_min: int = 30) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (NCCL on GPU, gloo on CPU) and pick this process's device.

    Returns the rank info and the device. A no-op for a single process (``WORLD_SIZE`` unset or 1).
    """
    info = env_info()
    device = resolve_device(device_name, local_rank=info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not info.is_distributed or is_initialized():
        return info, device
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min), **kwargs)
    logger.info(
        "rank %d/%d (local %d) joined the %s process group on %s",
        info.rank,
        info.world_size,
        info.local_rank,
        backend,
        device,
    )
    return info, device


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's [n, ...] tensor in rank order. Backward: each rank's loss depends on every
    rank's rows, so the incoming gradients are summed over ranks and each rank keeps the slice of its own rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)  # [world * n, ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """[n, ...] on each rank -> [world * n, ...] on every rank, differentiable (equal ``n`` on all ranks).

    With DDP averaging parameter gradients over ranks, a loss computed by every rank on the gathered batch gives
    exactly the gradients of the same loss on one process holding the whole batch.
    """
    if get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_nograd(tensor: torch.Tensor) -> torch.Tensor:
    """[n, ...] -> [world * n, ...] without gradients (keys, labels)."""
    if get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest ``value`` any rank holds (this rank's own without a process group)."""
    if get_world_size() == 1:
        return value
    out = torch.tensor([value], device=device)
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return int(out.item())


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks (a detached copy)."""
    out = tensor.detach().clone()
    if get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= get_world_size()
    return out


def broadcast_object(obj, *, src: int = 0):
    """A picklable object from rank ``src`` on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
