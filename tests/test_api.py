"""The public API (``import medclip``): what a notebook user types, checked against the evaluators' own path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import medclip


def test_all_names_the_public_functions():
    assert len(medclip.__all__) == len(set(medclip.__all__))
    for name in medclip.__all__:
        assert hasattr(medclip, name), name
    assert {
        "load",
        "encode_images",
        "encode_texts",
        "zero_shot_scores",
        "build_index",
        "query_index",
        "parse_sections",
        "label_report",
        "ground",
    } <= set(medclip.__all__)


def test_import_medclip_stays_light():
    code = "import sys, medclip; print(sorted(m for m in ('torch', 'monai', 'faiss') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.fixture(scope="module")
def test_rows(tiny_manifest):
    from medclip.ingest.manifest import read_manifest

    df, _ = read_manifest(tiny_manifest)
    return df[df["split"] == "test"].reset_index(drop=True)


def test_encode_images_uses_the_checkpoints_preprocessing(tiny_checkpoint, tiny_manifest, test_rows):
    """The API's embeddings are the evaluators' embeddings of the same images."""
    from medclip.eval.embeddings import Embedder
    from medclip.ingest.tables import load_table

    model = medclip.load(tiny_checkpoint)
    paths = list(test_rows["image_path"])
    emb = medclip.encode_images(model, paths)
    assert emb.shape == (len(paths), model.model.cfg.embed_dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(paths)), atol=1e-5)
    reference = Embedder(tiny_checkpoint, show_progress=False)
    table = load_table(manifest=tiny_manifest, text_policy=reference.text_policy)
    assert torch.allclose(emb, reference.embed(table, "test").image_emb, atol=1e-5)
    text = medclip.encode_texts(tiny_checkpoint, ["small left pleural effusion", "no acute disease"])
    assert text.shape == (2, emb.shape[1]) and not torch.allclose(text[0], text[1])


def test_zero_shot_scores_from_files_or_embeddings(tiny_checkpoint, test_rows):
    from medclip.text.prompts import load_prompts

    model = medclip.load(tiny_checkpoint)
    paths = list(test_rows["image_path"])[:6]
    scores = medclip.zero_shot_scores(model, paths, prompts="cxr_demo")
    assert set(scores) == set(load_prompts("cxr_demo"))
    for finding, p in scores.items():
        assert p.shape == (len(paths),) and np.all((p > 0) & (p < 1)), finding
    again = medclip.zero_shot_scores(model, medclip.encode_images(model, paths), prompts="cxr_demo")
    assert all(np.allclose(scores[f], again[f], atol=1e-6) for f in scores)
    multiclass = medclip.zero_shot_scores(model, paths, prompts="cxr_demo", mode="multiclass")
    assert np.allclose(sum(multiclass.values()), 1.0, atol=1e-5)  # a softmax over the findings


def test_ground_gives_the_grounders_maps(tiny_checkpoint, test_rows):
    from medclip.eval.grounding import Grounder

    model = medclip.load(tiny_checkpoint)
    image = test_rows["image_path"][0]
    maps = medclip.ground(model, image, ["left pleural effusion", "cardiomegaly"])
    assert [g.phrase for g in maps] == ["left pleural effusion", "cardiomegaly"]
    assert maps[0].method == "global"  # the tiny preset trains without the local loss
    reference = Grounder(tiny_checkpoint).ground(image, "left pleural effusion")[0]
    assert np.allclose(maps[0].heatmap, reference.heatmap, atol=1e-6) and maps[0].heatmap.shape == maps[0].image.shape
    assert medclip.ground(tiny_checkpoint, image, "cardiomegaly")[0].peak == maps[1].peak


def test_build_load_and_query_an_index(tiny_checkpoint, tiny_manifest, test_rows, tmp_path):
    model = medclip.load(tiny_checkpoint)
    index = medclip.build_index(model, tmp_path / "idx", manifest=tiny_manifest, split="test")
    assert len(index) == len(test_rows)
    again = medclip.load_index(tmp_path / "idx")
    image = test_rows["image_path"].iloc[3]
    answer = medclip.query_index(again, image, k=3, model=model)
    assert answer["query_type"] == "image" and len(answer["results"]) == 3
    assert answer["results"][0]["study_id"] == test_rows["study_id"].iloc[3]  # an image finds itself first
    scores = [r["score"] for r in medclip.query_index(again, "right pleural effusion", k=5)["results"]]
    assert scores == sorted(scores, reverse=True)


def test_parse_sections_and_label_report():
    report = "FINDINGS: Small left pleural effusion. No pneumothorax.\nIMPRESSION: Left effusion."
    sections = medclip.parse_sections(report)
    assert sections["findings"].startswith("Small left pleural effusion")
    assert sections["impression"] == "Left effusion."
    labels = medclip.label_report(report, "chexpert")
    assert labels["Pleural Effusion"] == 1 and labels["Pneumothorax"] == 0 and labels["Edema"] is None
