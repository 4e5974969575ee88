"""Calibration of zero-shot scores: a score -> probability map fitted on validation, and how well it holds on test.

A fitted calibrator is a JSON-able dict (``{"method": "temperature", "temperature": T}``, ...), so a ``results.json``
can be re-applied to new scores with :func:`apply_calibrator`. Scores are probabilities in [0, 1]; the parametric
maps work on their logit, ``log(p / (1 - p))`` with ``p`` clipped to ``[EPS, 1 - EPS]``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from medclip.config import CALIBRATIONS
from medclip.errors import InputError
from medclip.registry import did_you_mean

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = CALIBRATIONS  # one list: the config validates against it too
EPS = 1e-6
_LOG_T_BOUNDS = (-7.0, 7.0)  # T in [1e-3, 1e3]: far past any temperature a CLIP logit scale needs
_PLATT_C = 1.0  # scikit-learn's default L2 strength: keeps a and b finite when validation is separable


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`CALIBRATION_METHODS`, else an InputError naming the allowed ones."""
    if method not in CALIBRATION_METHODS:
        hint = did_you_mean(method, CALIBRATION_METHODS)
        raise InputError(f"calibration method '{method}' is not one of {CALIBRATION_METHODS}.{hint}")
    return method


def logit(score: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of probabilities clipped to [EPS, 1 - EPS] (finite for scores of exactly 0 or 1)."""
    p = np.clip(np.asarray(score, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _fit_temperature(y: np.ndarray, z: np.ndarray) -> float:
    """T > 0 minimising the mean NLL of ``sigmoid(z / T)`` against y (searched on log T, bounded)."""

    def nll(log_t: float) -> float:
        zt = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, zt) - y * zt))

    res = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def fit_calibrator(y: np.ndarray, score: np.ndarray, *, method: str) -> dict | None:
    """Fit ``method`` on 0/1 labels -> a JSON-able calibrator dict; None when a class is missing (or no rows).

    temperature: ``sigmoid(logit(s) / T)``; platt: ``sigmoid(a * logit(s) + b)`` (L2-regularised logistic
    regression, C=1); isotonic: monotone step map of the raw score, linear between ``x`` / ``y`` knots and clipped
    outside them; none: the identity.
    """
    check_method(method)
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    if method == "none":
        return {"method": "none"}
    if len(np.unique(y)) < 2:
        return None
    if method == "temperature":
        return {"method": "temperature", "temperature": _fit_temperature(y, logit(score))}
    if method == "platt":
        lr = LogisticRegression(C=_PLATT_C).fit(logit(score)[:, None], y.astype(int))
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    if method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    raise InputError(f"calibration method '{method}' is not one of {CALIBRATION_METHODS}")


def apply_calibrator(calibrator: dict, score: np.ndarray) -> np.ndarray:
    """Calibrated probabilities [N] of scores [N] under a dict from :func:`fit_calibrator` (or results.json)."""
    method = check_method(calibrator.get("method", "<missing>"))
    score = np.asarray(score, dtype=float)
    if method == "none":
        return score.copy()
    if method == "temperature":
        return expit(logit(score) / calibrator["temperature"])
    if method == "platt":
        return expit(calibrator["a"] * logit(score) + calibrator["b"])
    if method == "isotonic":
        return np.interp(score, calibrator["x"], calibrator["y"])  # clamps outside the knots, like out_of_bounds="clip"
    raise InputError(f"calibration method '{method}' is not one of {CALIBRATION_METHODS}")


def reliability(y: np.ndarray, prob: np.ndarray, *, n_bins: int = 10) -> dict[str, list]:
    """Equal-width bins of [0, 1] (bin i holds ``i/n_bins <= p < (i+1)/n_bins``; the last bin includes 1.0).

    -> {"lower", "upper", "mean_predicted", "observed", "count"}, one entry per bin; mean predicted probability and
    observed fraction of positives are None for an empty bin.
    """
    if n_bins < 1:
        raise InputError(f"n_bins must be a positive integer, got {n_bins}")
    y, prob = np.asarray(y, dtype=float), np.clip(np.asarray(prob, dtype=float), 0.0, 1.0)
    idx = np.minimum((prob * n_bins).astype(int), n_bins - 1)  # [N] bin of each row
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=prob, minlength=n_bins) / count
        observed = np.bincount(idx, weights=y, minlength=n_bins) / count
    return {
        "lower": (np.arange(n_bins) / n_bins).tolist(),
        "upper": (np.arange(1, n_bins + 1) / n_bins).tolist(),
        "mean_predicted": [None if c == 0 else float(v) for v, c in zip(mean_p, count, strict=True)],
        "observed": [None if c == 0 else float(v) for v, c in zip(observed, count, strict=True)],
        "count": count.tolist(),
    }


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, *, n_bins: int = 10) -> float | None:
    """ECE = sum over bins b of (n_b / N) * |observed fraction of positives in b - mean predicted p in b|.

    Bins as in :func:`reliability` (equal width, empty bins contribute 0); None without rows.
    """
    rel = reliability(y, prob, n_bins=n_bins)
    n = sum(rel["count"])
    if n == 0:
        return None
    return float(
        sum(
            c / n * abs(o - p)
            for c, o, p in zip(rel["count"], rel["observed"], rel["mean_predicted"], strict=True)
            if c
        )
    )


def brier_score(y: np.ndarray, prob: np.ndarray) -> float | None:
    """Mean squared difference between probability and 0/1 label; None without rows."""
    y, prob = np.asarray(y, dtype=float), np.asarray(prob, dtype=float)
    return float(np.mean((prob - y) ** 2)) if len(y) else None


def calibration_summary(
    y: np.ndarray,
    score: np.ndarray,
    *,
    val_y: np.ndarray | None,
    val_score: np.ndarray | None,
    method: str,
    n_bins: int = 10,
) -> dict:
    """Fit ``method`` on validation rows, score test rows before / after -> {"method", "calibrator", "ece_before",
    "ece_after", "brier_before", "brier_after", "reliability_before", "reliability_after"} (+ "reason" when no
    calibrator could be fitted: the "after" entries are then None)."""
    out = {
        "method": check_method(method),
        "calibrator": None,
        "ece_before": expected_calibration_error(y, score, n_bins=n_bins),
        "brier_before": brier_score(y, score),
        "reliability_before": reliability(y, score, n_bins=n_bins),
        "ece_after": None,
        "brier_after": None,
        "reliability_after": None,
    }
    if val_y is None or val_score is None:
        return out | {"reason": "no validation split: a calibrator is never fitted on test rows"}
    calibrator = fit_calibrator(val_y, val_score, method=method)
    if calibrator is None:
        return out | {"reason": "validation split lacks a positive or a negative case"}
    prob = apply_calibrator(calibrator, score)
    return out | {
        "calibrator": calibrator,
        "ece_after": expected_calibration_error(y, prob, n_bins=n_bins),
        "brier_after": brier_score(y, prob),
        "reliability_after": reliability(y, prob, n_bins=n_bins),
    }


def plot_reliability_curves(summaries: dict[str, dict], out_path: str | Path, *, n_bins: int = 10) -> Path | None:
    """One panel per finding (finding -> :func:`calibration_summary`): reliability before / after and the diagonal.

    Drawn on a ``matplotlib.figure.Figure`` (no pyplot state), like :mod:`medclip.eval.plots`; None when no finding
    has a labelled test row.
    """
    summaries = {f: c for f, c in summaries.items() if any(c["reliability_before"]["count"])}
    if not summaries:
        logger.info("no finding has labelled test rows: reliability plot skipped")
        return None
    ncols = min(4, len(summaries))  # the panel grid of plots.py: up to 4 per row
    nrows = -(-len(summaries) // ncols)
    fig = Figure(figsize=(3.2 * ncols, 3.2 * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(summaries) :]:
        ax.set_axis_off()
    for ax, (finding, cal) in zip(axes, summaries.items(), strict=False):  # spare axes are off
        for name, when, color in (("raw", "before", "tab:orange"), (cal["method"], "after", "tab:blue")):
            rel, ece = cal[f"reliability_{when}"], cal[f"ece_{when}"]
            if rel is None:
                continue
            pts = [(p, o) for p, o in zip(rel["mean_predicted"], rel["observed"], strict=True) if p is not None]
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=color, label=f"{name}, ECE {ece:.3f}")
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set(title=finding, xlabel="mean predicted probability", ylabel="observed fraction positive")
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"reliability on the test split ({n_bins} equal-width bins)")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
