"""Linear probes on frozen image embeddings: one logistic regression per finding (one-vs-rest for multi-label).

The regularisation strength C is chosen on the validation split (AUROC), then the probe is scored on the evaluation
split with bootstrap CIs. Settings: fractions of the labelled training rows (stratified) and k-shot (k positives and
k negatives per finding). Rows whose label is blank or uncertain (-1) are left out of that finding's probe.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from medclip.errors import InputError
from medclip.eval.metrics import auroc_auprc, bootstrap_auroc_auprc, labelled, macro

logger = logging.getLogger(__name__)

FRACTIONS = (0.01, 0.1, 1.0)
SHOTS = (1, 2, 4, 8, 16)
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _rows(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (indices of positive rows, indices of negative rows) among 0/1-labelled rows."""
    y = np.asarray(y, dtype=float)
    return np.flatnonzero(y == 1), np.flatnonzero(y == 0)


def fraction_indices(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray | None:
    """A stratified ``fraction`` of the labelled rows, at least one of each class (None when a class is missing)."""
    pos, neg = _rows(y)
    if not len(pos) or not len(neg):
        return None
    n_pos, n_neg = max(1, round(fraction * len(pos))), max(1, round(fraction * len(neg)))
    return np.sort(np.r_[rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)])


def shot_indices(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """k positive and k negative rows (None when a class has fewer than k)."""
    pos, neg = _rows(y)
    if len(pos) < k or len(neg) < k:
        return None
    return np.sort(np.r_[rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)])


def fit_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, c_grid=C_GRID
) -> tuple[LogisticRegression, float, float | None]:
    """Fit one probe per C; keep the best on validation AUROC -> (model, C, val AUROC). Ties go to the smaller C.

    Without both classes in the validation labels there is nothing to choose on, and C = 1 is used.
    """
    y_val = np.asarray(y_val, dtype=float)
    mask = np.isin(y_val, (0, 1))
    yv, xv = y_val[mask].astype(int), x_val[mask]
    can_choose = len(np.unique(yv)) == 2
    best: tuple[float, float, LogisticRegression] | None = None
    for c in c_grid if can_choose else (1.0,):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, solver="newton-cholesky", max_iter=500).fit(x_train, y_train)
        score = auroc_auprc(yv, model.decision_function(xv))[0] if can_choose else np.nan
        if best is None or score > best[0]:
            best = (score, c, model)
    score, c, model = best
    return model, float(c), (float(score) if np.isfinite(score) else None)


def _score(model, x_test, y_test, *, n_bootstrap: int, seed: int) -> dict:
    y, s = labelled(y_test, model.decision_function(x_test))
    out: dict = {"auroc": None, "auroc_ci": None, "n_test": int(len(y))}
    if len(np.unique(y)) == 2:
        out["auroc"] = auroc_auprc(y, s)[0]
        out["auroc_ci"] = bootstrap_auroc_auprc(y, s, n_resamples=n_bootstrap, seed=seed)["auroc_ci"]
    return out


def _setting(index: int, pick, data: dict, findings: list[str], *, c_grid, n_bootstrap: int, seed: int) -> dict:
    """One training-set regime (e.g. "10%" or "4-shot") over every finding."""
    per = {}
    for j, f in enumerate(findings):
        y_tr = np.asarray(data["train_labels"][f], dtype=float)
        idx = pick(y_tr, np.random.default_rng([seed, index, j]))
        if idx is None:
            per[f] = {"auroc": None, "auroc_ci": None, "n_train": 0, "note": "too few labelled training rows"}
            continue
        model, c, val_auroc = fit_probe(
            data["train_x"][idx], y_tr[idx].astype(int), data["val_x"], data["val_labels"][f], c_grid=c_grid
        )
        per[f] = {
            **_score(model, data["test_x"], data["test_labels"][f], n_bootstrap=n_bootstrap, seed=seed),
            "C": c,
            "val_auroc": val_auroc,
            "n_train": int(len(idx)),
            "train_positives": int(y_tr[idx].sum()),
        }
    return {"per_finding": per, "macro_auroc": macro([m["auroc"] for m in per.values()])}


def linear_probe(
    train: tuple[np.ndarray, dict[str, np.ndarray]],
    val: tuple[np.ndarray, dict[str, np.ndarray]],
    test: tuple[np.ndarray, dict[str, np.ndarray]],
    *,
    fractions=FRACTIONS,
    shots=SHOTS,
    c_grid=C_GRID,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Probe every finding labelled in all three splits. Each split is (embeddings [N, D], finding -> [N] labels).

    Returns {"settings": {"1%": {...}, ..., "16-shot": {...}}, "findings": [...]}; each setting holds per-finding
    AUROC (+ CI, chosen C, training size) and a macro AUROC over the findings it could fit.
    """
    findings = [f for f in test[1] if f in train[1] and f in val[1]]
    if not findings:
        raise InputError("linear probe: no finding is labelled in the train, val and test splits alike")
    data = {
        "train_x": np.asarray(train[0]),
        "train_labels": train[1],
        "val_x": np.asarray(val[0]),
        "val_labels": val[1],
        "test_x": np.asarray(test[0]),
        "test_labels": test[1],
    }
    regimes = [(f"{fr * 100:g}%", lambda y, rng, fr=fr: fraction_indices(y, fr, rng)) for fr in fractions]
    regimes += [(f"{k}-shot", lambda y, rng, k=k: shot_indices(y, k, rng)) for k in shots]
    settings = {}
    for i, (name, pick) in enumerate(regimes):
        settings[name] = _setting(i, pick, data, findings, c_grid=c_grid, n_bootstrap=n_bootstrap, seed=seed)
        logger.info("linear probe %s: macro AUROC %s", name, settings[name]["macro_auroc"])
    return {
        "settings": settings,
        "findings": findings,
        "c_grid": list(c_grid),
        "seed": seed,
        "n_train": int(len(data["train_x"])),
        "n_val": int(len(data["val_x"])),
        "n_test": int(len(data["test_x"])),
    }
