"""Contrastive losses (registered). Symmetric InfoNCE as in CLIP, with duplicate-aware targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medclip.registry import Registry

LOSSES: Registry = Registry("loss")


def positive_mask(text_keys: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
    """[B, B] bool: pair (i, j) counts as positive when j == i or both carry the same text key.

    Radiology archives repeat reports verbatim ("No acute cardiopulmonary process."); treating those copies as
    negatives would push apart images that the text says are alike.
    """
    eye = torch.eye(batch_size, dtype=torch.bool, device=device)
    if text_keys is None:
        return eye
    return (text_keys[:, None] == text_keys[None, :]) | eye


@LOSSES.register("infonce")
class ClipLoss(nn.Module):
    """Symmetric InfoNCE over a batch of (image, text) embeddings, L2-normalised.

    ``text_keys`` ([B] int64, e.g. ids of normalised report texts or of studies) marks rows that share a text; with
    ``duplicate_texts_positive`` their probability mass is spread evenly over all matching columns (soft targets).
    """

    def __init__(self, *, duplicate_texts_positive: bool = True) -> None:
        super().__init__()
        self.duplicate_texts_positive = duplicate_texts_positive

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        *,
        text_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits = logit_scale * image_emb @ text_emb.t()  # [B, B]
        keys = text_keys if self.duplicate_texts_positive else None
        pos = positive_mask(keys, logits.shape[0], logits.device).to(logits.dtype)
        targets = pos / pos.sum(1, keepdim=True)  # symmetric, so rows serve both directions
        loss_i2t = F.cross_entropy(logits, targets)
        loss_t2i = F.cross_entropy(logits.t(), targets)
        return 0.5 * (loss_i2t + loss_t2i)


def create_loss(name: str, **kwargs) -> nn.Module:
    return LOSSES.get(name)(**kwargs)
