"""Evaluate a checkpoint on a manifest split: embeddings once, then zero-shot and retrieval."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medclip.data.datasets import pair_text
from medclip.data.manifest import read_manifest
from medclip.data.reports import normalize_text
from medclip.eval.embeddings import embed_images, embed_texts
from medclip.eval.retrieval import retrieval_metrics, study_hits
from medclip.eval.zero_shot import class_embeddings, evaluate_zero_shot, zero_shot_scores
from medclip.models.medclip import MedClip
from medclip.text.prompts import load_prompts

logger = logging.getLogger(__name__)

TASKS = ("zeroshot", "retrieval")


def load_checkpoint(path: str | Path, *, device="cpu"):
    """-> (model, tokenizer, meta) from a ``save_pretrained`` directory."""
    from transformers import AutoTokenizer

    model = MedClip.from_pretrained(path, device=device)
    tokenizer = AutoTokenizer.from_pretrained(str(Path(path) / "tokenizer"))
    return model, tokenizer, model.meta


def attach_labels(rows: pd.DataFrame, labels_csv: str | Path | None, findings: list[str]) -> dict[str, np.ndarray]:
    """finding -> [N] labels (1 / 0 / -1 / NaN) from manifest columns or a CSV keyed by study_id."""
    table = rows
    if labels_csv:
        labels = pd.read_csv(labels_csv)
        if "study_id" not in labels.columns:
            raise ValueError(f"{labels_csv}: needs a study_id column (and one column per finding)")
        keep = ["study_id"] + [f for f in findings if f in labels.columns]
        table = rows[["study_id"]].merge(labels[keep], on="study_id", how="left")
    return {f: table[f].to_numpy(dtype=float) for f in findings if f in table.columns}


def evaluate(
    checkpoint: str | Path,
    manifest: str | Path,
    *,
    tasks: tuple[str, ...] = TASKS,
    split: str = "test",
    labels_csv: str | Path | None = None,
    prompts: str = "cxr_demo",
    batch_size: int = 64,
    device: str = "cpu",
    show_progress: bool = True,
) -> dict:
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown eval task '{task}'; choose from {TASKS}")
    model, tokenizer, meta = load_checkpoint(checkpoint, device=device)
    df, _ = read_manifest(manifest)
    rows = df[df["split"] == split].reset_index(drop=True) if split != "all" else df
    if rows.empty:
        raise ValueError(f"{manifest}: no rows in split '{split}'")
    policy, max_len = meta.get("text_policy", "findings_impression"), int(meta.get("max_text_tokens", 128))
    image_emb = embed_images(model, rows, text_policy=policy, batch_size=batch_size, device=device,
                             show_progress=show_progress)  # fmt: skip

    def encode(texts: list[str]) -> torch.Tensor:
        return embed_texts(model, tokenizer, texts, max_length=max_len, batch_size=batch_size, device=device)

    results: dict = {"checkpoint": str(checkpoint), "split": split, "n_images": len(rows),
                     "n_studies": int(rows["study_id"].nunique())}  # fmt: skip
    if "zeroshot" in tasks:
        prompt_set = load_prompts(prompts)
        classes = class_embeddings(prompt_set, encode)
        scores = zero_shot_scores(image_emb, classes, float(model.scale()))
        labels = attach_labels(rows, labels_csv, list(prompt_set))
        if not labels:
            raise ValueError("no labels for any prompt finding: give a labels CSV (--labels) or label columns")
        results["zero_shot"] = evaluate_zero_shot(scores, labels)
    if "retrieval" in tasks:
        texts = [pair_text(r, policy) for r in rows.itertuples(index=False)]
        keys = [normalize_text(t) for t in texts]
        studies = rows.drop_duplicates("study_id")
        text_idx = studies.index.to_numpy()
        text_emb = encode([texts[i] for i in text_idx])
        hits = study_hits(list(rows["study_id"]), keys, list(studies["study_id"]), [keys[i] for i in text_idx])
        results["retrieval"] = retrieval_metrics(image_emb, text_emb, hits)
    return results
