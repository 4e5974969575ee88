from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef, roc_auc_score

from medclip.eval.metrics import (
    auroc_auprc,
    bootstrap_auroc_auprc,
    bootstrap_weights,
    choose_threshold,
    f1_mcc_at,
    roc_band,
    weighted_auroc_auprc,
)


def _data(n: int, seed: int, *, decimals: int | None = 1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.random(n) + 0.4 * y
    return y, (np.round(s, decimals) if decimals is not None else s)  # rounding makes ties


@pytest.mark.parametrize(("n", "seed", "decimals"), [(7, 0, 1), (60, 1, 1), (500, 2, None)])
def test_point_metrics_match_sklearn(n, seed, decimals):
    y, s = _data(n, seed, decimals=decimals)
    auroc, ap = auroc_auprc(y, s)
    assert auroc == pytest.approx(roc_auc_score(y, s))
    assert ap == pytest.approx(average_precision_score(y, s))


def test_each_bootstrap_resample_matches_sklearn_on_the_resampled_rows():
    y, s = _data(40, 3)
    pos, neg, _ = next(bootstrap_weights(y, s, n_resamples=20, seed=7))
    auroc, ap = weighted_auroc_auprc(pos, neg)
    idx = np.random.default_rng(7).integers(0, len(y), size=(20, len(y)))  # the same draws, made explicitly
    for r in range(20):
        yy, ss = y[idx[r]], s[idx[r]]
        if len(np.unique(yy)) < 2:
            assert np.isnan(auroc[r])
            continue
        assert auroc[r] == pytest.approx(roc_auc_score(yy, ss))
        assert ap[r] == pytest.approx(average_precision_score(yy, ss))


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    y, s = _data(300, 4, decimals=None)
    a = bootstrap_auroc_auprc(y, s, n_resamples=300, seed=1)
    b = bootstrap_auroc_auprc(y, s, n_resamples=300, seed=1)
    c = bootstrap_auroc_auprc(y, s, n_resamples=300, seed=2)
    assert a == b and a != c
    point = auroc_auprc(y, s)[0]
    assert a["auroc_ci"][0] < point < a["auroc_ci"][1]
    wide = bootstrap_auroc_auprc(y[:40], s[:40], n_resamples=300, seed=1)["auroc_ci"]
    assert wide[1] - wide[0] > a["auroc_ci"][1] - a["auroc_ci"][0]


def test_threshold_maximises_mcc_and_f1_mcc_match_sklearn():
    y, s = _data(80, 5)
    t = choose_threshold(y, s, metric="mcc")
    best = max(matthews_corrcoef(y, s >= c) for c in np.unique(s))
    assert matthews_corrcoef(y, s >= t) == pytest.approx(best)
    m = f1_mcc_at(y, s, t)
    assert m["f1"] == pytest.approx(f1_score(y, s >= t)) and m["mcc"] == pytest.approx(matthews_corrcoef(y, s >= t))
    assert m["accuracy"] == pytest.approx(float(np.mean((s >= t) == y)))
    assert choose_threshold(np.ones(5, int), np.arange(5.0)) is None
    with pytest.raises(ValueError, match="not one of"):
        choose_threshold(y, s, metric="youden")


def test_roc_band_brackets_the_curve():
    y, s = _data(200, 6, decimals=None)
    band = roc_band(y, s, n_resamples=100, seed=0)
    assert band["fpr"][0] == 0 and band["fpr"][-1] == 1 and band["tpr"][-1] == pytest.approx(1.0)
    assert (band["lo"] <= band["hi"] + 1e-12).all()
    inside = (band["lo"] - 1e-9 <= band["tpr"]) & (band["tpr"] <= band["hi"] + 1e-9)
    assert inside.mean() > 0.9
