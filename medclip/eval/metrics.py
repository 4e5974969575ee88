"""Binary metrics with seeded bootstrap CIs, and threshold choice for F1 / MCC.

AUROC and AUPRC are computed from per-tie-group weights, so one vectorised pass scores a whole block of bootstrap
resamples (a resample is a vector of counts per original row). With unit weights the numbers equal scikit-learn's
``roc_auc_score`` and ``average_precision_score``.
"""

from __future__ import annotations

import numpy as np

from medclip.errors import InputError

LABELLED = (0, 1)
THRESHOLD_METRICS = ("mcc", "f1")
_BLOCK_ELEMENTS = 20_000_000  # bootstrap rows x samples per block: bounds memory to a few hundred MB


def labelled(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep rows with a 0/1 label (blank and uncertain -1 rows are ignored) -> (y int [n], score [n])."""
    y_true, score = np.asarray(y_true, dtype=float), np.asarray(score, dtype=float)
    keep = np.isin(y_true, LABELLED) & np.isfinite(score)
    return y_true[keep].astype(int), score[keep]


def _tie_groups(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (unique scores ascending [G], group of each row [n])."""
    return np.unique(score, return_inverse=True)


def weighted_auroc_auprc(pos_w: np.ndarray, neg_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision from weights per tie group. pos_w, neg_w: [B, G], groups by ascending score.

    Ties count half for AUROC; AP steps at distinct thresholds (as scikit-learn does). NaN where a class is absent.
    """
    n_pos, n_neg = pos_w.sum(1), neg_w.sum(1)  # [B]
    neg_below = np.cumsum(neg_w, 1) - neg_w
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (pos_w * (neg_below + 0.5 * neg_w)).sum(1) / (n_pos * n_neg)
        tp, fp = np.cumsum(pos_w[:, ::-1], 1), np.cumsum(neg_w[:, ::-1], 1)  # thresholds high -> low
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 1.0)
        ap = (pos_w[:, ::-1] * precision).sum(1) / n_pos
    bad = (n_pos == 0) | (n_neg == 0)
    auroc[bad], ap[bad] = np.nan, np.nan
    return auroc, ap


def auroc_auprc(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Point AUROC and AUPRC of 0/1 labels (NaN when one class is missing)."""
    _, group = _tie_groups(score)
    n_groups = int(group.max()) + 1 if len(group) else 0
    pos = np.bincount(group, weights=y, minlength=n_groups)[None]
    neg = np.bincount(group, weights=1 - y, minlength=n_groups)[None]
    auroc, ap = weighted_auroc_auprc(pos, neg)
    return float(auroc[0]), float(ap[0])


def bootstrap_weights(y: np.ndarray, score: np.ndarray, *, n_resamples: int, seed: int):
    """Yield ([b, G] positive weights, [b, G] negative weights, unique scores) blocks of seeded resamples."""
    uniq, group = _tie_groups(score)
    n, n_groups = len(y), len(uniq)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n, n_groups, 1))
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))  # [b, n] resampled rows
        flat = (np.arange(b)[:, None] * n_groups + group[idx]).ravel()
        total = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups)
        pos = np.bincount(flat, weights=y[idx].ravel(), minlength=b * n_groups).reshape(b, n_groups)
        yield pos, total - pos, uniq


def _ci(values: np.ndarray, alpha: float) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    return [float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))]


def bootstrap_auroc_auprc(
    y: np.ndarray, score: np.ndarray, *, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Percentile bootstrap CIs -> {"auroc_ci", "auprc_ci", "n_resamples"} (resamples missing a class are dropped)."""
    if n_resamples <= 0 or len(y) == 0:
        return {"auroc_ci": None, "auprc_ci": None, "n_resamples": 0}
    aurocs, aps = [], []
    for pos, neg, _ in bootstrap_weights(y, score, n_resamples=n_resamples, seed=seed):
        a, p = weighted_auroc_auprc(pos, neg)
        aurocs.append(a)
        aps.append(p)
    auroc, ap = np.concatenate(aurocs), np.concatenate(aps)
    return {"auroc_ci": _ci(auroc, alpha), "auprc_ci": _ci(ap, alpha), "n_resamples": int(np.isfinite(auroc).sum())}


def bootstrap_macro_auroc(
    labels: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[float] | None:
    """Percentile CI of the macro AUROC: every resample draws the same rows (images) for every finding, so the CI
    holds the findings' correlation; a finding missing a class in a resample is left out of that resample's mean."""
    findings = [f for f in scores if f in labels]
    if n_resamples <= 0 or not findings:
        return None
    n = len(scores[findings[0]])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        per = []
        for f in findings:
            y, s = labelled(np.asarray(labels[f])[idx], np.asarray(scores[f])[idx])
            if len(y) and 0 < y.sum() < len(y):
                per.append(auroc_auprc(y, s)[0])
        values.append(np.mean(per) if per else np.nan)
    return _ci(np.asarray(values, dtype=float), alpha)


def bootstrap_mean_ci(values: np.ndarray, *, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05):
    """Percentile CI of the mean of per-row values (e.g. 0/1 correct for an accuracy); None without rows."""
    values = np.asarray(values, dtype=float)
    if n_resamples <= 0 or not len(values):
        return None
    idx = np.random.default_rng(seed).integers(0, len(values), size=(n_resamples, len(values)))
    return _ci(values[idx].mean(1), alpha)


def roc_band(
    y: np.ndarray, score: np.ndarray, *, n_resamples: int = 200, seed: int = 0, alpha: float = 0.05, points: int = 101
) -> dict[str, np.ndarray]:
    """ROC curve on an FPR grid with a bootstrap band -> {"fpr", "tpr", "lo", "hi"} (each [points])."""
    grid = np.linspace(0.0, 1.0, points)

    def curve(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
        tp, fp = np.cumsum(pos[::-1]), np.cumsum(neg[::-1])
        if tp[-1] == 0 or fp[-1] == 0:
            return np.full(points, np.nan)
        return np.interp(grid, np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]])

    _, group = _tie_groups(score)
    n_groups = int(group.max()) + 1
    tpr = curve(
        np.bincount(group, weights=y, minlength=n_groups), np.bincount(group, weights=1 - y, minlength=n_groups)
    )
    curves = [
        curve(p, n)
        for pos, neg, _ in bootstrap_weights(y, score, n_resamples=n_resamples, seed=seed)
        for p, n in zip(pos, neg, strict=True)
    ]
    curves = np.array([c for c in curves if np.isfinite(c).all()]) if curves else np.empty((0, points))
    lo = np.quantile(curves, alpha / 2, axis=0) if len(curves) else tpr
    hi = np.quantile(curves, 1 - alpha / 2, axis=0) if len(curves) else tpr
    return {"fpr": grid, "tpr": tpr, "lo": lo, "hi": hi}


def _confusion_by_threshold(y: np.ndarray, score: np.ndarray):
    """Counts when predicting ``score >= t`` for every distinct t (descending) -> (thresholds, tp, fp, fn, tn)."""
    order = np.argsort(-score, kind="stable")
    s, yy = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last row of each tie group
    tp, fp = np.cumsum(yy)[last], np.cumsum(1 - yy)[last]
    n_pos, n_neg = yy.sum(), len(yy) - yy.sum()
    return s[last], tp.astype(float), fp.astype(float), n_pos - tp.astype(float), n_neg - fp.astype(float)


def _f1_mcc(tp, fp, fn, tn) -> tuple[np.ndarray, np.ndarray]:
    tp, fp, fn, tn = (np.asarray(v, dtype=float) for v in (tp, fp, fn, tn))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1.0), 0.0)
    return f1, mcc


def choose_threshold(y: np.ndarray, score: np.ndarray, *, metric: str = "mcc") -> float | None:
    """The score threshold (predict positive when ``score >= t``) that maximises ``metric`` on (y, score)."""
    if metric not in THRESHOLD_METRICS:
        raise InputError(f"threshold metric '{metric}' is not one of {THRESHOLD_METRICS}")
    if len(np.unique(y)) < 2:
        return None
    thresholds, tp, fp, fn, tn = _confusion_by_threshold(y, score)
    f1, mcc = _f1_mcc(tp, fp, fn, tn)
    return float(thresholds[int(np.argmax(mcc if metric == "mcc" else f1))])


def f1_mcc_at(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """F1, Matthews correlation and accuracy of ``score >= threshold`` against 0/1 labels."""
    pred = score >= threshold
    tp, fp = float((pred & (y == 1)).sum()), float((pred & (y == 0)).sum())
    fn, tn = float((~pred & (y == 1)).sum()), float((~pred & (y == 0)).sum())
    f1, mcc = _f1_mcc(tp, fp, fn, tn)
    return {"f1": float(f1), "mcc": float(mcc), "accuracy": (tp + tn) / max(tp + fp + fn + tn, 1.0)}


def macro(values: list[float | None]) -> float | None:
    """Mean over the values that exist (None when none do)."""
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None
