from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medclip.eval.zero_shot import class_embeddings, evaluate_zero_shot, zero_shot_scores
from medclip.text.prompts import expand_prompts, load_prompts


def test_scores_follow_prompt_polarity_and_flag_inversion():
    pos, neg = F.normalize(torch.tensor([1.0, 0.0]), dim=0), F.normalize(torch.tensor([0.0, 1.0]), dim=0)
    vocab = {"effusion": pos, "no effusion": neg}

    def encode(texts):
        return torch.stack([vocab[t] for t in texts])

    images = F.normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.9, 0.2], [0.2, 0.8]]), dim=-1)
    labels = {"effusion": np.array([1, 0, 1, 0])}
    right = class_embeddings({"effusion": {"positive": ["effusion"], "negative": ["no effusion"]}}, encode)
    res = evaluate_zero_shot(zero_shot_scores(images, right, 10.0), labels)
    assert res["macro_auroc"] == 1.0 and res["polarity_warnings"] == []
    inverted = class_embeddings({"effusion": {"positive": ["no effusion"], "negative": ["effusion"]}}, encode)
    res = evaluate_zero_shot(zero_shot_scores(images, inverted, 10.0), labels)
    assert res["macro_auroc"] == 0.0 and res["polarity_warnings"] == ["effusion"]


def test_uncertain_and_blank_labels_are_ignored():
    scores = {"x": np.array([0.9, 0.1, 0.8, 0.5])}
    res = evaluate_zero_shot(scores, {"x": np.array([1, 0, -1, np.nan])})
    assert res["per_finding"]["x"]["n"] == 2


def test_packaged_prompts_expand_templates():
    prompts = load_prompts("cxr_demo")
    assert "pleural_effusion" in prompts
    assert all(p["positive"] and p["negative"] for p in prompts.values())
    raw = {"templates": ["{}.", "there is {}."], "findings": {"a": {"positive": ["x"], "negative": ["no x"]}}}
    assert expand_prompts(raw)["a"]["positive"] == ["x.", "there is x."]


def test_multiclass_softmax_and_accuracy():
    from medclip.eval.zero_shot import multiclass_accuracy, multiclass_scores

    classes = {"a": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "b": torch.tensor([[0.0, 1.0], [0.0, 0.0]])}
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    scores = multiclass_scores(images, classes, 10.0)
    assert np.allclose(scores["a"] + scores["b"], 1.0)
    labels = {"a": np.array([1, 0, 0]), "b": np.array([0, 1, 1])}  # the third image is wrong (a scores higher)
    out = multiclass_accuracy(scores, labels, n_bootstrap=200, seed=0)
    assert (out["accuracy"], out["n"], out["per_class"]) == (2 / 3, 3, {"a": 1.0, "b": 0.5})
    assert 0 <= out["accuracy_ci"][0] <= 2 / 3 <= out["accuracy_ci"][1] <= 1
    assert multiclass_accuracy(scores, labels)["accuracy_ci"] is None  # no resamples asked for
    labels["b"][2] = 0  # no positive class: not a multi-class row
    assert multiclass_accuracy(scores, labels)["n"] == 2


def test_thresholds_come_from_validation_rows():
    scores = {"x": np.array([0.1, 0.2, 0.6, 0.7])}
    labels = {"x": np.array([0, 0, 1, 1])}
    val = {"x": np.array([0.1, 0.3, 0.4, 0.9])}
    res = evaluate_zero_shot(scores, labels, val_scores=val, val_labels={"x": np.array([0, 0, 1, 1])}, n_bootstrap=0)
    m = res["per_finding"]["x"]
    assert m["threshold"] == 0.4 and m["f1"] == 1.0 and m["mcc"] == 1.0
    # A validation split that puts the threshold too high shows up in the test F1 (no tuning on the test rows).
    res = evaluate_zero_shot(
        scores,
        labels,
        val_scores={"x": np.array([0.1, 0.2, 0.8, 0.9])},
        val_labels={"x": np.array([0, 0, 1, 1])},
        n_bootstrap=0,
    )
    assert res["per_finding"]["x"]["f1"] == 0.0 and res["macro_f1"] == 0.0
    assert "f1" not in evaluate_zero_shot(scores, labels, n_bootstrap=0)["per_finding"]["x"]


def test_polarity_check_fires_on_an_inverted_prompt_yaml(tiny_checkpoint, tiny_manifest, tiny_archive, tmp_path):
    """Swapping every finding's positive and negative prompts mirrors each AUROC (1 - AUROC) and the check says so."""
    from importlib import resources

    import yaml

    from medclip.config import EvalCfg
    from medclip.eval.pipeline import evaluate

    raw = yaml.safe_load(resources.files("medclip.text").joinpath("prompts", "cxr_demo.yaml").read_text())
    raw["findings"] = {f: {"positive": s["negative"], "negative": s["positive"]} for f, s in raw["findings"].items()}
    inverted = tmp_path / "inverted.yaml"
    inverted.write_text(yaml.safe_dump(raw))
    cfg = EvalCfg(
        tasks=["zeroshot"],
        checkpoint=str(tiny_checkpoint),
        manifest=str(tiny_manifest),
        split="all",
        labels=str(tiny_archive / "labels.csv"),
        bootstrap=0,
        out_dir=str(tmp_path),
        plots=False,
        allow_overlap=True,  # every image, the training patients too: this checks scoring, not generalisation
    )
    right = evaluate(replace(cfg, prompts="cxr_demo"), show_progress=False)["zero_shot"]
    wrong = evaluate(replace(cfg, prompts=str(inverted)), show_progress=False)["zero_shot"]
    for f, m in right["per_finding"].items():
        if m["auroc"] is not None:
            assert wrong["per_finding"][f]["auroc"] == pytest.approx(1 - m["auroc"], abs=1e-6)
    flagged = {f for f, m in right["per_finding"].items() if m["auroc"] is not None and m["auroc"] > 0.5}
    assert flagged and set(wrong["polarity_warnings"]) == flagged
    assert all("probably inverted" in m for m in wrong["polarity_messages"])


def test_laterality_scores_left_right_pairs_on_one_sided_cases():
    from medclip.eval.zero_shot import laterality

    labels = {"arm_left": np.array([1, 1, 0, 0, 1]), "arm_right": np.array([0, 0, 1, 1, 1]), "head": np.ones(5)}
    good = {
        "arm_left": np.array([0.9, 0.8, 0.1, 0.2, 0.5]),
        "arm_right": np.array([0.1, 0.2, 0.7, 0.9, 0.5]),
        "head": np.zeros(5),
    }
    out = laterality(good, labels)
    assert out["pairs"]["arm"] == {"auroc": 1.0, "n_left": 2, "n_right": 2}  # the two-sided case is left out
    swapped = {"arm_left": good["arm_right"], "arm_right": good["arm_left"], "head": good["head"]}
    assert laterality(swapped, labels)["pairs"]["arm"]["auroc"] == 0.0
    assert laterality({"head": np.zeros(5)}, labels) == {}


def test_zero_shot_reports_screening_metrics_fitted_on_validation_only(
    tiny_checkpoint, tiny_manifest, tiny_archive, tmp_path
):
    """Operating points follow the named rule on the val split, subgroups come from the manifest's header columns,
    and an evaluation of split "all" (which holds the val rows) tunes nothing."""
    from medclip.config import EvalCfg
    from medclip.eval.pipeline import evaluate
    from medclip.eval.report import markdown_table

    cfg = EvalCfg(
        tasks=["zeroshot"],
        checkpoint=str(tiny_checkpoint),
        manifest=str(tiny_manifest),
        split="test",
        labels=str(tiny_archive / "labels.csv"),
        bootstrap=50,
        out_dir=str(tmp_path),
        operating_point="sensitivity:0.8",
        prevalence=[0.01],
        min_group=1,
    )
    results = evaluate(cfg, show_progress=False)
    zs = results["zero_shot"]
    screening = zs["screening"]
    assert screening["settings"]["rule"] == "sensitivity:0.8" and screening["settings"]["calibration"] == "platt"
    tuned = [m["operating_point"] for m in screening["per_finding"].values() if m["operating_point"]]
    assert tuned, "no finding has both classes in the tiny val split"
    for op in tuned:
        assert op["validation"]["sensitivity"] >= 0.8  # the rule holds where it was fitted
        assert [p["prevalence"] for p in op["at_prevalence"]] == [0.01]
    columns = {c for m in screening["per_finding"].values() if m["subgroups"] for c in m["subgroups"]["columns"]}
    assert "sex" in columns and "age_band" in columns
    assert "reliability" in results["plots"] and (tmp_path / results["plots"]["reliability"]).is_file()
    assert "Screening operating points (rule 'sensitivity:0.8'" in markdown_table(results)

    every = evaluate(replace(cfg, split="all", allow_overlap=True, plots=False), show_progress=False)
    ops = [m["operating_point"] for m in every["zero_shot"]["screening"]["per_finding"].values()]
    assert ops and all(op is None for op in ops)
