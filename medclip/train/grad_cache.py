"""Gradient cache (Gao et al. 2021): an exact contrastive gradient for a batch far larger than fits in memory.

1. Embed the whole batch in micro-batches without autograd (no activations kept), saving each micro-batch's RNG
   state first.
2. Compute the loss on the full batch of embeddings (leaf tensors) and backpropagate it to those embeddings only.
3. Re-run each micro-batch with autograd, RNG restored (same dropout / drop-path masks), and backpropagate the
   cached embedding gradients through the towers; parameter gradients accumulate micro-batch by micro-batch.

Peak memory is one micro-batch's activations plus [B, D] embeddings, whatever the batch. Under DDP only the last
micro-batch's backward synchronises gradients (the others run in ``no_sync``).

BatchNorm: each micro-batch is normalised with its own statistics (as each GPU's batch is under DDP), so the result
equals full-batch training with BN groups of micro-batch size, not one BN over the whole batch. Running statistics
are updated once per micro-batch (by the second pass only; the first pass restores them). Towers without batch
coupling (ViTs, LayerNorm ConvNeXts, BERT) give the full-batch gradient exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from medclip.models.text_tower import row_extents

EMBEDDINGS = ("image_emb", "text_emb", "image_regions", "text_tokens")  # model outputs the loss differentiates


def pad_tokens(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad dim 1 (tokens) of [b, L, ...] to ``width`` with zeros (False for a mask)."""
    extra = width - tensor.shape[1]
    if extra <= 0:
        return tensor
    pad = [0, 0] * (tensor.ndim - 2) + [0, extra]
    return torch.nn.functional.pad(tensor, pad)


class RandContext:
    """The torch RNG state (CPU, and the CUDA device's) at creation; :meth:`restore` rewinds to it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


@contextlib.contextmanager
def frozen_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics) on exit: the no-grad pass must not count twice."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def split_inputs(
    model_inputs: dict[str, torch.Tensor], size: int, *, trim: bool = True
) -> list[dict[str, torch.Tensor]]:
    """Micro-batches of ``size`` rows; with ``trim``, token tensors are cut to each micro-batch's longest text."""
    n = next(iter(model_inputs.values())).shape[0]
    trim = trim and "attention_mask" in model_inputs
    ends = row_extents(model_inputs["attention_mask"])[1] if trim else []  # one read for every micro-batch
    chunks = []
    for start in range(0, n, size):
        chunk = {k: v[start : start + size] for k, v in model_inputs.items()}
        if trim:
            length = max(1, *ends[start : start + size])  # drop trailing all-padding columns
            chunk["input_ids"] = chunk["input_ids"][:, :length]
            chunk["attention_mask"] = chunk["attention_mask"][:, :length]
        chunks.append(chunk)
    return chunks


class GradCache:
    """``embed()`` the batch without activations, compute the loss on its output, then ``backward(loss)``.

    Args:
        model: the unwrapped :class:`~medclip.models.medclip.MedClip`.
        forward_model: what the grad pass calls (the DDP wrapper under torchrun, else ``model``).
        micro_batch: rows per tower forward.
        autocast: a zero-argument factory of the autocast context.
        trim_padding: cut each micro-batch's tokens to its longest text (off only for memory estimation with fake
            tensors, where the lengths are unknown).
        return_local: also cache the local word-region outputs (``image_regions``, ``text_tokens``, ``token_mask``)
            for the local loss; token rows are padded to the batch's longest micro-batch.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        forward_model: nn.Module,
        micro_batch: int,
        autocast: Callable,
        trim_padding: bool = True,
        return_local: bool = False,
    ) -> None:
        self.model, self.forward_model = model, forward_model
        self.micro_batch, self.autocast, self.trim_padding = micro_batch, autocast, trim_padding
        self.forward_kwargs = {"return_local": True} if return_local else {}
        self._chunks: list[dict[str, torch.Tensor]] = []
        self._rng: list[RandContext] = []
        self._leaves: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _embed_chunks(self, device: torch.device) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in (*EMBEDDINGS, "token_mask")}
        with frozen_buffers(self.model):
            for chunk in self._chunks:
                self._rng.append(RandContext(device))
                with self.autocast():
                    out = self.model(**chunk, **self.forward_kwargs)
                for key in parts:
                    if key in out:
                        parts[key].append(out[key].float() if key != "token_mask" else out[key])
        width = max((t.shape[1] for t in parts["token_mask"]), default=0)  # micro-batches trim tokens differently
        for key in ("text_tokens", "token_mask"):
            parts[key] = [pad_tokens(t, width) for t in parts[key]]
        return {k: torch.cat(v) for k, v in parts.items() if v}  # [B, ...] each

    def embed(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Leaf tensors ``image_emb``, ``text_emb``, ``logit_scale`` (and ``logit_bias``; with ``return_local`` also
        ``image_regions``, ``text_tokens`` and the ``token_mask``, not a leaf) for the loss."""
        self._chunks, self._rng = split_inputs(model_inputs, self.micro_batch, trim=self.trim_padding), []
        outputs = self._embed_chunks(model_inputs["image"].device)
        mask = outputs.pop("token_mask", None)
        leaves = {**outputs, "logit_scale": self.model.scale().detach()}
        if getattr(self.model, "logit_bias", None) is not None:
            leaves["logit_bias"] = self.model.logit_bias.detach()
        self._leaves = {k: v.requires_grad_() for k, v in leaves.items()}
        return {**self._leaves, "token_mask": mask} if mask is not None else self._leaves

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (already scaled, for fp16) through the cached embeddings, then the towers."""
        loss.backward()
        grads = {k: v.grad for k, v in self._leaves.items()}
        last = len(self._chunks) - 1
        start = 0
        for i, (chunk, rng) in enumerate(zip(self._chunks, self._rng, strict=True)):
            rows = slice(start, start + chunk["image"].shape[0])
            start = rows.stop
            sync = (
                contextlib.nullcontext()
                if i == last or not hasattr(self.forward_model, "no_sync")
                else self.forward_model.no_sync()
            )
            rng.restore()
            with sync:
                with self.autocast():
                    out = self.forward_model(**chunk, **self.forward_kwargs)
                keys = [k for k in EMBEDDINGS if k in grads]
                tensors = [out[k] for k in keys]
                grad_in = [grads[k][rows] for k in keys]
                if "text_tokens" in grads:  # this micro-batch's own token width
                    grad_in[keys.index("text_tokens")] = grad_in[keys.index("text_tokens")][
                        :, : out["text_tokens"].shape[1]
                    ]
                if i == last:  # the temperature (and bias) gradient enters once, through the model's own graph
                    tensors += [out[k] for k in ("logit_scale", "logit_bias") if k in grads]
                    grad_in += [grads[k] for k in ("logit_scale", "logit_bias") if k in grads]
                torch.autograd.backward(tensors, [g.to(t.dtype) for t, g in zip(tensors, grad_in, strict=True)])
        self._chunks, self._rng, self._leaves = [], [], {}
