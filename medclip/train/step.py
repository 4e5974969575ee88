"""One optimisation step: inputs -> (gradient-cached) forward -> global loss -> backward -> clip -> update.

Shared by the trainer, the distributed and gradient-cache tests and ``scripts/bench_train.py``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medclip.distributed import all_reduce_mean, get_world_size
from medclip.errors import InputError, MedclipError
from medclip.train.grad_cache import GradCache

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(MedclipError, RuntimeError):
    """Too many non-finite losses in a row."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware computes it natively (CUDA with bf16, a CPU with AVX-512 BF16 / AMX),
    else fp32; any other value is returned unchanged. On a CPU without native bf16, autocast emulates it slowly."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    return "fp32"


def autocast_factory(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A zero-argument factory of the autocast context for ``precision`` (fp32: a no-op context)."""
    if precision not in PRECISIONS:
        raise InputError(f"train.precision '{precision}' is not one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


@dataclass
class StepParts:
    """What a step needs; built once by the trainer (or a benchmark / test)."""

    model: nn.Module  # the unwrapped MedClip
    forward_model: nn.Module  # DDP wrapper under torchrun, else ``model``
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]
    grad_clip: float = 1.0
    micro_batch: int = 0  # gradient cache micro-batch (0: off)
    max_bad_steps: int = 10
    local_loss: nn.Module | None = None  # the local word-region loss (medclip.losses.LocalAlignmentLoss), if on
    local_weight: float = 0.0


def set_train_mode(model: nn.Module) -> None:
    """Train mode, except towers that are fully locked: they stay deterministic (no dropout, frozen BN stats)."""
    model.train()
    if model.text.is_locked:
        model.text.eval()
    if not any(p.requires_grad for p in model.image.parameters()):
        model.image.eval()


def loss_and_grads(
    parts: StepParts, model_inputs: dict[str, torch.Tensor], loss_kwargs: dict, terms: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss and backward. Returns (the global loss, detached; the logit scale, detached). The loss is the
    global contrastive loss plus ``local_weight`` x the local word-region loss when that is on; ``terms`` (if given)
    receives the local term, detached, as ``local_loss``.

    Nothing here waits for the device: the caller reads the loss once, after backward (a non-finite loss then gives
    non-finite gradients, and the step is skipped).
    """
    batch = model_inputs["image"].shape[0]
    local = parts.local_loss is not None
    cache = None
    if parts.micro_batch and parts.micro_batch < batch:
        cache = GradCache(
            parts.model,
            forward_model=parts.forward_model,
            micro_batch=parts.micro_batch,
            autocast=parts.autocast,
            return_local=local,
        )
        out = cache.embed(model_inputs)
    else:
        with parts.autocast():
            out = (
                parts.forward_model(**model_inputs, return_local=True) if local else parts.forward_model(**model_inputs)
            )
    bias = out.get("logit_bias")
    loss = parts.loss_fn(
        out["image_emb"].float(),
        out["text_emb"].float(),
        out["logit_scale"].float(),
        logit_bias=bias.float() if bias is not None else None,
        **loss_kwargs,
    )
    if local:
        local_value = parts.local_loss(
            out["image_regions"].float(),
            out["text_tokens"].float(),
            out["token_mask"],
            text_keys=loss_kwargs.get("text_keys"),
        )
        if terms is not None:
            terms["local_loss"] = all_reduce_mean(local_value) if get_world_size() > 1 else local_value.detach()
        loss = loss + parts.local_weight * local_value
    # Every rank must agree on skipping: with a local loss each rank holds only its own part of the loss.
    global_loss = all_reduce_mean(loss) if get_world_size() > 1 else loss.detach()
    scaled = parts.scaler.scale(loss)
    if cache is not None:
        cache.backward(scaled)
    else:
        scaled.backward()
    return global_loss, out["logit_scale"].detach()


def train_step(
    parts: StepParts, model_inputs: dict[str, torch.Tensor], loss_kwargs: dict, state: dict
) -> dict[str, float]:
    """One step; skips (and counts) a non-finite loss, raising after ``max_bad_steps`` in a row.

    The host reads the device once per step (loss, gradient norm and temperature together, after backward), so on a
    GPU the next step's work is queued while this one's optimizer update still runs.
    """
    t0 = time.perf_counter()
    set_train_mode(parts.model)
    parts.optimizer.zero_grad(set_to_none=True)
    terms: dict[str, torch.Tensor] = {}
    loss, scale = loss_and_grads(parts, model_inputs, loss_kwargs, terms)
    state["step"] += 1
    pairs = model_inputs["image"].shape[0] * get_world_size()
    parts.scaler.unscale_(parts.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), parts.grad_clip or float("inf"))
    read = [loss.float(), grad_norm.float(), 1.0 / scale.float(), *(t.float() for t in terms.values())]
    loss_value, norm_value, temperature, *term_values = torch.stack(read).tolist()
    # A finite loss can still give inf / NaN gradients (bf16 / fp32 have no GradScaler to catch them): never let them
    # reach the weights. fp16's GradScaler handles its own inf gradients (it skips the step and lowers the scale).
    finite_grads = parts.scaler.is_enabled() or math.isfinite(norm_value)
    if not (math.isfinite(loss_value) and finite_grads):
        what = "gradients" if math.isfinite(loss_value) else "loss"
        state["bad_steps"] += 1
        state["skipped"] += 1
        logger.warning("step %d: non-finite %s, step skipped (%d in a row)", state["step"], what, state["bad_steps"])
        parts.optimizer.zero_grad(set_to_none=True)
        if parts.scaler.is_enabled():
            parts.scaler.update()  # closes this step's unscale_ (the non-finite gradients lower the scale)
        if state["bad_steps"] >= parts.max_bad_steps:
            raise NonFiniteLossError(
                f"{parts.max_bad_steps} non-finite losses or gradients in a row (last at step {state['step']}); "
                "lower optim.lr, use train.precision=bf16 or fp32 instead of fp16, or check the data"
            )
        parts.scheduler.step()
        return {"step": state["step"], "loss": math.nan, "pairs_per_s": 0.0, "skipped": state["skipped"]}
    state["bad_steps"] = 0
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    dt = time.perf_counter() - t0  # on a GPU the update is still running: it counts in the next step's time
    record = {
        "step": state["step"],
        "loss": loss_value,
        "lr": parts.scheduler.get_last_lr()[0],
        "temperature": temperature,
        "grad_norm": norm_value,
        "pairs_per_s": pairs / dt,
        "skipped": state["skipped"],
        **dict(zip(terms, term_values, strict=True)),
    }
    if parts.scaler.is_enabled():  # fp16: the scaler skips steps with inf gradients and lowers the scale
        record["loss_scale"] = parts.scaler.get_scale()
    return record
