"""Embeddings extracted once, with the checkpoint's own preprocessing recipe; every evaluator takes these."""

from __future__ import annotations

import logging

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medclip.data.datasets import PairCollator, PairDataset, pairs_from_manifest
from medclip.models.medclip import MedClip
from medclip.text.tokenizer import tokenize

logger = logging.getLogger(__name__)


@torch.no_grad()
def embed_images(
    model: MedClip, rows: pd.DataFrame, *, text_policy: str, batch_size: int = 64, device="cpu", show_progress=True
) -> torch.Tensor:
    """[N, D] L2-normalised image embeddings, in row order; transforms come from ``model.preprocess``."""
    pairs, texts = pairs_from_manifest(rows, text_policy=text_policy)
    dataset = PairDataset(pairs, texts, model.preprocess, train=False, cache_rate=0.0)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=PairCollator(None, texts, max_length=0, tokenize_text=False))  # fmt: skip
    model.eval()
    out = [model.encode_image(b["image"].to(device)) for b in tqdm(loader, desc="embed images", disable=not show_progress)]
    return torch.cat(out).cpu() if out else torch.empty(0)


@torch.no_grad()
def embed_texts(model: MedClip, tokenizer, texts: list[str], *, max_length: int, batch_size: int = 64, device="cpu"):
    """[M, D] L2-normalised text embeddings."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenize(tokenizer, texts[i : i + batch_size], max_length=max_length)
        out.append(model.encode_text(enc["input_ids"].to(device), enc["attention_mask"].to(device)))
    return torch.cat(out).cpu() if out else torch.empty(0)
