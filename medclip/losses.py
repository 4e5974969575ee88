"""Contrastive losses (registered): symmetric InfoNCE as in CLIP, label-aware soft targets, SigLIP; and the local
word-region alignment term of GLoRIA (:class:`LocalAlignmentLoss`) that adds to any of them.

Every loss takes one rank's L2-normalised embeddings, gathers them across ranks with gradients (so each rank sees
the global batch's negatives) and scores either the whole global batch or, with ``local_loss``, only its own rows
against all columns. Positives are the matching pair, plus identical normalised report texts (``text_keys``) and,
optionally, other images of the same study (``study_keys``, multi-view).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medclip.config import LossCfg
from medclip.distributed import all_gather_nograd, all_gather_with_grad, get_rank, get_world_size, max_over_ranks
from medclip.errors import InputError
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


def pair_mask(rows: slice, n: int, keys: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """[r, n] bool: positives of rows ``rows`` of an n-pair batch: the diagonal, or any shared key ([n] each)."""
    idx = torch.arange(n, device=device)
    mask = idx[rows, None] == idx[None, :]
    for k in keys:
        mask |= k[rows, None] == k[None, :]
    return mask


def label_targets(labels: torch.Tensor, rows: slice, *, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets from label vectors ([n, C]): row-softmax of cos(label_i, label_j) / temperature -> [r, n], and a
    [r] bool of which rows have any label (a row without labels keeps its hard targets)."""
    unit = F.normalize(labels.float(), dim=-1)
    sim = unit[rows] @ unit.t()  # [r, n], in [-1, 1]
    return torch.softmax(sim / temperature, dim=-1), labels[rows].abs().sum(-1) > 0


class ContrastiveLoss(nn.Module):
    """Shared gathering and positive masks; subclasses implement :meth:`score`."""

    def __init__(
        self, *, duplicate_texts_positive: bool = True, study_positives: bool = False, local_loss: bool = False
    ) -> None:
        super().__init__()
        self.duplicate_texts_positive = duplicate_texts_positive
        self.study_positives = study_positives
        self.local_loss = local_loss

    @classmethod
    def from_cfg(cls, cfg: LossCfg) -> ContrastiveLoss:
        return cls(
            duplicate_texts_positive=cfg.duplicate_texts_positive,
            study_positives=cfg.study_positives,
            local_loss=cfg.local_loss,
        )

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        *,
        text_keys: torch.Tensor | None = None,
        study_keys: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logit_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, world = image_emb.shape[0], get_world_size()
        all_image, all_text = all_gather_with_grad(image_emb), all_gather_with_grad(text_emb)  # [N, D]
        keys = []
        if self.duplicate_texts_positive and text_keys is not None:
            keys.append(all_gather_nograd(text_keys))
        if self.study_positives and study_keys is not None:
            keys.append(all_gather_nograd(study_keys))
        labels = all_gather_nograd(labels) if labels is not None else None
        local = self.local_loss and world > 1
        rows = slice(get_rank() * b, (get_rank() + 1) * b) if local else slice(None)
        pos = pair_mask(rows, all_image.shape[0], keys, image_emb.device)  # [r, N]
        return self.score(all_image, all_text, logit_scale, rows=rows, pos=pos, labels=labels, logit_bias=logit_bias)

    def score(self, image, text, logit_scale, *, rows, pos, labels, logit_bias) -> torch.Tensor:
        raise NotImplementedError


@LOSSES.register("infonce")
class ClipLoss(ContrastiveLoss):
    """Symmetric InfoNCE over (image, text) embeddings; positives share the target mass evenly (soft targets).

    ``text_keys`` ([B] int64, ids of normalised report texts) marks rows that share a text; with
    ``duplicate_texts_positive`` their probability mass is spread evenly over all matching columns.
    """

    label_weight = 0.0

    def targets(self, pos: torch.Tensor, labels: torch.Tensor | None, rows: slice, dtype) -> torch.Tensor:
        pos = pos.to(dtype)
        return pos / pos.sum(1, keepdim=True)  # symmetric relation, so rows serve both directions

    def score(self, image, text, logit_scale, *, rows, pos, labels, logit_bias) -> torch.Tensor:
        if rows == slice(None):
            logits = logit_scale * image @ text.t()  # [N, N]
            logits_t2i = logits.t()
        else:  # local loss: this rank's rows against every column
            logits, logits_t2i = logit_scale * image[rows] @ text.t(), logit_scale * text[rows] @ image.t()  # [r, N]
        targets = self.targets(pos, labels, rows, logits.dtype)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits_t2i, targets))


@LOSSES.register("infonce_soft")
class LabelSoftClipLoss(ClipLoss):
    """InfoNCE with label-aware targets (MedCLIP-style): studies whose label vectors agree (e.g. both "Pleural
    Effusion" positive) are not pure negatives. Targets = (1 - w) * positives + w * softmax(cos(l_i, l_j) / T).

    Needs ``labels`` ([B, C]: 1 positive, 0 negative, uncertain as configured, blank 0); rows with no label keep
    their hard targets.
    """

    def __init__(self, *, label_weight: float = 0.5, label_temperature: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= label_weight <= 1.0 or label_temperature <= 0:
            raise InputError("loss.label_weight must be in [0, 1] and loss.label_temperature > 0")
        self.label_weight, self.label_temperature = label_weight, label_temperature

    @classmethod
    def from_cfg(cls, cfg: LossCfg) -> LabelSoftClipLoss:
        return cls(
            duplicate_texts_positive=cfg.duplicate_texts_positive,
            study_positives=cfg.study_positives,
            local_loss=cfg.local_loss,
            label_weight=cfg.label_weight,
            label_temperature=cfg.label_temperature,
        )

    def targets(self, pos, labels, rows, dtype) -> torch.Tensor:
        hard = super().targets(pos, None, rows, dtype)
        if labels is None:
            raise InputError("loss.name=infonce_soft needs label columns in the manifest (medclip manifest --labels)")
        soft, has_label = label_targets(labels, rows, temperature=self.label_temperature)
        mixed = (1.0 - self.label_weight) * hard + self.label_weight * soft.to(dtype)
        return torch.where(has_label[:, None], mixed, hard)


@LOSSES.register("siglip")
class SigLipLoss(ContrastiveLoss):
    """SigLIP's pairwise sigmoid loss: every (image, text) pair is a binary problem, positive or not.

    ``-sum log sigmoid(z_ij * (t * x_i . y_j + b)) / N`` with z = +1 for positives (the pair, identical texts,
    same-study views) and -1 otherwise. Needs the model's learnable bias (``model.logit_bias=true``).
    """

    def score(self, image, text, logit_scale, *, rows, pos, labels, logit_bias) -> torch.Tensor:
        if logit_bias is None:
            raise InputError("loss.name=siglip needs a logit bias: set model.logit_bias=true")
        logits = logit_scale * image[rows] @ text.t() + logit_bias  # [r, N]
        signs = 2.0 * pos.to(logits.dtype) - 1.0
        return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def create_loss(name: str, **kwargs) -> nn.Module:
    return LOSSES.get(name)(**kwargs)


def loss_from_cfg(cfg: LossCfg) -> ContrastiveLoss:
    """The registered loss ``cfg.name`` with the options of ``cfg`` it understands."""
    return LOSSES.get(cfg.name).from_cfg(cfg)


def local_pair_scores(
    words: torch.Tensor,
    word_mask: torch.Tensor,
    regions: torch.Tensor,
    *,
    attention_temperature: float,
    word_temperature: float,
    chunk: int = 512,
) -> torch.Tensor:
    """GLoRIA's local image-text score of every (text i, image j) pair -> [T, I].

    Each word of text i attends over image j's regions (softmax of ``attention_temperature`` x cosine); the word's
    cosine with the region context it attends to is its agreement; a log-sum-exp over the text's words (with
    ``word_temperature``) aggregates them. ``words`` [T, L, D] and ``regions`` [I, N, D] are L2-normed; ``word_mask``
    [T, L] marks real words. A text with no words scores 0 against every image.

    Only real words are scored (the batch's words packed end to end, ``chunk`` at a time: memory chunk x I x N), and
    the contexts are never formed: word . context = sum_n attn_n (word . r_n) and |context|^2 = attn^T G attn with G
    the regions' Gram matrix, so the cost is words x I x N x (D + N) multiply-adds.
    """
    text_of_word = torch.nonzero(word_mask, as_tuple=True)[0]  # [W]: the text each real word belongs to
    packed = words[word_mask]  # [W, D]
    gram = regions @ regions.transpose(1, 2)  # [I, N, N]: region-region cosines
    sums = []
    for start in range(0, packed.shape[0], chunk):
        w = packed[start : start + chunk]  # [w, D]
        sim = torch.einsum("wd,jnd->wjn", w, regions)  # [w, I, N]
        attn = torch.softmax(attention_temperature * sim, dim=-1)
        dot = (attn * sim).sum(-1)  # [w, I]
        norm = (torch.einsum("wjn,jnm->wjm", attn, gram) * attn).sum(-1).clamp(min=1e-12).sqrt()
        # agreement is a cosine (|.| <= 1), so exp(word_temperature * agreement) cannot overflow: no max-shift needed
        sums.append(torch.exp(word_temperature * dot / norm))
    per_word = torch.cat(sums) if sums else regions.new_zeros(0, regions.shape[0])
    totals = regions.new_zeros(words.shape[0], regions.shape[0]).index_add(0, text_of_word, per_word)  # [T, I]
    has_words = word_mask.any(1)[:, None]
    return torch.where(has_words, torch.log(totals.clamp(min=1e-30)) / word_temperature, torch.zeros_like(totals))


class LocalAlignmentLoss(nn.Module):
    """GLoRIA's local contrastive term (Huang et al., ICCV 2021): InfoNCE over :func:`local_pair_scores`, both ways.

    Gathered across ranks with gradients like the global loss; identical report texts (``text_keys``) are positives.
    It adds to the global loss (``loss.local_weight``); GLoRIA weights the two equally.
    """

    def __init__(
        self,
        *,
        attention_temperature: float = 4.0,
        word_temperature: float = 5.0,
        scale: float = 10.0,
        duplicate_texts_positive: bool = True,
    ) -> None:
        super().__init__()
        if min(attention_temperature, word_temperature, scale) <= 0:
            raise InputError("loss.local_attention_temperature, local_word_temperature and local_scale must be > 0")
        self.attention_temperature, self.word_temperature, self.scale = attention_temperature, word_temperature, scale
        self.duplicate_texts_positive = duplicate_texts_positive

    @classmethod
    def from_cfg(cls, cfg: LossCfg) -> LocalAlignmentLoss:
        return cls(
            attention_temperature=cfg.local_attention_temperature,
            word_temperature=cfg.local_word_temperature,
            scale=cfg.local_scale,
            duplicate_texts_positive=cfg.duplicate_texts_positive,
        )

    def forward(
        self,
        image_regions: torch.Tensor,
        text_tokens: torch.Tensor,
        token_mask: torch.Tensor,
        *,
        text_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        width = max_over_ranks(text_tokens.shape[1], text_tokens.device)  # ranks' batches may differ in text length
        if width > text_tokens.shape[1]:
            text_tokens = F.pad(text_tokens, (0, 0, 0, width - text_tokens.shape[1]))
            token_mask = F.pad(token_mask, (0, width - token_mask.shape[1]))
        regions, words = all_gather_with_grad(image_regions), all_gather_with_grad(text_tokens)
        mask = all_gather_nograd(token_mask)
        keys = [all_gather_nograd(text_keys)] if self.duplicate_texts_positive and text_keys is not None else []
        scores = local_pair_scores(
            words,
            mask,
            regions,
            attention_temperature=self.attention_temperature,
            word_temperature=self.word_temperature,
        )  # [T, I]: texts x images
        pos = pair_mask(slice(None), regions.shape[0], keys, regions.device).to(scores.dtype)
        targets = pos / pos.sum(1, keepdim=True)
        logits = self.scale * scores
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def local_loss_from_cfg(cfg: LossCfg) -> LocalAlignmentLoss | None:
    """The local word-region loss of ``cfg`` (None when ``loss.local_weight`` is 0)."""
    return LocalAlignmentLoss.from_cfg(cfg) if cfg.local_weight > 0 else None
