"""Grounding heat maps from checkpoints: geometry back onto the image, both map kinds, the CLI, and learning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medclip.cli import main
from medclip.errors import InputError
from medclip.eval.grounding import Grounder, grid_maps, resolve_method, to_image


def _frontal_images(archive, n: int) -> list[str]:
    return sorted(str(p) for p in archive.glob("dicom/*/*/*/1.dcm"))[:n]


def test_a_grid_peak_lands_on_the_same_part_of_the_image_through_the_padding():
    grid = torch.zeros(1, 4, 4)
    grid[0, 0, 3] = 1.0  # top-right cell of the padded square input
    # a wide image (rows 100, cols 200) is scaled to 64 x 32 and padded top and bottom: rows 16..48 of the input
    heat = to_image(grid, (64, 64), (100, 200))[0]
    assert heat.shape == (100, 200)
    r, c = np.unravel_index(np.argmax(heat), heat.shape)
    assert c > 150 and r < 25  # still top right, and the pad's rows were cut away, not squeezed in
    tall = to_image(grid, (64, 64), (200, 100))[0]  # padded left and right: cols 16..48
    r, c = np.unravel_index(np.argmax(tall), tall.shape)
    assert r < 40 and c > 80


def test_global_maps_for_a_model_without_local_heads(tiny_checkpoint, tiny_archive):
    grounder = Grounder(tiny_checkpoint)
    assert grounder.method == "global" == resolve_method(grounder.model)
    with pytest.raises(InputError, match="no local word-region heads"):
        resolve_method(grounder.model, "local")
    image = _frontal_images(tiny_archive, 1)[0]
    first, second = grounder.ground(image, ["left pleural effusion", "right pneumothorax"])
    assert first.heatmap.shape == first.image.shape and first.image.ndim == 2
    assert first.grid.shape == (2, 2)  # 64 px through a stride-32 test network
    assert not np.allclose(first.heatmap, second.heatmap)  # the phrase matters
    # the map is the global head on each cell: with average pooling and a linear head, the cells' projections
    # average to the image's own (unnormalised) projection
    model = grounder.model
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        maps = model.image.forward_maps(x)
        per_cell = model.image_proj(maps.last.flatten(2).transpose(1, 2)).mean(1)
        assert torch.allclose(per_cell, model.image_proj(model.image(x)), atol=1e-5)
        enc = grounder.embedder.tokenizer(["left pleural effusion"], return_tensors="pt")
        assert grid_maps(model, x, enc["input_ids"], enc["attention_mask"], method="global").shape == (1, 2, 2)
    with pytest.raises(InputError, match="non-empty phrase"):
        grounder.ground(image, [" "])


def _boxes_csv(path, images) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height"]
        )
        for i, image in enumerate(images):
            w.writerow([f"id{i}", "Pleural Effusion", "left pleural effusion", image, 300, 250, 150, 150, "", ""])
            w.writerow([f"id{i}", "Pleural Effusion", "left pleural effusion", image, 320, 120, 60, 60, "", ""])


def test_cli_ground_and_eval_grounding(tiny_checkpoint, tiny_archive, tmp_path, capsys):
    images = _frontal_images(tiny_archive, 3)
    out = tmp_path / "ground"
    argv = ["-q", "ground", "--checkpoint", str(tiny_checkpoint), images[0], "left pleural effusion", "cardiomegaly"]
    assert main([*argv, "--out", str(out)]) == 0
    payload = json.loads((out / "grounding.json").read_text())
    assert [p["phrase"] for p in payload["phrases"]] == ["left pleural effusion", "cardiomegaly"]
    assert all((out / p["overlay"]).stat().st_size > 1000 for p in payload["phrases"])
    assert images[0] not in (out / "grounding.json").read_text()  # hospital paths carry patient identifiers

    boxes = tmp_path / "boxes.csv"
    _boxes_csv(boxes, images)
    ev = tmp_path / "eval"
    args = ["-q", "eval", "grounding", "--checkpoint", str(tiny_checkpoint), "--csv", str(boxes), "--out", str(ev)]
    assert main([*args, "--bootstrap", "50"]) == 0
    results = json.loads((ev / "results.json").read_text())
    gr = results["grounding"]
    assert gr["n"] == 3 and gr["method"] == "global"  # two boxes of one phrase are one row
    for key in ("pointing_game", "cnr", "miou"):
        assert gr[key]["value"] is not None and len(gr[key]["ci"]) == 2
        assert key in gr["random_floor"]
    assert (ev / "grounding_examples.png").stat().st_size > 1000
    assert "## Grounding" in (ev / "results.md").read_text()
    capsys.readouterr()
    assert main(["-q", "ground", "--checkpoint", str(tiny_checkpoint), images[0], "--out", str(out)]) == 2
    assert "phrase" in capsys.readouterr().err


def test_eval_grounding_resolves_relative_paths_from_image_root_and_names_missing_rows(
    tiny_checkpoint, tiny_archive, tmp_path, capsys
):
    images = _frontal_images(tiny_archive, 2)
    relative = [str(Path(p).relative_to(tiny_archive)) for p in images]  # MS-CXR: paths under the dataset root
    boxes = tmp_path / "csvs" / "boxes.csv"
    boxes.parent.mkdir()
    _boxes_csv(boxes, relative)
    base = ["-q", "eval", "grounding", "--checkpoint", str(tiny_checkpoint), "--csv", str(boxes), "--bootstrap", "20"]
    assert main([*base, "--out", str(tmp_path / "no_root")]) == 2  # relative to the CSV's folder: not there
    err = capsys.readouterr().err
    assert "2 of 2 items" in err and "rows 1, 3" in err and "--image-root" in err
    assert relative[0] not in err  # rows, not paths: a hospital path can carry a name
    assert main([*base, "--image-root", str(tiny_archive), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["grounding"]["n"] == 2


def test_every_word_of_a_phrase_weighs_the_same_however_many_pieces_it_has():
    from medclip.eval.grounding import _word_ids, token_weights
    from medclip.models.medclip import word_mask
    from medclip.text.tokenizer import load_tokenizer, tokenize

    tok = load_tokenizer("minilm")
    phrases = ["right pleural effusion", "cardiomegaly"]
    enc = tokenize(tok, phrases, max_length=32)
    ids = _word_ids(tok, phrases, enc["input_ids"].shape[1], 32)
    weights = token_weights(word_mask(enc["attention_mask"]), ids)
    assert torch.allclose(weights.sum(1), torch.ones(2))
    pieces = tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert len(pieces) > 5  # "pleural" and "effusion" come in several pieces each
    by_word = {}
    for w, weight in zip(ids[0].tolist(), weights[0].tolist(), strict=True):
        if w >= 0:
            by_word[w] = by_word.get(w, 0.0) + weight
    assert sorted(by_word) == [0, 1, 2] and np.allclose(list(by_word.values()), 1 / 3)
    assert weights[0, pieces.index("right")] == pytest.approx(1 / 3)
    assert weights[0, 0] == 0 == weights[1, 0]  # [CLS]
    plain = token_weights(word_mask(enc["attention_mask"]))  # no word ids: each piece is a word
    assert plain[0, pieces.index("right")] == pytest.approx(1 / (int(enc["attention_mask"][0].sum()) - 2))


def test_a_peak_can_fall_between_cell_centres():
    grid = torch.zeros(1, 4, 4)
    grid[0, 1, 1], grid[0, 1, 2] = 1.0, 0.9  # a lesion between two cells, nearer the first
    heat = to_image(grid, (64, 64), (64, 64))[0]
    r, c = np.unravel_index(np.argmax(heat), heat.shape)
    centres = (24, 40)  # columns of the two cells' centres (16-pixel cells)
    assert centres[0] < c < centres[1] and c < 32  # between them, on the stronger cell's side
    assert 20 <= r <= 27  # and in the right row
