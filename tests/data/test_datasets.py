from __future__ import annotations

import pandas as pd
import torch

from medclip.data.datasets import PairCollator, pair_text, pairs_from_manifest


def _rows():
    return pd.DataFrame(
        {
            "row_id": [0, 1, 2],
            "image_path": ["a.dcm", "b.dcm", "c.dcm"],
            "study_id": ["s1", "s1", "s2"],
            "findings": [
                "Heart size is normal. No pleural effusion.",
                "Heart size is normal. No pleural effusion.",
                None,
            ],
            "impression": [
                "No acute cardiopulmonary process.",
                "No acute cardiopulmonary process.",
                "No acute  cardiopulmonary process.",
            ],
        }
    )


def test_identical_reports_share_one_text_index():
    pairs, texts = pairs_from_manifest(_rows(), text_policy="impression")
    assert len(texts) == 1 and {p["text_index"] for p in pairs} == {0}
    pairs, texts = pairs_from_manifest(_rows(), text_policy="findings_impression")
    assert len(texts) == 2 and pairs[0]["text_index"] == pairs[1]["text_index"] != pairs[2]["text_index"]


def test_sentence_sampling_draws_each_sentence_and_is_seeded():
    pairs, texts = pairs_from_manifest(_rows(), text_policy="sentence_sample")
    assert sorted(texts) == sorted(
        ["Heart size is normal.", "No pleural effusion.", "No acute cardiopulmonary process."]
    )
    assert len(pairs[0]["text_choices"]) == 3 and len(pairs[2]["text_choices"]) == 1
    items = [{**p, "image": torch.zeros(1, 4, 4)} for p in pairs]

    def draws(seed):
        collate = PairCollator(None, texts, max_length=16, tokenize_text=False, seed=seed)
        return [tuple(collate(items)["text_index"].tolist()) for _ in range(20)]

    assert draws(3) == draws(3)
    assert {d[0] for d in draws(3)} == set(pairs[0]["text_choices"])  # every sentence gets drawn
    assert all(d[2] == pairs[2]["text_index"] for d in draws(3))
    # As one text (evaluation, retrieval) the policy means the whole report.
    assert pair_text(next(_rows().itertuples(index=False)), "sentence_sample").startswith("Heart size is normal.")
