from __future__ import annotations

import numpy as np
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
