"""Screening-grade metrics of zero-shot scores: a fixed operating point, calibration and subgroup gaps.

Everything tuned (the threshold, the calibrator) is fitted on the validation split and only measured on the test
split. CIs are seeded 95 % percentile bootstraps over test rows; subgroup CIs resample rows within each group.
:func:`screening_report` returns a JSON-able dict; :func:`screening_markdown` and :func:`plot_reliability` render it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from medclip.errors import InputError
from medclip.eval.calibration import calibration_summary, check_method, plot_reliability_curves
from medclip.eval.formatting import fmt, with_ci
from medclip.eval.metrics import auroc_auprc, bootstrap_weights, labelled
from medclip.eval.metrics import weighted_auroc_auprc as _weighted_auroc
from medclip.registry import did_you_mean

logger = logging.getLogger(__name__)

RULES = ("sensitivity", "specificity", "youden")
RATES = ("sensitivity", "specificity", "ppv", "npv")
GAP_METRICS = ("auroc", "sensitivity", "specificity")
ALPHA = 0.05  # two-sided: 95 % CIs
_RULE_HINT = "write 'sensitivity:0.95', 'specificity:0.90' or 'youden'"


def _ci(values: np.ndarray) -> list[float] | None:
    """Percentile (1 - ALPHA) interval of the finite values; None when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return np.quantile(values, [ALPHA / 2, 1 - ALPHA / 2]).tolist() if len(values) else None


def parse_rule(rule: str) -> tuple[str, float | None]:
    """``"sensitivity:0.95"`` / ``"specificity:0.9"`` / ``"youden"`` -> (name, target or None)."""
    name, sep, target = str(rule).strip().partition(":")
    if name not in RULES:
        raise InputError(f"operating-point rule '{rule}': '{name}' is not one of {RULES}.{did_you_mean(name, RULES)}")
    if name == "youden":
        if sep:
            raise InputError(f"operating-point rule '{rule}': youden takes no target; {_RULE_HINT}")
        return name, None
    try:
        value = float(target)
    except ValueError:
        raise InputError(f"operating-point rule '{rule}' needs a numeric target after ':'; {_RULE_HINT}") from None
    if not 0.0 < value < 1.0:
        raise InputError(f"operating-point rule '{rule}': target {value} must lie strictly between 0 and 1")
    return name, value


def choose_operating_point(y: np.ndarray, score: np.ndarray, *, rule: str) -> float | None:
    """Threshold t (predict positive when ``score >= t``) on 0/1 labels by ``rule``; None when a class is missing.

    Candidates are the distinct scores. sensitivity:x -> the highest t with sensitivity >= x; specificity:x -> the
    lowest t with specificity >= x (just above the top score, predicting nothing positive, when even that fails);
    youden -> the t maximising sensitivity + specificity - 1 (the highest such t on ties).
    """
    name, target = parse_rule(rule)
    y, score = np.asarray(y, dtype=int), np.asarray(score, dtype=float)
    if len(np.unique(y)) < 2:
        return None
    fpr, sens, thresholds = roc_curve(y, score, drop_intermediate=False)
    sens, spec, thresholds = sens[1:], 1 - fpr[1:], thresholds[1:]  # distinct scores, descending (row 0 is +inf)
    if name == "sensitivity":
        return float(thresholds[np.flatnonzero(sens >= target)[0]])  # the lowest threshold has sensitivity 1
    if name == "specificity":
        ok = np.flatnonzero(spec >= target)
        return float(thresholds[ok[-1]]) if len(ok) else float(np.nextafter(thresholds[0], np.inf))
    if name == "youden":
        return float(thresholds[int(np.argmax(sens + spec - 1))])
    raise InputError(f"operating-point rule '{rule}' is not one of {RULES}")


def bayes_ppv_npv(sens, spec, prevalence: float) -> tuple[np.ndarray, np.ndarray]:
    """PPV = sens p / (sens p + (1 - spec)(1 - p)), NPV = spec (1 - p) / (spec (1 - p) + (1 - sens) p); NaN on 0/0."""
    sens, spec, p = np.asarray(sens, dtype=float), np.asarray(spec, dtype=float), float(prevalence)
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = sens * p / (sens * p + (1 - spec) * (1 - p))
        npv = spec * (1 - p) / (spec * (1 - p) + (1 - sens) * p)
    return ppv, npv


def _counts(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, int]:
    pred, pos = score >= threshold, y == 1
    tp, fp, fn = int((pred & pos).sum()), int((pred & ~pos).sum()), int((~pred & pos).sum())
    return {"tp": tp, "fp": fp, "tn": int(len(y)) - tp - fp - fn, "fn": fn}


def _rates(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV of counts (scalars or [B] arrays); NaN where a denominator is 0."""
    tp, fp, fn, tn = (np.asarray(v, dtype=float) for v in (tp, fp, fn, tn))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }


def _num(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _resampled(
    y: np.ndarray, score: np.ndarray, threshold: float | None, *, n_resamples: int, seed: int, auroc: bool = True
) -> dict:
    """Seeded row resamples -> {"auroc": [B]} (when ``auroc``) plus, with a threshold, the :func:`_rates` as [B]."""
    if not auroc and threshold is not None:  # two tie groups instead of one per distinct score; the same row draws
        score, threshold = (score >= threshold).astype(float), 1.0
    aurocs, counts = [], []
    if n_resamples > 0 and len(y):
        for pos, neg, uniq in bootstrap_weights(y, score, n_resamples=n_resamples, seed=seed):  # [b, G] each
            if auroc:
                aurocs.append(_weighted_auroc(pos, neg)[0])
            if threshold is not None:
                k = int(
                    np.searchsorted(uniq, threshold)
                )  # uniq ascending: tie groups k, k+1, ... have score >= threshold
                tp, fp = pos[:, k:].sum(1), neg[:, k:].sum(1)
                counts.append(np.stack([tp, fp, pos.sum(1) - tp, neg.sum(1) - fp]))  # [4, b]: tp, fp, fn, tn
    out = {"auroc": np.concatenate(aurocs) if aurocs else np.empty(0)}
    if threshold is not None:
        out |= _rates(*(np.concatenate(counts, 1) if counts else np.empty((4, 0))))
    return out


def operating_point_metrics(
    y: np.ndarray, score: np.ndarray, threshold: float, *, prevalences=(), n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """``score >= threshold`` on 0/1 labels -> {"test": {n, positives, tp, fp, tn, fn, sensitivity, specificity,
    ppv, npv, each with a 95 % CI "<name>_ci"}, "at_prevalence": [{prevalence, ppv, ppv_ci, npv, npv_ci}]}.

    PPV / NPV at a prevalence follow Bayes (:func:`bayes_ppv_npv`); their CIs come from the same resamples.
    """
    counts = _counts(y, score, threshold)
    point = _rates(counts["tp"], counts["fp"], counts["fn"], counts["tn"])
    boot = _resampled(y, score, threshold, n_resamples=n_bootstrap, seed=seed, auroc=False)
    test: dict = {"n": int(len(y)), "positives": int(y.sum()), **counts}
    for key in RATES:
        test[key], test[f"{key}_ci"] = _num(point[key]), _ci(boot[key])
    at_prevalence = []
    for p in prevalences:
        ppv, npv = bayes_ppv_npv(point["sensitivity"], point["specificity"], p)
        ppv_b, npv_b = bayes_ppv_npv(boot["sensitivity"], boot["specificity"], p)
        at_prevalence.append(
            {
                "prevalence": p,
                "ppv": _num(ppv),
                "ppv_ci": _ci(ppv_b),
                "npv": _num(npv),
                "npv_ci": _ci(npv_b),
            }
        )
    return {"test": test, "at_prevalence": at_prevalence}


def _group_entry(y, s, threshold, *, n_bootstrap, seed, min_positives, min_negatives) -> tuple[dict, dict]:
    """-> (the JSON entry of one group, its bootstrap samples per gap metric)."""
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    entry: dict = {"n": int(len(y)), "positives": n_pos}
    small = [("positives", n_pos, min_positives), ("negatives", n_neg, min_negatives)]
    reasons = [f"too few {kind} ({have} < {need})" for kind, have, need in small if have < need]
    if reasons:
        return entry | {"judged": False, "reason": "; ".join(reasons)}, {}
    boot = _resampled(y, s, threshold, n_resamples=n_bootstrap, seed=seed)
    entry |= {"judged": True, "auroc": _num(auroc_auprc(y, s)[0]), "auroc_ci": _ci(boot["auroc"])}
    point = _rates(**_counts(y, s, threshold)) if threshold is not None else {}
    for key in ("sensitivity", "specificity"):
        entry[key] = _num(point[key]) if point else None
        entry[f"{key}_ci"] = _ci(boot[key]) if point else None
    return entry, boot


def _gap(entries: dict[str, dict], samples: dict[str, dict], metric: str) -> dict | None:
    """Largest - smallest ``metric`` among judged groups, with the CI of that pair's difference; None under 2."""
    values = {g: e[metric] for g, e in entries.items() if e.get("judged") and e.get(metric) is not None}
    if len(values) < 2:
        return None
    ranked = sorted(values, key=values.get)  # stable: on a tie, low and high are still two different groups
    low, high = ranked[0], ranked[-1]
    # the CI is of the named pair's signed difference: a resampled max - min is >= 0 even between equal groups
    ci = _ci(samples[high][metric] - samples[low][metric])
    flagged = ci is not None and (ci[0] > 0 or ci[1] < 0)
    return {"gap": values[high] - values[low], "high": high, "low": low, "ci": ci, "flagged": bool(flagged)}


def _as_groups(raw, n: int, column: str) -> np.ndarray:
    """Group values as strings, "" for unknown (None, NaN, "")."""
    values = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in raw])
    if len(values) != n:
        raise InputError(f"group column '{column}' has {len(values)} values for {n} scores; they must line up")
    return values


def subgroup_metrics(
    y_true: np.ndarray,
    score: np.ndarray,
    groups: dict[str, np.ndarray],
    *,
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_positives: int = 5,
    min_negatives: int = 5,
) -> dict:
    """Per column and group value: n, positives, AUROC and sensitivity / specificity at ``threshold`` (+ CIs), and
    per metric the largest gap among judged groups (``flagged`` when its 95 % CI excludes 0).

    ``y_true`` (1 / 0 / -1 / NaN; only 0/1 rows count), ``score`` and every column line up row by row; unknown values
    form an excluded bucket. -> {"columns": {column: {"groups": {value: entry}, "unknown": {"n", "positives"},
    "gaps": {metric: {"gap", "high", "low", "ci", "flagged"} or None}}}, "largest_flagged_gap": {"column",
    "metric", "gap", "high", "low", "ci", "flagged"} or None}.
    """
    y_true, score = np.asarray(y_true, dtype=float), np.asarray(score, dtype=float)
    columns, flagged = {}, []
    for c, (column, raw) in enumerate(groups.items()):
        values = _as_groups(raw, len(score), column)
        entries, samples = {}, {}
        for g, value in enumerate(sorted(set(values.tolist()) - {""})):
            y, s = labelled(y_true[values == value], score[values == value])
            group_seed = int(np.random.SeedSequence([seed, c, g]).generate_state(1)[0])  # independent draws per group
            entries[value], samples[value] = _group_entry(
                y, s, threshold, n_bootstrap=n_bootstrap, seed=group_seed,
                min_positives=min_positives, min_negatives=min_negatives,
            )  # fmt: skip
        y_unknown, _ = labelled(y_true[values == ""], score[values == ""])
        gaps = {m: _gap(entries, samples, m) for m in GAP_METRICS}
        flagged += [{"column": column, "metric": m} | gap for m, gap in gaps.items() if gap and gap["flagged"]]
        unknown = {"n": int(len(y_unknown)), "positives": int(y_unknown.sum())}
        columns[column] = {"groups": entries, "unknown": unknown, "gaps": gaps}
    return {"columns": columns, "largest_flagged_gap": max(flagged, key=lambda x: x["gap"], default=None)}


def _check_prevalences(prevalences) -> list[float]:
    out = [float(p) for p in prevalences]
    if any(not 0.0 < p < 1.0 for p in out):
        raise InputError(f"prevalences must lie strictly between 0 and 1, got {out}; e.g. prevalences=(0.01, 0.05)")
    return out


def _split(labels: dict | None, scores: dict | None, finding: str, split: str):
    """-> (raw labels, raw scores) of one finding, or (None, None) when the split lacks it."""
    if labels is None or scores is None or finding not in labels or finding not in scores:
        return None, None
    y, s = np.asarray(labels[finding], dtype=float), np.asarray(scores[finding], dtype=float)
    if y.shape != s.shape:
        raise InputError(f"{split} split, finding '{finding}': {len(s)} scores but {len(y)} labels")
    return y, s


def _operating_point(y, s, vy, vs, *, rule, prevalences, n_bootstrap, seed) -> tuple[dict | None, str | None]:
    """-> (operating point entry, None) or (None, reason)."""
    if vy is None:
        return None, "no validation split: the operating point is never tuned on test rows"
    threshold = choose_operating_point(vy, vs, rule=rule)
    if threshold is None:
        return None, "validation split lacks a positive or a negative case"
    val = _rates(**_counts(vy, vs, threshold))
    validation = {"n": int(len(vy)), "positives": int(vy.sum())}
    validation |= {k: _num(val[k]) for k in ("sensitivity", "specificity")}
    op = operating_point_metrics(y, s, threshold, prevalences=prevalences, n_bootstrap=n_bootstrap, seed=seed)
    return {"rule": rule, "threshold": threshold, "validation": validation, **op}, None


def screening_report(
    scores: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    val_scores: dict[str, np.ndarray] | None = None,
    val_labels: dict[str, np.ndarray] | None = None,
    *,
    groups: dict[str, np.ndarray] | None = None,
    rule: str = "youden",
    prevalences=(),
    calibration: str = "platt",
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
    min_positives: int = 5,
    min_negatives: int = 5,
) -> dict:
    """Operating point (chosen on validation by ``rule``), calibration and subgroup gaps per finding, JSON-able.

    Without validation rows for a finding its operating point is None with an ``operating_point_reason`` (nothing is
    tuned on test rows); raw-score calibration and subgroup AUROCs are still reported. -> {"settings", "per_finding":
    {finding: {"n", "positives", "operating_point", "calibration", "subgroups"}}, "largest_flagged_gap"}.
    """
    parse_rule(rule)
    check_method(calibration)
    settings = {
        "rule": rule,
        "prevalences": _check_prevalences(prevalences),
        "calibration": calibration,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "n_bins": n_bins,
        "min_positives": min_positives,
        "min_negatives": min_negatives,
        "ci_level": 1 - ALPHA,
    }
    per, flagged = {}, []
    for f in (f for f in scores if f in labels):
        y_true, s_true = _split(labels, scores, f, "test")
        y, s = labelled(y_true, s_true)
        vy, vs = _split(val_labels, val_scores, f, "validation")
        vy, vs = labelled(vy, vs) if vy is not None else (None, None)
        op, reason = _operating_point(
            y, s, vy, vs, rule=rule, prevalences=settings["prevalences"], n_bootstrap=n_bootstrap, seed=seed
        )
        out: dict = {"n": int(len(y)), "positives": int(y.sum()), "operating_point": op}
        if reason:
            out["operating_point_reason"] = reason
        out["calibration"] = calibration_summary(y, s, val_y=vy, val_score=vs, method=calibration, n_bins=n_bins)
        out["subgroups"] = None
        if groups:
            threshold = op["threshold"] if op else None
            out["subgroups"] = subgroup_metrics(
                y_true, s_true, groups, threshold=threshold, n_bootstrap=n_bootstrap, seed=seed,
                min_positives=min_positives, min_negatives=min_negatives,
            )  # fmt: skip
            if out["subgroups"]["largest_flagged_gap"]:
                flagged.append({"finding": f} | out["subgroups"]["largest_flagged_gap"])
        per[f] = out
    return {
        "settings": settings,
        "per_finding": per,
        "largest_flagged_gap": max(flagged, key=lambda x: x["gap"], default=None),
    }


def plot_reliability(report: dict, out_path: str | Path) -> Path | None:
    """One panel per finding of a :func:`screening_report`: raw and calibrated reliability curves, the diagonal."""
    summaries = {f: m["calibration"] for f, m in report["per_finding"].items()}
    return plot_reliability_curves(summaries, out_path, n_bins=report["settings"]["n_bins"])


def _op_lines(per: dict, prevalences: list[float]) -> list[str]:
    prev = "".join(f" PPV at p={p:g} | NPV at p={p:g} |" for p in prevalences)
    lines = [
        "| finding | rule | threshold | sensitivity [95% CI] | specificity [95% CI] | PPV [95% CI] | NPV [95% CI] | "
        f"TP / FP / TN / FN | val sens / spec |{prev}",
        "|---" * (9 + 2 * len(prevalences)) + "|",
    ]
    for f, m in per.items():
        op = m["operating_point"]
        if op is None:
            lines.append(
                f"| {f} | no operating point: {m['operating_point_reason']} |" + " |" * (7 + 2 * len(prevalences))
            )
            continue
        t, v = op["test"], op["validation"]
        rates = " | ".join(with_ci(t[k], t[f"{k}_ci"]) for k in RATES)
        at_p = "".join(
            f" {with_ci(a['ppv'], a['ppv_ci'])} | {with_ci(a['npv'], a['npv_ci'])} |" for a in op["at_prevalence"]
        )
        lines.append(
            f"| {f} | {op['rule']} | {fmt(op['threshold'])} | {rates} | "
            f"{t['tp']} / {t['fp']} / {t['tn']} / {t['fn']} | "
            f"{fmt(v['sensitivity'])} / {fmt(v['specificity'])} |{at_p}"
        )
    return lines


def _subgroup_lines(finding: str, sub: dict) -> list[str]:
    lines = []
    for column, col in sub["columns"].items():
        lines += [
            f"**{finding}, by {column}**",
            "",
            "| group | n | positives | AUROC [95% CI] | sensitivity [95% CI] | specificity [95% CI] |",
            "|---|---|---|---|---|---|",
        ]
        for g, e in col["groups"].items():
            if not e["judged"]:
                lines.append(f"| {g} | {e['n']} | {e['positives']} | too small to judge: {e['reason']} | | |")
                continue
            cells = " | ".join(with_ci(e[k], e[f"{k}_ci"]) for k in GAP_METRICS)
            lines.append(f"| {g} | {e['n']} | {e['positives']} | {cells} |")
        if col["unknown"]["n"]:
            lines.append(f"| (unknown, excluded) | {col['unknown']['n']} | {col['unknown']['positives']} | | | |")
        gaps = [f"{m} {_gap_text(g)}" for m, g in col["gaps"].items() if g]
        lines += ["", f"Largest gaps: {'; '.join(gaps)}." if gaps else "Fewer than two groups to compare.", ""]
    return lines


def _gap_text(gap: dict) -> str:
    ci = f" [{fmt(gap['ci'][0])}, {fmt(gap['ci'][1])}]" if gap["ci"] else ""
    return f"{fmt(gap['gap'])}{ci} ({gap['high']} vs {gap['low']}{', flagged' if gap['flagged'] else ''})"


def screening_markdown(report: dict) -> list[str]:
    """Markdown lines: operating points, calibration, subgroup tables and the largest flagged gap."""
    s, per = report["settings"], report["per_finding"]
    lines = [
        f"## Screening operating points (rule '{s['rule']}' chosen on validation, measured on test)",
        "",
        *_op_lines(per, s["prevalences"]),
        "",
        f"95% CIs from {s['n_bootstrap']} bootstrap resamples of test rows (seed {s['seed']}); PPV / NPV at a "
        "prevalence p by Bayes from the test sensitivity and specificity.",
        "",
        f"## Calibration (fitted on validation, ECE over {s['n_bins']} equal-width bins, on test)",
        "",
        "| finding | method | ECE before → after | Brier before → after |",
        "|---|---|---|---|",
    ]
    for f, m in per.items():
        c = m["calibration"]
        note = f" ({c['reason']})" if c.get("reason") else ""
        lines.append(
            f"| {f} | {c['method']}{note} | {fmt(c['ece_before'])} → {fmt(c['ece_after'])} | "
            f"{fmt(c['brier_before'])} → {fmt(c['brier_after'])} |"
        )
    lines.append("")
    subgroups = [(f, m["subgroups"]) for f, m in per.items() if m["subgroups"]]
    if subgroups:
        lines += [
            f"## Subgroups (judged with >= {s['min_positives']} positives and >= {s['min_negatives']} negatives)",
            "",
        ]
        for f, sub in subgroups:
            lines += _subgroup_lines(f, sub)
        top = report["largest_flagged_gap"]
        lines.append(
            f"> flag: largest subgroup gap is {top['finding']} {top['metric']} by {top['column']}: {_gap_text(top)}."
            if top
            else "No subgroup gap has a 95% CI that excludes 0."
        )
        lines.append("")
    return lines
