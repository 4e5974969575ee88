from __future__ import annotations

import numpy as np
import pytest

from medclip.eval.linear_probe import fit_probe, fraction_indices, linear_probe, shot_indices


def _split(n: int, rng: np.random.Generator, *, signal: float = 2.0):
    y = rng.integers(0, 2, (n, 2)).astype(float)
    x = rng.normal(size=(n, 16))
    x[:, 0] += signal * y[:, 0]  # finding "a" is linearly visible; "b" is pure noise
    y[rng.random(n) < 0.1, 1] = np.nan  # blanks are skipped, not treated as negatives
    return x, {"a": y[:, 0], "b": y[:, 1]}


def test_probe_learns_a_visible_finding_and_not_noise():
    rng = np.random.default_rng(0)
    res = linear_probe(
        _split(300, rng), _split(80, rng), _split(200, rng), fractions=(0.1, 1.0), shots=(4,), n_bootstrap=100
    )
    full = res["settings"]["100%"]["per_finding"]
    assert full["a"]["auroc"] > 0.9 and full["a"]["auroc_ci"][0] > 0.8
    assert abs(full["b"]["auroc"] - 0.5) < 0.15
    assert res["settings"]["4-shot"]["per_finding"]["a"]["n_train"] == 8
    assert set(res["settings"]) == {"10%", "100%", "4-shot"}


def test_sampling_is_stratified_and_refuses_impossible_shots():
    y = np.array([1] * 10 + [0] * 90 + [np.nan] * 5 + [-1] * 5)
    rng = np.random.default_rng(0)
    idx = fraction_indices(y, 0.1, rng)
    assert (y[idx] == 1).sum() == 1 and (y[idx] == 0).sum() == 9
    idx = shot_indices(y, 4, rng)
    assert (y[idx] == 1).sum() == 4 and (y[idx] == 0).sum() == 4
    assert shot_indices(y, 16, rng) is None
    assert fraction_indices(np.zeros(10), 0.5, rng) is None


def test_c_is_chosen_on_validation():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 30)), rng.integers(0, 2, 40)
    x[:, 0] += y
    xv, yv = rng.normal(size=(200, 30)), rng.integers(0, 2, 200).astype(float)
    xv[:, 0] += yv
    _, c, val_auroc = fit_probe(x, y, xv, yv, c_grid=(1e-3, 1e3))
    # 30 noisy features and 40 rows: the weakly regularised probe overfits, so validation picks the small C.
    assert c == pytest.approx(1e-3) and val_auroc > 0.6
    _, c, val_auroc = fit_probe(x, y, xv, np.zeros(200), c_grid=(1e-3, 1e3))
    assert c == 1.0 and val_auroc is None
