"""Image <-> text retrieval with duplicate-aware hits: any image of the same study or any identical report counts."""

from __future__ import annotations

import numpy as np
import torch


def hit_ranks(sims: torch.Tensor, hits: torch.Tensor) -> np.ndarray:
    """0-based rank of the best-ranked hit per query row. sims, hits: [Q, G]; every row needs at least one hit."""
    if not bool(hits.any(1).all()):
        raise ValueError("every query needs at least one relevant gallery item")
    best_hit = sims.masked_fill(~hits, float("-inf")).max(1).values  # [Q]
    # Ties are counted against the query so a constant model cannot score well.
    return ((sims >= best_hit[:, None]) & ~hits).sum(1).numpy()


def rank_metrics(ranks: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    out = {f"R@{k}": float((ranks < k).mean()) for k in ks}
    out["MRR"] = float((1.0 / (ranks + 1)).mean())
    out["median_rank"] = float(np.median(ranks + 1))
    return out


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, hits: torch.Tensor, *, ks=(1, 5, 10)) -> dict:
    """image_emb [N, D], text_emb [M, D], hits [N, M] bool (image i and text j describe the same case)."""
    sims = image_emb @ text_emb.t()  # [N, M]
    return {
        "image_to_text": rank_metrics(hit_ranks(sims, hits), ks),
        "text_to_image": rank_metrics(hit_ranks(sims.t(), hits.t()), ks),
        "n_images": int(image_emb.shape[0]),
        "n_texts": int(text_emb.shape[0]),
    }


def study_hits(image_studies: list[str], image_text_keys: list[str], text_studies: list[str], text_keys: list[str]):
    """[N, M] hits: same study, or identical normalised report text."""
    same_study = np.asarray(image_studies)[:, None] == np.asarray(text_studies)[None, :]
    same_text = np.asarray(image_text_keys)[:, None] == np.asarray(text_keys)[None, :]
    return torch.from_numpy(same_study | same_text)
