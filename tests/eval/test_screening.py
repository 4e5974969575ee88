from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from medclip.errors import InputError
from medclip.eval.calibration import (
    apply_calibrator,
    brier_score,
    calibration_summary,
    expected_calibration_error,
    fit_calibrator,
    reliability,
)
from medclip.eval.screening import (
    choose_operating_point,
    operating_point_metrics,
    parse_rule,
    plot_reliability,
    screening_markdown,
    screening_report,
    subgroup_metrics,
)


def _ladder():
    """10 positives scored 0.1 .. 1.0; 9 negatives scored 0.01 .. 0.09 and one negative at 0.75."""
    y = np.r_[np.ones(10), np.zeros(10)]
    s = np.r_[np.arange(1, 11) / 10, np.arange(1, 10) / 100, 0.75]
    return y, s


@pytest.mark.parametrize(
    ("rule", "threshold", "sens", "spec"),
    [
        ("sensitivity:0.8", 0.3, 0.8, 0.9),  # highest t keeping 8 of 10 positives; 0.75 is the one false positive
        ("specificity:0.95", 0.8, 0.3, 1.0),  # every negative must fall below t: the first candidate above 0.75
        ("specificity:0.9", 0.1, 1.0, 0.9),  # lowest t leaving 9 negatives below it
        ("youden", 0.1, 1.0, 0.9),  # J = 0.9 there; the next best (t = 0.09) has J = 0.8
    ],
)
def test_each_rule_picks_the_hand_computed_threshold(rule, threshold, sens, spec):
    y, s = _ladder()
    t = choose_operating_point(y, s, rule=rule)
    assert t == pytest.approx(threshold)
    test = operating_point_metrics(y, s, t, n_bootstrap=0)["test"]
    assert test["sensitivity"] == pytest.approx(sens) and test["specificity"] == pytest.approx(spec)


def test_counts_and_predictive_values_at_a_fixed_threshold():
    y, s = _ladder()
    test = operating_point_metrics(y, s, 0.3, n_bootstrap=0)["test"]
    assert (test["tp"], test["fp"], test["tn"], test["fn"]) == (8, 1, 9, 2)
    assert test["ppv"] == pytest.approx(8 / 9) and test["npv"] == pytest.approx(9 / 11)
    assert test["sensitivity_ci"] is None  # no resamples, no CI


def test_no_threshold_without_both_classes_and_specificity_fallback_predicts_nothing():
    assert choose_operating_point(np.ones(5), np.linspace(0, 1, 5), rule="youden") is None
    y, s = np.array([1, 0, 1, 0]), np.full(4, 0.5)  # one tie group: every real threshold has specificity 0 or 1
    t = choose_operating_point(y, s, rule="specificity:0.9")
    assert t > 0.5
    assert operating_point_metrics(y, s, t, n_bootstrap=0)["test"]["specificity"] == 1.0


@pytest.mark.parametrize(
    "rule",
    ["sensitivity", "sensitivity:1.0", "sensitivity:0", "specificity:-0.1", "specificity:abc", "youden:0.5", "f1", ""],
)
def test_bad_rules_raise_input_error(rule):
    with pytest.raises(InputError, match="operating-point rule"):
        parse_rule(rule)


def test_misspelt_rule_suggests_the_name_and_good_rules_parse():
    with pytest.raises(InputError, match="Did you mean 'sensitivity'"):
        parse_rule("sensitivty:0.9")
    assert parse_rule(" specificity:0.90 ") == ("specificity", 0.9)
    assert parse_rule("youden") == ("youden", None)


def test_bad_calibration_method_and_prevalence_raise_before_any_work():
    y, s = _ladder()
    with pytest.raises(InputError, match="Did you mean 'platt'"):
        screening_report({"x": s}, {"x": y}, calibration="plat")
    with pytest.raises(InputError, match="prevalences"):
        screening_report({"x": s}, {"x": y}, prevalences=(0.1, 1.5))


def test_ppv_npv_at_prevalence_follow_bayes():
    y, s = _ladder()
    op = operating_point_metrics(y, s, 0.3, prevalences=(0.1, 0.5), n_bootstrap=200, seed=0)
    low, half = op["at_prevalence"]
    # sens 0.8, spec 0.9 at p = 0.1: PPV = 0.08 / (0.08 + 0.09), NPV = 0.81 / (0.81 + 0.02)
    assert low["ppv"] == pytest.approx(0.08 / 0.17) and low["npv"] == pytest.approx(0.81 / 0.83)
    # at the sample's own prevalence (10 of 20) Bayes gives back the empirical PPV / NPV
    assert half["ppv"] == pytest.approx(op["test"]["ppv"]) and half["npv"] == pytest.approx(op["test"]["npv"])
    assert low["ppv_ci"][0] < low["ppv_ci"][1]


def test_bootstrap_cis_resample_test_rows_with_the_seed():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = np.clip(rng.random(60) + 0.3 * y, 0, 1)
    a = operating_point_metrics(y, s, 0.6, n_bootstrap=300, seed=5)["test"]
    assert a == operating_point_metrics(y, s, 0.6, n_bootstrap=300, seed=5)["test"]
    assert a != operating_point_metrics(y, s, 0.6, n_bootstrap=300, seed=6)["test"]
    idx = np.random.default_rng(5).integers(0, 60, size=(300, 60))  # the draws the bootstrap makes, made explicitly
    pred, yy = s[idx] >= 0.6, y[idx] == 1
    sens = (pred & yy).sum(1) / yy.sum(1)
    assert a["sensitivity_ci"] == pytest.approx([np.quantile(sens, 0.025), np.quantile(sens, 0.975)])


def test_ece_and_brier_by_hand():
    y, p = np.r_[np.ones(6), np.zeros(4)], np.full(10, 0.8)
    assert expected_calibration_error(y, p) == pytest.approx(0.2)  # |0.6 - 0.8| in the one occupied bin
    assert brier_score(y, p) == pytest.approx(0.6 * 0.2**2 + 0.4 * 0.8**2)
    rel = reliability(y, p)
    assert rel["count"][8] == 10 and rel["observed"][8] == pytest.approx(0.6) and rel["observed"][0] is None
    # bins of 4 and 6 rows: |1/4 - 0.15| weighted 0.4, |6/6 - 0.85| weighted 0.6 (unweighted would be 0.125)
    y2, p2 = np.array([1, 0, 0, 0, 1, 1, 1, 1, 1, 1]), np.r_[np.full(4, 0.15), np.full(6, 0.85)]
    assert expected_calibration_error(y2, p2) == pytest.approx(0.4 * 0.10 + 0.6 * 0.15)
    assert reliability(np.array([1]), np.array([1.0]), n_bins=4)["count"] == [0, 0, 0, 1]  # 1.0 is in the last bin


def _calibrated_levels(copies: int):
    """Scores at 0.05, 0.15, ..., 0.95 whose observed positive fraction is exactly the score."""
    levels = np.arange(10) / 10 + 0.05
    y = np.concatenate([np.r_[np.ones(round(20 * p)), np.zeros(20 - round(20 * p))] for p in levels] * copies)
    return y, np.repeat(np.tile(levels, copies), 20)


def test_isotonic_restores_calibration_of_a_monotone_distortion():
    y, p = _calibrated_levels(3)
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)
    distorted = p**3
    cal = calibration_summary(y, distorted, val_y=y, val_score=distorted, method="isotonic")
    assert cal["ece_before"] > 0.2
    assert cal["ece_after"] == pytest.approx(0.0, abs=1e-9)
    assert cal["brier_after"] < cal["brier_before"]


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 40_000)  # true logits
    y = (rng.random(z.shape) < expit(z)).astype(float)
    overconfident = expit(2.5 * z)  # scores whose logit is 2.5x too large
    cal = fit_calibrator(y, overconfident, method="temperature")
    assert cal["temperature"] == pytest.approx(2.5, rel=0.05)


def test_platt_recovers_slope_and_intercept():
    rng = np.random.default_rng(1)
    u = rng.normal(0.0, 3.0, 40_000)
    y = (rng.random(u.shape) < expit(0.5 * u - 1.0)).astype(float)
    cal = fit_calibrator(y, expit(u), method="platt")
    assert cal["a"] == pytest.approx(0.5, abs=0.03) and cal["b"] == pytest.approx(-1.0, abs=0.05)


def test_stored_calibrators_reapply_after_a_json_round_trip():
    rng = np.random.default_rng(2)
    s = rng.random(300)
    y = (rng.random(300) < s**2).astype(float)
    new = np.r_[-0.1, 0.0, rng.random(50), 1.0, 1.2]  # includes scores outside the fitted range
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
    for method in ("temperature", "platt", "isotonic", "none"):
        fitted = fit_calibrator(y, s, method=method)
        stored = json.loads(json.dumps(fitted))  # as results.json holds it
        assert np.array_equal(apply_calibrator(stored, new), apply_calibrator(fitted, new))
    assert apply_calibrator(fit_calibrator(y, s, method="isotonic"), new) == pytest.approx(iso.predict(new))
    assert apply_calibrator({"method": "none"}, new) == pytest.approx(new)
    with pytest.raises(InputError, match="calibration method"):
        apply_calibrator({"method": "beta"}, new)
    assert fit_calibrator(np.ones(4), s[:4], method="temperature") is None  # one class: nothing to fit


def _site_data(seed: int = 0):
    """Site A perfectly separated, site B scores independent of the label, site C with 3 positives, '' unknown."""
    rng = np.random.default_rng(seed)
    y_a = np.r_[np.ones(100), np.zeros(100)]
    s_a = np.r_[rng.uniform(0.6, 1.0, 100), rng.uniform(0.0, 0.4, 100)]
    y_b, s_b = np.r_[np.ones(100), np.zeros(100)], rng.random(200)
    y_c, s_c = np.r_[np.ones(3), np.zeros(20)], rng.random(23)
    y_u, s_u = np.array([1.0, 0.0, -1.0, np.nan]), rng.random(4)
    y, s = np.r_[y_a, y_b, y_c, y_u], np.r_[s_a, s_b, s_c, s_u]
    site = np.array(["A"] * 200 + ["B"] * 200 + ["C"] * 23 + [""] * 4)
    return y, s, site


def test_subgroup_gap_flags_the_random_site_and_skips_the_small_one():
    y, s, site = _site_data()
    res = subgroup_metrics(y, s, {"site": site}, n_bootstrap=300, seed=0)
    col = res["columns"]["site"]
    a, b, c = (col["groups"][g] for g in "ABC")
    assert a["auroc"] == 1.0 and b["auroc"] < 0.65 and a["auroc_ci"][0] == 1.0
    assert c == {"n": 23, "positives": 3, "judged": False, "reason": "too few positives (3 < 5)"}
    assert col["unknown"] == {"n": 2, "positives": 1}  # the -1 and NaN rows are not counted
    gap = col["gaps"]["auroc"]
    assert (gap["high"], gap["low"], gap["flagged"]) == ("A", "B", True)
    assert gap["gap"] == pytest.approx(1.0 - b["auroc"]) and gap["ci"][0] > 0
    assert col["gaps"]["sensitivity"] is None  # no threshold given
    assert res["largest_flagged_gap"]["column"] == "site" and res["largest_flagged_gap"]["metric"] == "auroc"
    strict = subgroup_metrics(y, s, {"site": site}, n_bootstrap=0, min_negatives=150)
    assert strict["columns"]["site"]["groups"]["A"]["reason"] == "too few negatives (100 < 150)"
    assert strict["columns"]["site"]["gaps"]["auroc"] is None and strict["largest_flagged_gap"] is None


def test_groups_from_one_distribution_are_not_flagged():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 800).astype(float)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    res = subgroup_metrics(y, s, {"sex": np.array(["F", "M"] * 400)}, threshold=0.5, n_bootstrap=300, seed=0)
    gaps = res["columns"]["sex"]["gaps"]
    assert all(g is not None and not g["flagged"] and g["ci"][0] < 0 < g["ci"][1] for g in gaps.values())
    assert res["largest_flagged_gap"] is None


def test_group_column_must_line_up_with_scores():
    with pytest.raises(InputError, match="group column 'sex' has 3 values for 4 scores"):
        subgroup_metrics(np.array([1, 0, 1, 0]), np.random.rand(4), {"sex": np.array(["F", "M", "F"])})


def test_report_is_json_and_markdown_lists_every_table(tmp_path):
    y, s, site = _site_data()
    vy, vs = _ladder()
    report = screening_report(
        {"x": s}, {"x": y}, {"x": vs}, {"x": vy}, groups={"site": site}, rule="sensitivity:0.8",
        prevalences=(0.05,), calibration="platt", n_bootstrap=200,
    )  # fmt: skip
    json.dumps(report, allow_nan=False)
    m = report["per_finding"]["x"]
    op = m["operating_point"]
    assert op["threshold"] == pytest.approx(0.3) and op["validation"]["sensitivity"] == pytest.approx(0.8)
    assert op["test"]["n"] == 425 and op["at_prevalence"][0]["prevalence"] == 0.05
    assert m["calibration"]["calibrator"]["method"] == "platt" and m["calibration"]["ece_after"] is not None
    assert report["largest_flagged_gap"]["finding"] == "x"
    text = "\n".join(screening_markdown(report))
    assert "| C | 23 | 3 | too small to judge: too few positives (3 < 5) | | |" in text
    assert "PPV at p=0.05" in text and "> flag: largest subgroup gap is x" in text
    assert plot_reliability(report, tmp_path / "rel.png").stat().st_size > 0


def test_without_validation_nothing_is_tuned_but_raw_calibration_and_aurocs_remain(tmp_path):
    y, s, site = _site_data()
    report = screening_report({"x": s}, {"x": y}, groups={"site": site}, n_bootstrap=50)
    json.dumps(report, allow_nan=False)
    m = report["per_finding"]["x"]
    assert m["operating_point"] is None and "never tuned on test rows" in m["operating_point_reason"]
    assert m["calibration"]["ece_before"] is not None and m["calibration"]["ece_after"] is None
    assert m["calibration"]["calibrator"] is None
    a = m["subgroups"]["columns"]["site"]["groups"]["A"]
    assert a["auroc"] == 1.0 and a["sensitivity"] is None
    text = "\n".join(screening_markdown(report))
    assert "no operating point: no validation split" in text and "n/a" in text
    assert plot_reliability({"settings": report["settings"], "per_finding": {}}, tmp_path / "none.png") is None
