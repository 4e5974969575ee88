"""AdamW parameter groups and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from medclip.config import OptimCfg
from medclip.errors import InputError


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total_steps`` (nanoGPT's get_lr, as a factor)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # Biases, norms and the temperature are not weight-decayed (as in CLIP).
    return param.ndim < 2 or "logit_scale" in name or "norm" in name.lower()


def layer_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """Layer-wise lr decay: ``decay ** (groups above)`` for each tower parameter (the top group gets 1).

    Lower layers of a pretrained tower hold general features and move least (BEiT / ELECTRA style).
    """
    scales: dict[str, float] = {}
    if decay == 1.0:
        return scales
    for prefix in ("image", "text"):
        tower = getattr(model, prefix, None)
        groups = tower.layer_groups() if hasattr(tower, "layer_groups") else []
        for depth, names in enumerate(groups):
            for name in names:
                scales[f"{prefix}.{name}"] = decay ** (len(groups) - 1 - depth)
    return scales


def base_lr(name: str, cfg: OptimCfg) -> float:
    """Towers and heads may each have their own learning rate; 0 means "same as optim.lr"."""
    if name.startswith("text."):
        return cfg.text_tower_lr
    if name.startswith("text_proj."):
        return cfg.text_head_lr or cfg.lr
    if name.startswith("image."):
        return cfg.image_tower_lr or cfg.lr
    if name.startswith("image_proj."):
        return cfg.image_head_lr or cfg.lr
    return cfg.lr  # the temperature (and SigLIP's bias)


def param_groups(model: nn.Module, cfg: OptimCfg) -> list[dict]:
    """AdamW groups by (learning rate, decay): per-tower and per-head rates, times the layer-wise decay."""
    if not 0.0 < cfg.layer_decay <= 1.0:
        raise InputError(f"optim.layer_decay={cfg.layer_decay} must be in (0, 1] (1 = off, ~0.75 typical)")
    scales = layer_scales(model, cfg.layer_decay)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = base_lr(name, cfg) * scales.get(name, 1.0)
        wd = 0.0 if _no_decay(name, p) else cfg.weight_decay
        groups.setdefault((lr, wd), []).append(p)
    return [{"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def create_optimizer(model: nn.Module, cfg: OptimCfg) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if not groups:
        raise InputError("no trainable parameters: both towers and heads are locked")
    kwargs = {"lr": cfg.lr, "betas": (0.9, 0.98), "eps": 1e-6}
    try:  # one fused kernel over every parameter (CPU and CUDA): the same update, 3-5x less optimizer time
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except RuntimeError:  # a device or dtype without fused kernels
        return torch.optim.AdamW(groups, **kwargs)


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimCfg, total_steps: int):
    warmup = min(cfg.warmup_steps, max(1, total_steps // 5))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, warmup_steps=warmup, total_steps=total_steps, min_ratio=cfg.min_lr_ratio),
    )
