from __future__ import annotations

import numpy as np
import pytest
import torch

from medclip.eval.retrieval import hit_ranks, rank_metrics, retrieval_metrics, study_hits


def test_ranks_and_recall():
    sims = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]])
    hits = torch.tensor([[True, False, False], [True, False, False]])
    ranks = hit_ranks(sims, hits)
    assert ranks.tolist() == [0, 2]
    m = rank_metrics(ranks, ks=(1, 3))
    assert m["R@1"] == 0.5 and m["R@3"] == 1.0 and m["median_rank"] == 2.0


def test_constant_similarity_scores_badly():
    sims = torch.zeros(5, 5)
    ranks = hit_ranks(sims, torch.eye(5, dtype=torch.bool))
    assert (ranks == 4).all()


def test_identical_reports_count_as_hits():
    # Two studies with the same normal report: retrieving the other study's copy is a hit.
    hits = study_hits(
        ["s1", "s2", "s3"], ["normal", "normal", "effusion"], ["s1", "s2", "s3"], ["normal", "normal", "effusion"]
    )
    assert hits.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    img = torch.eye(3)
    txt = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # s1/s2 texts swapped
    strict = retrieval_metrics(img, txt, torch.eye(3, dtype=torch.bool), ks=(1,))
    aware = retrieval_metrics(img, txt, hits, ks=(1,))
    assert np.isclose(strict["image_to_text"]["R@1"], 1 / 3)
    assert aware["image_to_text"]["R@1"] == 1.0


def test_similar_case_precision_counts_same_finding_sets_from_other_studies():
    from medclip.eval.retrieval import label_precision_at_k

    emb = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.95, 0.3], [0.0, 1.0], [0.1, 0.99]]), dim=1
    )
    labels = {"effusion": np.array([1, 1, 1, 0, 0.0]), "edema": np.array([0, 0, 1, 0, np.nan])}
    studies = ["s1", "s1", "s2", "s3", "s4"]
    res = label_precision_at_k(emb, labels, studies, ks=(1,))
    # s1's images skip each other and find s2 (different set: edema too) -> miss; s2 -> s1 (miss);
    # s3 <-> s4 share "no finding" (blank counts as not positive) -> hits.
    assert res["P@1"] == pytest.approx(2 / 5) and res["n_queries"] == 5
    assert 0 < res["chance"] < 1
