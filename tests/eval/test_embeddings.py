from __future__ import annotations

import numpy as np
import pytest
import torch

from medclip.eval.embeddings import Embedder, unique_texts
from medclip.ingest.tables import load_table


def test_embeddings_are_cached_per_split_and_reused(tiny_checkpoint, tiny_manifest, tmp_path, monkeypatch):
    first = Embedder(tiny_checkpoint, cache_dir=tmp_path, show_progress=False)
    table = load_table(manifest=tiny_manifest, text_policy=first.text_policy)
    emb = first.embed(table, "test")
    n = int((table.rows["split"] == "test").sum())
    assert emb.image_emb.shape == (n, first.model.cfg.embed_dim)
    assert torch.allclose(emb.image_emb.norm(dim=1), torch.ones(n), atol=1e-5)
    assert (tmp_path / "embeddings.test.npz").is_file() and first.reused == []

    second = Embedder(tiny_checkpoint, cache_dir=tmp_path, show_progress=False)
    monkeypatch.setattr(second, "encode_images", lambda paths: pytest.fail("the cache should have been used"))
    again = second.embed(table, "test")
    assert second.reused == ["test"]
    assert torch.equal(again.image_emb, emb.image_emb) and again.texts == emb.texts
    assert np.array_equal(again.text_index, emb.text_index)


def test_a_changed_split_is_not_served_from_the_cache(tiny_checkpoint, tiny_manifest, tmp_path):
    emb = Embedder(tiny_checkpoint, cache_dir=tmp_path, show_progress=False)
    table = load_table(manifest=tiny_manifest, text_policy=emb.text_policy)
    emb.embed(table, "test")
    table.rows.loc[table.rows["split"] == "test", "report"] = "edited report text."
    other = Embedder(tiny_checkpoint, cache_dir=tmp_path, show_progress=False)
    changed = other.embed(table, "test")
    assert other.reused == [] and changed.texts == ["edited report text."]


def test_all_splits_join_in_table_order(tiny_checkpoint, tiny_manifest):
    emb = Embedder(tiny_checkpoint, show_progress=False)
    table = load_table(manifest=tiny_manifest, text_policy=emb.text_policy)
    everything = emb.embed(table, "all")
    test = emb.embed(table, "test")
    mask = (table.rows["split"] == "test").to_numpy()
    assert list(everything.rows["row_id"]) == list(table.rows["row_id"])
    assert torch.allclose(everything.image_emb[torch.tensor(mask)], test.image_emb)
    texts = [everything.texts[i] for i in everything.text_index]
    assert texts == list(table.rows["report"])


def test_unique_texts_share_normalised_duplicates():
    texts, index = unique_texts(["No acute process.", "no acute  process", "", "Effusion."])
    assert texts == ["No acute process.", "Effusion."] and index.tolist() == [0, 0, -1, 1]
