"""Image <-> text retrieval with duplicate-aware hits (same study or identical report), and label-based similar-case
retrieval (image -> image precision@k of neighbours with the same findings)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def hit_ranks(sims: torch.Tensor, hits: torch.Tensor) -> np.ndarray:
    """0-based rank of the best-ranked hit per query row. sims, hits: [Q, G]; every row needs at least one hit."""
    if not bool(hits.any(1).all()):
        raise ValueError("every query needs at least one relevant gallery item")
    best_hit = sims.masked_fill(~hits, float("-inf")).max(1).values  # [Q]
    # Ties are counted against the query so a constant model cannot score well.
    return ((sims >= best_hit[:, None]) & ~hits).sum(1).numpy()


def rank_metrics(ranks: np.ndarray, ks=(1, 5, 10), *, n_bootstrap: int = 0, seed: int = 0) -> dict:
    """R@k, MRR and median rank of 0-based hit ranks; with ``n_bootstrap``, percentile 95 % CIs over resampled
    queries as ``R@k_ci`` / ``MRR_ci``."""
    out: dict = {f"R@{k}": float((ranks < k).mean()) for k in ks}
    out["MRR"] = float((1.0 / (ranks + 1)).mean())
    out["median_rank"] = float(np.median(ranks + 1))
    if n_bootstrap and len(ranks):
        idx = np.random.default_rng(seed).integers(0, len(ranks), size=(n_bootstrap, len(ranks)))
        sample = ranks[idx]  # [B, Q]
        for k in ks:
            out[f"R@{k}_ci"] = np.quantile((sample < k).mean(1), [0.025, 0.975]).tolist()
        out["MRR_ci"] = np.quantile((1.0 / (sample + 1)).mean(1), [0.025, 0.975]).tolist()
    return out


def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    hits: torch.Tensor,
    *,
    ks=(1, 5, 10),
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """image_emb [N, D], text_emb [M, D], hits [N, M] bool (image i and text j describe the same case)."""
    sims = image_emb @ text_emb.t()  # [N, M]
    return {
        "image_to_text": rank_metrics(hit_ranks(sims, hits), ks, n_bootstrap=n_bootstrap, seed=seed),
        "text_to_image": rank_metrics(hit_ranks(sims.t(), hits.t()), ks, n_bootstrap=n_bootstrap, seed=seed),
        "n_images": int(image_emb.shape[0]),
        "n_texts": int(text_emb.shape[0]),
        "ks": list(ks),
    }


def study_hits(image_studies: list[str], image_text_keys: list[str], text_studies: list[str], text_keys: list[str]):
    """[N, M] hits: same study, or identical normalised report text."""
    same_study = np.asarray(image_studies)[:, None] == np.asarray(text_studies)[None, :]
    same_text = np.asarray(image_text_keys)[:, None] == np.asarray(text_keys)[None, :]
    return torch.from_numpy(same_study | same_text)


def positive_sets(labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """-> ([N, F] bool positive findings, [N] bool rows with any label). Uncertain (-1) and blank are not positive."""
    y = np.stack([np.asarray(v, dtype=float) for v in labels.values()], 1)  # [N, F]
    return y == 1, np.isfinite(y).any(1)


def label_precision_at_k(
    emb: torch.Tensor, labels: dict[str, np.ndarray], studies: list[str], *, ks=(1, 5, 10), block: int = 1024
) -> dict:
    """Similar-case retrieval: image -> image, precision@k of neighbours with exactly the query's findings.

    Neighbours from the query's own study are skipped (they are trivially similar); rows without any label are
    neither queries nor neighbours. ``chance`` is the expected precision of a random ranking.
    """
    pos, keep = positive_sets(labels)
    emb, pos = emb[torch.from_numpy(keep)], pos[keep]
    study = np.asarray(studies)[keep]
    n = len(study)
    k_max = min(max(ks), n - 1)
    if k_max < 1:
        return {"n_queries": int(n), **{f"P@{k}": None for k in ks}, "chance": None}
    _, sig = np.unique(pos, axis=0, return_inverse=True)
    sig = sig.ravel()
    same_sum = {k: 0.0 for k in ks}
    for start in range(0, n, block):
        q = slice(start, min(start + block, n))
        sims = emb[q] @ emb.t()  # [b, N]
        own = torch.from_numpy(study[q][:, None] == study[None, :])
        top = sims.masked_fill(own, float("-inf")).topk(k_max, dim=1).indices.numpy()  # [b, K]
        same = sig[top] == sig[q][:, None]
        for k in ks:
            same_sum[k] += same[:, : min(k, k_max)].mean(1).sum()
    frame = pd.DataFrame({"sig": sig, "study": study})
    own_study = frame.groupby("study")["sig"].transform("size").to_numpy()
    same_sig = frame.groupby("sig")["study"].transform("size").to_numpy()
    same_both = frame.groupby(["sig", "study"])["sig"].transform("size").to_numpy()
    chance = float(np.mean((same_sig - same_both) / np.maximum(n - own_study, 1)))
    return {"n_queries": int(n), **{f"P@{k}": float(same_sum[k] / n) for k in ks}, "chance": chance}
