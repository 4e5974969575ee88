"""Zero-shot classification from prompt ensembles: multi-label (positive vs negative prompts) or multi-class.

Metrics per finding: AUROC / AUPRC with seeded bootstrap 95 % CIs, F1 and MCC at a threshold chosen on the validation
split, macro averages, and a polarity self-check that flags findings scored below chance (inverted prompts).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from medclip.config import EVAL_MODES
from medclip.errors import InputError
from medclip.eval.metrics import (
    auroc_auprc,
    bootstrap_auroc_auprc,
    bootstrap_macro_auroc,
    bootstrap_mean_ci,
    choose_threshold,
    f1_mcc_at,
    labelled,
    macro,
)

logger = logging.getLogger(__name__)

MODES = EVAL_MODES


def class_embeddings(prompts: dict[str, dict[str, list[str]]], encode) -> dict[str, torch.Tensor]:
    """finding -> [2, D] (positive, negative) prompt embeddings, each the normalised mean of its templates.

    ``encode(list[str]) -> [N, D]`` normalised text embeddings.
    """
    texts = list(
        dict.fromkeys(t for sides in prompts.values() for side in ("positive", "negative") for t in sides[side])
    )
    row = {t: i for i, t in enumerate(texts)}
    emb = encode(texts) if texts else None  # one batched call for every prompt of every finding: [T, D]
    out = {}
    for finding, sides in prompts.items():
        rows = []
        for side in ("positive", "negative"):
            idx = [row[t] for t in sides[side]]
            rows.append(F.normalize(emb[idx].mean(0), dim=-1) if idx else None)
        if rows[1] is None:  # no negative prompts: score against nothing (pure similarity)
            rows[1] = torch.zeros_like(rows[0])
        out[finding] = torch.stack(rows)
    return out


def zero_shot_scores(
    image_emb: torch.Tensor, classes: dict[str, torch.Tensor], logit_scale: float
) -> dict[str, np.ndarray]:
    """finding -> [N] probability of the positive prompt in a softmax over (positive, negative)."""
    scores = {}
    for finding, emb in classes.items():
        logits = logit_scale * image_emb @ emb.t()  # [N, 2]
        scores[finding] = logits.softmax(-1)[:, 0].numpy()
    return scores


def multiclass_scores(
    image_emb: torch.Tensor, classes: dict[str, torch.Tensor], logit_scale: float
) -> dict[str, np.ndarray]:
    """finding -> [N] probability of that class in a softmax over every class's positive prompt embedding."""
    names = list(classes)
    positive = torch.stack([classes[n][0] for n in names])  # [C, D]
    probs = (logit_scale * image_emb @ positive.t()).softmax(-1).numpy()  # [N, C]
    return {n: probs[:, i] for i, n in enumerate(names)}


def scores_for_mode(image_emb: torch.Tensor, classes: dict[str, torch.Tensor], logit_scale: float, *, mode: str):
    if mode == "multilabel":
        return zero_shot_scores(image_emb, classes, logit_scale)
    if mode == "multiclass":
        return multiclass_scores(image_emb, classes, logit_scale)
    raise InputError(f"zero-shot mode '{mode}' is not one of {MODES}")


def binary_metrics(
    y_true: np.ndarray,
    score: np.ndarray,
    *,
    n_bootstrap: int = 0,
    seed: int = 0,
    threshold: float | None = None,
) -> dict:
    """AUROC / AUPRC (+ bootstrap CIs) and F1 / MCC at ``threshold``, over rows with a 0/1 label."""
    y, s = labelled(y_true, score)
    out: dict = {"auroc": None, "auprc": None, "n": int(len(y)), "positives": int(y.sum())}
    if len(np.unique(y)) == 2:
        out["auroc"], out["auprc"] = auroc_auprc(y, s)
        if n_bootstrap:
            ci = bootstrap_auroc_auprc(y, s, n_resamples=n_bootstrap, seed=seed)
            out["auroc_ci"], out["auprc_ci"] = ci["auroc_ci"], ci["auprc_ci"]
    if threshold is not None and len(y):
        out["threshold"] = float(threshold)
        out.update(f1_mcc_at(y, s, threshold))
    return out


def polarity_check(per_finding: dict[str, dict]) -> dict[str, str]:
    """finding -> warning for every finding with AUROC < 0.5 (its prompts probably say the opposite)."""
    warnings = {}
    for finding, m in per_finding.items():
        if m.get("auroc") is None or m["auroc"] >= 0.5:
            continue
        ci = m.get("auroc_ci")
        doubt = f" (its 95% CI reaches {ci[1]:.3f}, so it may also be chance)" if ci and ci[1] >= 0.5 else ""
        warnings[finding] = (
            f"{finding}: AUROC {m['auroc']:.3f} < 0.5, below chance; its prompts are probably "
            f"inverted (positive and negative phrasings swapped) - check the prompt YAML"
            f"{doubt}"
        )
    return warnings


def _thresholds(val_scores, val_labels, findings, metric: str) -> dict[str, float | None]:
    out = {}
    for f in findings:
        if val_scores is None or f not in val_scores or f not in val_labels:
            out[f] = None
            continue
        out[f] = choose_threshold(*labelled(val_labels[f], val_scores[f]), metric=metric)
    return out


def multiclass_accuracy(
    scores: dict[str, np.ndarray], labels: dict[str, np.ndarray], *, n_bootstrap: int = 0, seed: int = 0
) -> dict:
    """Top-1 accuracy over rows with exactly one positive class (and every class labelled 0/1), with a bootstrap CI
    and the per-class accuracy (recall) when ``n_bootstrap``."""
    names = [n for n in scores if n in labels]
    if not names:
        return {"accuracy": None, "n": 0}
    y = np.stack([np.asarray(labels[n], dtype=float) for n in names], 1)  # [N, C]
    keep = np.isin(y, (0, 1)).all(1) & ((np.nan_to_num(y) == 1).sum(1) == 1)
    if not keep.any():
        return {"accuracy": None, "n": 0}
    pred = np.stack([scores[n] for n in names], 1)[keep].argmax(1)
    truth = y[keep].argmax(1)
    correct = (pred == truth).astype(float)
    return {
        "accuracy": float(correct.mean()),
        "accuracy_ci": bootstrap_mean_ci(correct, n_resamples=n_bootstrap, seed=seed),
        "n": int(keep.sum()),
        "per_class": {n: float(correct[truth == i].mean()) for i, n in enumerate(names) if (truth == i).any()},
    }


def laterality(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """Left / right mix-ups, for every finding pair named ``X_left`` / ``X_right``.

    Among the images labelled with exactly one of the two, the AUROC of ``score(X_left) - score(X_right)`` for "it
    is the left one": 1.0 when every left case scores more left than every right case, 0.5 when the model cannot
    tell the sides apart. -> {"pairs": {X: {"auroc", "n_left", "n_right"}}, "macro_auroc"}.
    """
    pairs = {}
    for name in scores:
        if not name.endswith("_left") or f"{name[:-5]}_right" not in scores:
            continue
        base, right = name[:-5], f"{name[:-5]}_right"
        if name not in labels or right not in labels:
            continue
        left_pos, right_pos = labels[name] == 1, labels[right] == 1
        one = left_pos ^ right_pos
        if left_pos[one].sum() == 0 or right_pos[one].sum() == 0:
            continue
        diff = scores[name][one] - scores[right][one]
        auroc, _ = auroc_auprc(left_pos[one].astype(float), diff)
        pairs[base] = {"auroc": auroc, "n_left": int(left_pos[one].sum()), "n_right": int(right_pos[one].sum())}
    return {"pairs": pairs, "macro_auroc": macro([p["auroc"] for p in pairs.values()])} if pairs else {}


def evaluate_zero_shot(
    scores: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    *,
    val_scores: dict[str, np.ndarray] | None = None,
    val_labels: dict[str, np.ndarray] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    threshold_metric: str = "mcc",
    mode: str = "multilabel",
) -> dict:
    """Per-finding metrics, macro averages and the polarity self-check.

    Thresholds for F1 / MCC are chosen on (``val_scores``, ``val_labels``) to maximise ``threshold_metric``; without
    them F1 / MCC are left out rather than tuned on the evaluation rows.
    """
    findings = [f for f in scores if f in labels]
    thresholds = _thresholds(val_scores, val_labels or {}, findings, threshold_metric)
    per = {
        f: binary_metrics(labels[f], scores[f], n_bootstrap=n_bootstrap, seed=seed, threshold=thresholds[f])
        for f in findings
    }
    warnings = polarity_check(per)
    for message in warnings.values():
        logger.warning("polarity check: %s", message)
    out = {
        "mode": mode,
        "per_finding": per,
        "macro_auroc": macro([m["auroc"] for m in per.values()]),
        "macro_auroc_ci": bootstrap_macro_auroc(labels, scores, n_resamples=n_bootstrap, seed=seed),
        "macro_auprc": macro([m["auprc"] for m in per.values()]),
        "macro_f1": macro([m.get("f1") for m in per.values()]),
        "macro_mcc": macro([m.get("mcc") for m in per.values()]),
        "threshold_metric": threshold_metric,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "polarity_warnings": list(warnings),
        "polarity_messages": list(warnings.values()),
    }
    if mode == "multiclass":
        out["multiclass"] = multiclass_accuracy(scores, labels, n_bootstrap=n_bootstrap, seed=seed)
    return out
