from __future__ import annotations

import json

import numpy as np
from PIL import Image

from medclip.eval.plots import plot_retrieval_grid, plot_roc_curves, plot_training_curves
from medclip.eval.report import markdown_table, write_results
from medclip.eval.zero_shot import evaluate_zero_shot


def _is_png(path) -> bool:
    with Image.open(path) as img:
        return img.format == "PNG" and img.size[0] > 100


def test_roc_plot_and_skips(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60).astype(float)
    scores = {"a": rng.random(60) + y, "b": rng.random(60)}
    labels = {"a": y, "b": np.zeros(60)}  # "b" has one class: no panel
    assert _is_png(plot_roc_curves(scores, labels, tmp_path / "roc.png", n_bootstrap=20))
    assert plot_roc_curves({"b": scores["b"]}, {"b": labels["b"]}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_training_curves_from_metrics_jsonl(tmp_path):
    lines = [json.dumps({"step": s, "loss": 3.0 / s, "lr": 1e-3, "temperature": 0.07}) for s in range(1, 20)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines + ["not json"]) + "\n")
    assert _is_png(plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png"))
    assert plot_training_curves(tmp_path / "missing.jsonl", tmp_path / "x.png") is None


def test_retrieval_grid_draws_thumbnails(tmp_path):
    Image.fromarray((np.random.default_rng(0).random((50, 40)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    out = plot_retrieval_grid(
        ["effusion", "pneumothorax"],
        [[str(tmp_path / "a.png")] * 3, [str(tmp_path / "a.png")]],
        tmp_path / "grid.png",
        relevant=[[True, False, True], [False]],
    )
    assert _is_png(out)


def test_markdown_and_results_files(tmp_path):
    scores = {"x": np.array([0.9, 0.8, 0.3, 0.2, 0.6]), "y": np.array([0.1, 0.2, 0.9, 0.8, 0.5])}
    labels = {"x": np.array([1, 1, 0, 0, 1]), "y": np.array([1, 1, 0, 0, 0])}
    zs = evaluate_zero_shot(scores, labels, n_bootstrap=50)
    results = {"zero_shot": zs, "plots": {"roc_curves": "roc_curves.png"}}
    md = markdown_table(results)
    assert "| x | 1.000 [" in md and "> warning: y: AUROC 0.000 < 0.5" in md
    write_results(results, tmp_path, title="t")
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("# t") and "![roc_curves](roc_curves.png)" in text
    assert json.loads((tmp_path / "results.json").read_text())["zero_shot"]["polarity_warnings"] == ["y"]
