"""Embeddings extracted once, with the checkpoint's own preprocessing recipe; every evaluator takes these.

:class:`Embedder` loads a checkpoint lazily, embeds the images and unique report texts of one split of an
:class:`~medclip.ingest.tables.EvalTable` in batches (with a progress bar) and caches them in
``CACHE_DIR/embeddings.<split>.npz``, keyed by the checkpoint's fingerprint, the split's content hash and the split.
A later run with the same key reads the file instead of running the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medclip.data.datasets import pairs_from_manifest, shard_transforms
from medclip.data.shards import ShardStore
from medclip.data.transforms import build_transforms
from medclip.distributed import resolve_device
from medclip.errors import InputError
from medclip.ingest.tables import EvalTable
from medclip.models.medclip import (
    CONFIG_NAME,
    TOKENIZER_DIR,
    WEIGHTS_NAME,
    MedClip,
    local_checkpoint,
    read_checkpoint_meta,
)
from medclip.reports.sections import normalize_text
from medclip.text.tokenizer import load_tokenizer, tokenize

logger = logging.getLogger(__name__)

EMBED_VERSION = 1  # bump when the extraction changes, so old caches are not reused


def _collate(items: list[dict]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(it["image"]) for it in items])  # [B, C, H, W]


class _ShardOrFile:
    """The prepared image of a row the shards hold, else the file decoded (same normalisation either way)."""

    def __init__(self, from_shards, from_file, store: ShardStore) -> None:
        self.from_shards, self.from_file, self.store = from_shards, from_file, store

    def __call__(self, item: dict) -> dict:
        return self.from_shards(item) if item["row_id"] in self.store else self.from_file(item)


@torch.no_grad()
def embed_image_paths(
    model: MedClip,
    paths: list[str],
    *,
    batch_size: int = 64,
    device="cpu",
    show_progress: bool = True,
    row_ids: list[int] | None = None,
    shards: ShardStore | None = None,
) -> torch.Tensor:
    """[N, D] L2-normalised image embeddings in path order; transforms come from ``model.preprocess``.

    With ``shards`` (and the images' manifest ``row_ids``) prepared images are read instead of decoding the files,
    through the same normalisation; images the shards lack (rejected at prepare time) are decoded from their files.
    """
    transform = build_transforms(model.preprocess, train=False)
    items = [{"image": str(p)} for p in paths]
    if shards is not None:
        if row_ids is None or len(row_ids) != len(paths):
            raise ValueError("reading shards needs one manifest row_id per image")
        shards.check_recipe(model.preprocess)
        items = [{"image": str(p), "row_id": int(r)} for p, r in zip(paths, row_ids, strict=True)]
        shards.select(items)  # refuses shards made from another manifest; warns about rows they lack
        transform = _ShardOrFile(shard_transforms(transform, model.preprocess, shards), transform, shards)
    dataset = Dataset(items, transform=transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    model.eval()
    out = [
        model.encode_image(b.to(device)).float().cpu()
        for b in tqdm(loader, desc="embed images", unit="batch", disable=not show_progress)
    ]
    return torch.cat(out) if out else torch.empty(0, model.cfg.embed_dim)


def embed_images(
    model: MedClip, rows: pd.DataFrame, *, text_policy: str, batch_size: int = 64, device="cpu", show_progress=True
) -> torch.Tensor:
    """[N, D] image embeddings of manifest rows, in row order (kept for callers that hold manifest rows)."""
    pairs, _ = pairs_from_manifest(rows, text_policy=text_policy)
    return embed_image_paths(
        model, [p["image"] for p in pairs], batch_size=batch_size, device=device, show_progress=show_progress
    )


@torch.no_grad()
def embed_texts(
    model: MedClip,
    tokenizer,
    texts: list[str],
    *,
    max_length: int,
    batch_size: int = 64,
    device="cpu",
    show_progress: bool = False,
) -> torch.Tensor:
    """[M, D] L2-normalised text embeddings."""
    model.eval()
    out = []
    starts = range(0, len(texts), batch_size)
    for i in tqdm(starts, desc="embed texts", unit="batch", disable=not show_progress or len(starts) < 2):
        enc = tokenize(tokenizer, texts[i : i + batch_size], max_length=max_length)
        out.append(model.encode_text(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.cfg.embed_dim)


def checkpoint_fingerprint(path: str | Path) -> str:
    """SHA-256 (16 hex) of the checkpoint's config and weights: the model part of an embedding cache key."""
    digest = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        with open(Path(path) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):  # noqa: B023 - fh is the loop's own handle
                digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass
class SplitEmbeddings:
    """Image embeddings [N, D] of ``rows`` and embeddings [M, D] of their unique normalised report texts."""

    rows: pd.DataFrame
    image_emb: torch.Tensor
    text_emb: torch.Tensor
    text_index: np.ndarray  # [N] row of text_emb per image; -1 when the image has no report text
    texts: list[str]

    def study_texts(self) -> tuple[pd.DataFrame, torch.Tensor]:
        """One report per study (its first image's), for retrieval -> (study rows, [S, D] text embeddings)."""
        first = self.rows.assign(_t=self.text_index).drop_duplicates("study_id")
        first = first[first["_t"] >= 0]
        return first.drop(columns="_t"), self.text_emb[torch.tensor(first["_t"].to_list(), dtype=torch.long)]

    @staticmethod
    def concat(parts: list[SplitEmbeddings], rows: pd.DataFrame) -> SplitEmbeddings:
        """Join per-split embeddings and put them in the order of ``rows`` (matched by row_id)."""
        offsets = np.cumsum([0] + [len(p.texts) for p in parts])[:-1]
        text_index = np.concatenate(
            [np.where(p.text_index >= 0, p.text_index + o, -1) for p, o in zip(parts, offsets, strict=True)]
        )
        row_ids = np.concatenate([p.rows["row_id"].to_numpy() for p in parts])
        position = np.array(pd.Series(np.arange(len(row_ids)), index=row_ids)[rows["row_id"].to_numpy()].to_list())
        return SplitEmbeddings(
            rows,
            torch.cat([p.image_emb for p in parts])[position],
            torch.cat([p.text_emb for p in parts]),
            text_index[position],
            [t for p in parts for t in p.texts],
        )


def unique_texts(reports: list[str]) -> tuple[list[str], np.ndarray]:
    """Reports -> (unique texts by normalised form, [N] index into them; -1 for empty reports)."""
    texts, index_of, index = [], {}, []
    for text in reports:
        key = normalize_text(text) if text else ""
        if not key:
            index.append(-1)
            continue
        if key not in index_of:
            index_of[key] = len(texts)
            texts.append(text)
        index.append(index_of[key])
    return texts, np.asarray(index, dtype=np.int64)


def _save(path: Path, key: str, emb: SplitEmbeddings) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            key=np.array(key),
            image_emb=emb.image_emb.numpy(),
            text_emb=emb.text_emb.numpy(),
            text_index=emb.text_index,
            row_id=np.array(list(emb.rows["row_id"]), dtype=str),
            texts=np.array(emb.texts, dtype=str),
        )
    os.replace(tmp, path)


def _load(path: Path, key: str, rows: pd.DataFrame) -> SplitEmbeddings | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        if str(z["key"]) != key or list(z["row_id"]) != list(rows["row_id"]):
            return None
        return SplitEmbeddings(
            rows,
            torch.from_numpy(z["image_emb"]),
            torch.from_numpy(z["text_emb"]),
            z["text_index"],
            [str(t) for t in z["texts"]],
        )


class Embedder:
    """A checkpoint, loaded on first use, that embeds table splits (cached) and free text (prompts, queries)."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        cache_dir: str | Path | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        show_progress: bool = True,
        shards: str | Path | None = None,
    ) -> None:
        self.checkpoint = local_checkpoint(checkpoint)  # a URL is fetched once into the cache
        self.shards = ShardStore(shards) if shards else None  # prepared images (``medclip prepare``) to read
        self.meta = read_checkpoint_meta(checkpoint)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.batch_size, self.show_progress = batch_size, show_progress
        self.device = resolve_device(str(device), key="device")
        self.text_policy = self.meta.get("text_policy", "findings_impression")
        self.max_length = int(self.meta.get("max_text_tokens", 128))
        self._model = self._tokenizer = self._fingerprint = None
        self._splits: dict[str, SplitEmbeddings] = {}  # this session's embeddings by split
        self._texts: OrderedDict[str, torch.Tensor] = OrderedDict()  # free text already encoded (prompts, queries)
        self.max_cached_texts = 4096  # a server's stream of queries must not grow the cache without end
        self.reused: list[str] = []  # splits read from the on-disk cache

    def _load_model(self) -> None:
        self._model = MedClip.from_pretrained(self.checkpoint, device=self.device, meta=self.meta)
        tokenizer_dir = self.checkpoint / TOKENIZER_DIR
        if not tokenizer_dir.is_dir():
            raise InputError(f"{self.checkpoint} has no {TOKENIZER_DIR}/ folder; pass a complete final/ directory")
        self._tokenizer = load_tokenizer(str(tokenizer_dir))

    @property
    def model(self) -> MedClip:
        if self._model is None:
            self._load_model()
        return self._model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load_model()
        return self._tokenizer

    @property
    def logit_scale(self) -> float:
        with torch.no_grad():
            return float(self.model.scale())

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = checkpoint_fingerprint(self.checkpoint)
        return self._fingerprint

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """[M, D] normalised embeddings of free text (prompts, queries); each distinct text is encoded once."""
        new = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if new:
            emb = embed_texts(
                self.model,
                self.tokenizer,
                new,
                max_length=self.max_length,
                batch_size=self.batch_size,
                device=self.device,
            )
            out = {**{t: self._texts[t] for t in texts if t in self._texts}, **dict(zip(new, emb, strict=True))}
            self._texts.update(out)
            while len(self._texts) > self.max_cached_texts:
                self._texts.popitem(last=False)
        else:
            out = self._texts
        for t in texts:
            if t in self._texts:
                self._texts.move_to_end(t)
        return torch.stack([out[t] for t in texts]) if texts else torch.empty(0, self.model.cfg.embed_dim)

    def encode_images(self, paths: list[str], row_ids: list[int] | None = None) -> torch.Tensor:
        """[N, D] image embeddings; with ``row_ids`` (manifest rows) and shards, prepared images are read."""
        shards = self.shards if row_ids is not None else None
        return embed_image_paths(
            self.model,
            list(paths),
            batch_size=self.batch_size,
            device=self.device,
            show_progress=self.show_progress,
            row_ids=row_ids,
            shards=shards,
        )

    def embed(self, table: EvalTable, split: str) -> SplitEmbeddings:
        """Embeddings of one split of ``table`` ("all": every split, each cached on its own)."""
        if split == "all":
            splits = list(dict.fromkeys(table.rows["split"]))
            return SplitEmbeddings.concat([self.embed(table, s) for s in splits], table.rows)
        if split in self._splits and self._splits[split].rows.equals(table.subset(split).rows):
            return self._splits[split]
        self._splits[split] = emb = self._embed_split(table, split)
        return emb

    def _embed_split(self, table: EvalTable, split: str) -> SplitEmbeddings:
        part = table.subset(split)
        if part.rows.empty:
            raise InputError(f"{table.source}: no rows in split '{split}'")
        key = f"v{EMBED_VERSION}:{self.fingerprint()}:{part.content_hash()}:{split}"
        path = self.cache_dir / f"embeddings.{split}.npz" if self.cache_dir else None
        cached = _load(path, key, part.rows) if path else None
        if cached is not None:
            logger.info("embeddings for split '%s' reused from %s", split, path)
            self.reused.append(split)
            return cached
        texts, text_index = unique_texts(list(part.rows["report"]))
        text_emb = embed_texts(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.max_length,
            batch_size=self.batch_size,
            device=self.device,
            show_progress=self.show_progress,
        )
        row_ids = list(part.rows["row_id"]) if self.shards is not None else None
        images = self.encode_images(list(part.rows["image_path"]), row_ids)
        emb = SplitEmbeddings(part.rows, images, text_emb, text_index, texts)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            _save(path, key, emb)
            logger.info(
                "embeddings for split '%s' (%d images, %d texts) cached in %s", split, len(part.rows), len(texts), path
            )
        return emb
