"""Evaluate a checkpoint on a manifest or a CSV: embeddings once (cached), then zero-shot, retrieval, linear probe.

Each task returns a JSON-able dict and, when an output directory is given, writes its PNG plots there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medclip.config import EVAL_SPLITS, EvalCfg
from medclip.errors import InputError
from medclip.eval.embeddings import Embedder
from medclip.eval.linear_probe import linear_probe
from medclip.eval.metrics import macro
from medclip.eval.overlap import check_training_overlap
from medclip.eval.plots import plot_probe, plot_retrieval_grid, plot_roc_curves, plot_training_curves
from medclip.eval.report import check_out_url, local_out_dir
from medclip.eval.retrieval import label_precision_at_k, retrieval_metrics, study_hits
from medclip.eval.screening import plot_reliability, screening_report
from medclip.eval.zero_shot import (
    MODES,
    binary_metrics,
    class_embeddings,
    evaluate_zero_shot,
    laterality,
    scores_for_mode,
)
from medclip.ingest.tables import EvalTable, check_source, finding_key, load_table
from medclip.io import storage
from medclip.models.medclip import checkpoint_sibling, local_checkpoint
from medclip.registry import Registry
from medclip.reports.sections import normalize_text
from medclip.text.prompts import load_prompts

logger = logging.getLogger(__name__)


@dataclass
class EvalRun:
    """What every task needs: the embedder, the table, the evaluation split and where plots go (``checkpoint``: as
    the user named it, a URL perhaps; "" -> the embedder's)."""

    embedder: Embedder
    table: EvalTable | None  # None: a grounding-only run on a boxes CSV
    split: str
    out_dir: Path | None
    n_bootstrap: int = 1000
    seed: int = 0
    plots: bool = True
    checkpoint: str = ""

    def plot_path(self, name: str) -> Path | None:
        return self.out_dir / f"{name}.png" if self.out_dir is not None and self.plots else None


def prompt_classes(run: EvalRun, prompts: str, findings: list[str] | None = None) -> tuple[dict, dict]:
    """-> (prompt set keyed by finding key, finding -> [2, D] class embeddings) for the labelled findings."""
    prompt_set = {finding_key(k): v for k, v in load_prompts(prompts).items()}
    wanted = findings if findings is not None else list(run.table.labels.columns)
    prompt_set = {k: v for k, v in prompt_set.items() if k in wanted}
    return prompt_set, class_embeddings(prompt_set, run.embedder.encode_text)


def run_zero_shot(run: EvalRun, cfg: EvalCfg) -> dict:
    prompts, mode = cfg.prompts, cfg.mode
    if mode not in MODES:
        raise InputError(f"zero-shot mode '{mode}' is not one of {MODES}")
    threshold_metric = cfg.threshold_metric
    _, classes = prompt_classes(run, prompts)
    if not classes:
        raise InputError(
            f"no labels for any prompt finding: prompt set '{prompts}' has "
            f"{sorted(load_prompts(prompts))}, the labels have {list(run.table.labels.columns)}; "
            "give a labels CSV (--labels) or label columns named like the prompt findings"
        )
    scale = run.embedder.logit_scale
    emb = run.embedder.embed(run.table, run.split)
    scores = scores_for_mode(emb.image_emb, classes, scale, mode=mode)
    labels = run.table.subset(run.split).label_dict(list(classes))
    val_scores = val_labels = None
    threshold_split = None
    if (run.table.rows["split"] == "val").any():
        val_scores = scores_for_mode(run.embedder.embed(run.table, "val").image_emb, classes, scale, mode=mode)
        val_labels = run.table.subset("val").label_dict(list(classes))
        threshold_split = "val" if run.split not in ("val", "all") else "val (overlaps the evaluated rows)"
    out = evaluate_zero_shot(
        scores,
        labels,
        val_scores=val_scores,
        val_labels=val_labels,
        n_bootstrap=run.n_bootstrap,
        seed=run.seed,
        threshold_metric=threshold_metric,
        mode=mode,
    )
    out.update(prompts=str(prompts), threshold_split=threshold_split)
    if sides := laterality(scores, labels):
        out["laterality"] = sides
    plots = {}
    path = run.plot_path("roc_curves")
    if path is not None and plot_roc_curves(scores, labels, path, n_bootstrap=min(run.n_bootstrap, 200), seed=run.seed):
        plots["roc_curves"] = path.name
    # operating points and calibration are fitted on validation rows only when those are not the evaluated rows
    held_out = threshold_split == "val"
    out["screening"] = screening_report(
        scores,
        labels,
        val_scores if held_out else None,
        val_labels if held_out else None,
        groups=run.table.subset(run.split).groups(list(cfg.subgroups)),
        rule=cfg.operating_point,
        prevalences=tuple(cfg.prevalence),
        calibration=cfg.calibration,
        n_bootstrap=run.n_bootstrap,
        seed=run.seed,
        min_positives=cfg.min_group,
        min_negatives=cfg.min_group,
    )
    path = run.plot_path("reliability")
    if path is not None and plot_reliability(out["screening"], path):
        plots["reliability"] = path.name
    if plots:
        out["_plots"] = plots
    return out


def _grid_queries(run: EvalRun, prompts: str, emb, *, n_queries: int = 4, k: int = 5) -> Path | None:
    """Retrieval grid: prompt phrases of findings present in the split (or report texts) -> top-k images."""
    labels = run.table.subset(run.split).label_dict()
    try:
        prompt_set = {finding_key(f): v for f, v in load_prompts(prompts).items()}
    except (ValueError, FileNotFoundError):
        prompt_set = {}
    present = [f for f in prompt_set if f in labels and np.nansum(labels[f] == 1) > 0][:n_queries]
    if present:
        queries = [prompt_set[f]["positive"][0] for f in present]
    else:
        queries = list(dict.fromkeys(t for t in emb.texts if t))[:n_queries]
    if not queries or run.plot_path("retrieval_grid") is None:
        return None
    top = (run.embedder.encode_text(queries) @ emb.image_emb.t()).topk(min(k, len(emb.rows)), dim=1).indices.numpy()
    paths = [[emb.rows["image_path"].iloc[j] for j in row] for row in top]
    relevant = (
        [[bool(labels[f][j] == 1) for j in row] for f, row in zip(present, top, strict=True)] if present else None
    )
    return plot_retrieval_grid(queries, paths, run.plot_path("retrieval_grid"), relevant=relevant)


def run_retrieval(run: EvalRun, cfg: EvalCfg) -> dict:
    prompts = cfg.prompts
    if not run.table.has_text:
        raise InputError(f"{run.table.source}: retrieval needs report text; add a text column (--text-col NAME)")
    emb = run.embedder.embed(run.table, run.split)
    studies, text_emb = emb.study_texts()
    if not len(studies):
        raise InputError(f"{run.table.source}: no report text in split '{run.split}'")
    # Identical normalised reports are hits too; an image without text matches no text by content.
    keys = [normalize_text(t) if t else f"<no text {i}>" for i, t in enumerate(emb.rows["report"])]
    hits = study_hits(list(emb.rows["study_id"]), keys, list(studies["study_id"]), [keys[i] for i in studies.index])
    has_hit = hits.any(1).numpy()
    out = retrieval_metrics(
        emb.image_emb[has_hit],
        text_emb,
        hits[has_hit],
        ks=tuple(cfg.retrieval_ks),
        n_bootstrap=run.n_bootstrap,
        seed=run.seed,
    )
    out["images_without_report"] = int((~has_hit).sum())
    labels = run.table.subset(run.split).label_dict()
    if labels:
        out["similar_cases"] = label_precision_at_k(emb.image_emb, labels, list(emb.rows["study_id"]))
    path = _grid_queries(run, prompts, emb)
    if path is not None:
        out["_plots"] = {"retrieval_grid": path.name}
    return out


def run_probe(run: EvalRun, cfg: EvalCfg) -> dict:
    prompts, mode = cfg.prompts, cfg.mode
    eval_split = "test" if run.split == "all" else run.split
    if eval_split == "train":
        raise InputError("the linear probe trains on 'train'; evaluate it on --split test (or val)")
    if run.table.labels.empty:
        raise InputError(f"{run.table.source}: the linear probe needs label columns (or --labels CSV)")
    present = set(run.table.rows["split"])
    if "train" not in present or eval_split not in present:
        raise InputError(
            f"{run.table.source}: the linear probe needs 'train' and '{eval_split}' rows; splits here: "
            f"{sorted(present)}"
        )
    parts = {}
    for s in ("train", "val", eval_split):
        if s == "val" and s not in present:  # nothing to choose C on: the probe falls back to C = 1
            empty = {f: np.empty(0) for f in run.table.labels.columns}
            parts[s] = (np.empty((0, parts["train"][0].shape[1]), dtype=np.float32), empty)
            continue
        emb = run.embedder.embed(run.table, s)
        parts[s] = (emb.image_emb.numpy(), run.table.subset(s).label_dict())
    out = linear_probe(
        parts["train"],
        parts["val"],
        parts[eval_split],
        fractions=tuple(cfg.probe_fractions),
        shots=tuple(cfg.probe_shots),
        n_bootstrap=run.n_bootstrap,
        seed=run.seed,
    )
    out["eval_split"] = eval_split
    if "val" not in present:
        out["note"] = "no 'val' rows: C was not tuned (C = 1)"
    _, classes = prompt_classes(run, prompts, out["findings"])
    zs_scores = scores_for_mode(
        run.embedder.embed(run.table, eval_split).image_emb, classes, run.embedder.logit_scale, mode=mode
    )
    labels = parts[eval_split][1]
    out["zero_shot_auroc"] = {f: binary_metrics(labels[f], zs_scores[f])["auroc"] for f in zs_scores if f in labels}
    path = run.plot_path("probe")
    if path is not None and plot_probe(out, path, zero_shot_macro=macro(list(out["zero_shot_auroc"].values()))):
        out["_plots"] = {"probe": path.name}
    return out


# name -> (results key, task); `medclip eval` offers these names (and "all").
EVAL_TASKS: Registry = Registry("eval task")
EVAL_TASKS.register("zeroshot")(("zero_shot", run_zero_shot))
EVAL_TASKS.register("retrieval")(("retrieval", run_retrieval))
EVAL_TASKS.register("probe")(("probe", run_probe))


def run_grounding(run: EvalRun, cfg: EvalCfg) -> dict:
    from medclip.eval.grounding import evaluate_grounding

    if not cfg.grounding_csv:
        raise InputError("grounding needs (image, phrase, box) rows: --boxes BOXES.csv (MS-CXR layout)")
    return evaluate_grounding(
        run.embedder,
        cfg.grounding_csv,
        method=cfg.grounding_method,
        n_bootstrap=run.n_bootstrap,
        seed=run.seed,
        plot_path=run.plot_path("grounding_examples"),
        examples=cfg.grounding_examples,
        image_root=cfg.grounding_image_root or None,
        show_progress=run.embedder.show_progress,
    )


EVAL_TASKS.register("grounding")(("grounding", run_grounding))


def run_tasks(run: EvalRun, cfg: EvalCfg, *, training_curves: bool = True) -> dict:
    """``cfg.tasks`` in registration order -> {results key: section, ..., "plots": {name: PNG file}}; with
    ``training_curves``, the checkpoint's run's metrics.jsonl is plotted too."""
    results: dict = {}
    for name in EVAL_TASKS:  # registration order, whatever order the tasks were given in
        if name in cfg.tasks:
            key, task = EVAL_TASKS.get(name)
            results[key] = task(run, cfg)
    plots = {}
    for part in results.values():
        plots.update(part.pop("_plots", {}))
    path = run.plot_path("training_curves") if training_curves else None
    metrics = checkpoint_sibling(run.checkpoint or run.embedder.checkpoint, "metrics.jsonl") if path else None
    if path is not None and metrics is not None and plot_training_curves(metrics, path):
        plots["training_curves"] = path.name
    results["plots"] = plots
    return results


def _evaluate_grounding_only(cfg: EvalCfg, *, show_progress: bool) -> dict:
    """``medclip eval grounding --csv BOXES.csv``: the boxes CSV names its images; no manifest, no embeddings."""
    check_out_url(cfg.out_dir)
    out = local_out_dir(cfg.out_dir) if cfg.out_dir else None
    embedder = Embedder(cfg.checkpoint, batch_size=cfg.batch_size, device=cfg.device, show_progress=show_progress)
    run = EvalRun(embedder, None, cfg.split, out, n_bootstrap=cfg.bootstrap, seed=cfg.seed, plots=cfg.plots)
    results: dict = {"checkpoint": storage.display(cfg.checkpoint), "source": Path(cfg.grounding_csv).name}
    results.update(run_tasks(run, cfg))
    return results


def evaluate(cfg: EvalCfg, *, show_progress: bool = True) -> dict:
    """Run ``cfg.tasks`` on one split of a manifest (or a CSV); with ``cfg.out_dir``, cache embeddings and plot there.

    ``cfg.shards`` (a ``medclip prepare`` output of the manifest) are read instead of decoding the image files.
    The returned dict is what ``write_results`` saves: "zero_shot", "retrieval", "probe" sections, "plots"
    (name -> PNG file in ``out_dir``) and the run's provenance. ``cfg.checkpoint`` may be a URL (fetched to the local
    cache); so may ``cfg.out_dir`` (the run works in its local staging folder; ``write_results`` uploads).
    """
    for task in cfg.tasks:
        EVAL_TASKS.get(task)  # an unknown task fails here, with a did-you-mean
    if cfg.split not in EVAL_SPLITS:
        raise InputError(f"unknown split '{cfg.split}'; choose from {EVAL_SPLITS}")
    if not cfg.checkpoint:
        raise InputError("evaluation needs a checkpoint (--checkpoint, a run's final/ directory)")
    if list(cfg.tasks) == ["grounding"] and not (cfg.manifest or cfg.csv):
        return _evaluate_grounding_only(cfg, show_progress=show_progress)
    check_source(manifest=cfg.manifest, csv=cfg.csv, shards=cfg.shards)
    check_out_url(cfg.out_dir)
    out = local_out_dir(cfg.out_dir) if cfg.out_dir else None
    checkpoint = local_checkpoint(cfg.checkpoint)
    embedder = Embedder(
        checkpoint,
        cache_dir=out if cfg.cache else None,
        batch_size=cfg.batch_size,
        device=cfg.device,
        show_progress=show_progress,
        shards=cfg.shards or None,
    )
    table = load_table(
        manifest=cfg.manifest or None,
        csv=cfg.csv or None,
        text_policy=embedder.text_policy,
        labels_csv=cfg.labels or None,
        image_col=cfg.image_col or None,
        text_col=cfg.text_col or None,
        label_cols=list(cfg.label_cols) or None,
    )
    rows = table.subset(cfg.split).rows
    if rows.empty:
        raise InputError(f"{table.source}: no rows in split '{cfg.split}'")
    # before any embedding: a split holding training patients is refused (unless allowed), in one line
    overlap = check_training_overlap(checkpoint, table, cfg.split, allow=cfg.allow_overlap)
    run = EvalRun(
        embedder,
        table,
        cfg.split,
        out,
        n_bootstrap=cfg.bootstrap,
        seed=cfg.seed,
        plots=cfg.plots and out is not None,
        checkpoint=str(cfg.checkpoint),
    )
    results: dict = {
        "checkpoint": storage.display(cfg.checkpoint),
        "source": table.source,
        "split": cfg.split,
        "n_images": len(rows),
        "n_studies": int(rows["study_id"].nunique()),
        "labels": list(table.labels.columns),
        "train_manifest_hash": embedder.meta.get("manifest_hash"),
        **overlap,
    }
    results.update(run_tasks(run, cfg))
    results["embeddings"] = {"cache_dir": str(out) if out and cfg.cache else None, "reused_splits": embedder.reused}
    return results
