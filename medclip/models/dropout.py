"""Dropout with cheaper masks on the CPU: the same Bernoulli masks, drawn 32 bits at a time.

torch's CPU dropout draws each mask element with ``bernoulli_`` (one double per element, on one thread: ~7 ns) and
keeps a float mask for the backward. Here one 64-bit draw of the same generator gives two 32-bit uniforms, each
compared with ``p`` at 2^-32 resolution (~1.7 ns per element), and the backward keeps a bool mask (a quarter of the
memory). On other devices torch's fused dropout kernels are already fast and are used as they are. The masks come
from torch's default generator, so ``torch.manual_seed``, saved RNG states (resume, the gradient cache's replays)
and gradient checkpointing reproduce them exactly as they do torch's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float) -> torch.Tensor:
    """A CPU bool tensor of ``shape``, each element True (kept) with probability ``1 - p``, independently."""
    n = math.prod(shape)
    words = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-(2**63), None)  # every 64-bit value equally likely
    uniform = words.view(torch.int32)[:n].view(shape)  # two independent uniform 32-bit integers per draw
    return uniform >= -(2**31) + round(p * 2**32)


class _KeepScale(torch.autograd.Function):
    """``x * keep * scale`` (two passes, no float copy of the mask) that saves only the bool mask for its backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``: zero each element with probability ``p``, scale the rest by ``1 / (1 - p)``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    return _KeepScale.apply(x, keep_mask(x.shape, p), 1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` with :func:`dropout`'s masks (same ``p``, same state dict: none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> int:
    """Replace every plain ``nn.Dropout`` inside ``module`` with :class:`Dropout`; returns how many."""
    swaps = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Dropout
    ]
    for parent, name, child in swaps:
        setattr(parent, name, Dropout(child.p))
    return len(swaps)
