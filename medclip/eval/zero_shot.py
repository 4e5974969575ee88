"""Zero-shot multi-label classification with positive/negative prompt ensembles."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score


def class_embeddings(prompts: dict[str, dict[str, list[str]]], encode) -> dict[str, torch.Tensor]:
    """finding -> [2, D] (positive, negative) prompt embeddings, each the normalised mean of its templates.

    ``encode(list[str]) -> [N, D]`` normalised text embeddings.
    """
    out = {}
    for finding, sides in prompts.items():
        rows = []
        for side in ("positive", "negative"):
            texts = sides[side]
            rows.append(F.normalize(encode(texts).mean(0), dim=-1) if texts else None)
        if rows[1] is None:  # no negative prompts: score against nothing (pure similarity)
            rows[1] = torch.zeros_like(rows[0])
        out[finding] = torch.stack(rows)
    return out


def zero_shot_scores(image_emb: torch.Tensor, classes: dict[str, torch.Tensor], logit_scale: float) -> dict[str, np.ndarray]:
    """finding -> [N] probability of the positive prompt in a softmax over (positive, negative)."""
    scores = {}
    for finding, emb in classes.items():
        logits = logit_scale * image_emb @ emb.t()  # [N, 2]
        scores[finding] = logits.softmax(-1)[:, 0].numpy()
    return scores


def binary_metrics(y_true: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """AUROC / AUPRC over rows with a 0/1 label (blank and uncertain rows are ignored)."""
    keep = np.isin(y_true, (0, 1))
    y, s = y_true[keep].astype(int), score[keep]
    if len(np.unique(y)) < 2:
        return {"auroc": None, "auprc": None, "n": int(len(y)), "positives": int(y.sum())}
    return {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s)), "n": int(len(y)),
            "positives": int(y.sum())}  # fmt: skip


def evaluate_zero_shot(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """Per-finding metrics + macro AUROC over findings with both classes present."""
    per = {f: binary_metrics(labels[f], scores[f]) for f in scores if f in labels}
    aurocs = [m["auroc"] for m in per.values() if m["auroc"] is not None]
    inverted = [f for f, m in per.items() if m["auroc"] is not None and m["auroc"] < 0.5]
    return {"per_finding": per, "macro_auroc": float(np.mean(aurocs)) if aurocs else None,
            "polarity_warnings": inverted}  # fmt: skip
