"""Image-text pair datasets and the collator that tokenises with dynamic padding."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, EnsureTyped

from medclip.config import PreprocessCfg
from medclip.data.normalize import NormalizeImaged, normalize_image
from medclip.data.shards import SCALE, LoadShardd, ShardStore
from medclip.data.transforms import build_transforms, deterministic_transforms
from medclip.reports.sections import SENTENCE_POLICY, normalize_text, pair_text, split_sentences
from medclip.text.tokenizer import tokenize

logger = logging.getLogger(__name__)


class _TextTable:
    """Unique texts by normalised form: identical reports (or sentences) share one index."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.index_of: dict[str, int] = {}

    def add(self, text: str) -> int:
        key = normalize_text(text)
        if key not in self.index_of:
            self.index_of[key] = len(self.texts)
            self.texts.append(text)
        return self.index_of[key]


def pairs_from_manifest(df: pd.DataFrame, *, text_policy: str) -> tuple[list[dict], list[str]]:
    """Manifest rows -> pair dicts + the table of unique texts.

    Each pair carries ``text_index`` (row in the unique-text table; identical normalised texts share one) so losses
    can treat duplicates as positives and a locked text tower can be run once per unique text. With the
    ``sentence_sample`` policy the table holds sentences and each pair lists its report's sentences in
    ``text_choices``; :class:`PairCollator` draws one per step.
    """
    table = _TextTable()
    pairs = []
    for row in df.itertuples(index=False):
        text = pair_text(row, text_policy)
        pair = {"image": row.image_path, "study_id": row.study_id, "row_id": row.row_id}
        if text_policy == SENTENCE_POLICY:
            choices = [table.add(sent) for sent in split_sentences(text)] or [table.add(text)]
            pair["text_choices"] = list(dict.fromkeys(choices))
            pair["text_index"] = pair["text_choices"][0]
        else:
            pair["text_index"] = table.add(text)
        pairs.append(pair)
    return pairs, table.texts


class PairDataset(CacheDataset):
    """Pairs with MONAI transforms; decoded and resized images are cached in memory (``cache_rate``).

    With ``shards`` (a :class:`ShardStore` from ``medclip prepare``) the deterministic steps (decode, resize, pad)
    are replaced by reading the prepared array; the random and normalisation steps that follow are the same. The
    shards' recipe must match ``preprocess``; nothing is cached in memory (the OS page cache holds the memmaps).
    """

    def __init__(
        self,
        pairs: list[dict],
        texts: list[str],
        preprocess: PreprocessCfg,
        *,
        train: bool,
        cache_rate: float = 1.0,
        num_workers: int = 0,
        shards: ShardStore | None = None,
    ) -> None:
        self.texts = texts
        self.shards, self.preprocess = shards, preprocess
        transform = build_transforms(preprocess, train=train)
        if shards is not None:
            shards.check_recipe(preprocess)
            pairs = shards.select(pairs)
            transform = shard_transforms(transform, preprocess, shards)
            cache_rate = 0.0
        # Shards read + normalise only (evaluation, or training with batch augmentation): a DataLoader batch is
        # read and normalised as one array (__getitems__) instead of through the per-sample MONAI transforms.
        tail = [type(t) for t in transform.transforms[1:]]
        self._batch_read = shards is not None and tail == [NormalizeImaged, EnsureTyped]
        super().__init__(
            pairs,
            transform=transform,
            cache_rate=cache_rate,
            num_workers=num_workers or None,
            progress=logger.isEnabledFor(logging.INFO),
        )

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """What ``[self[i] for i in indices]`` gives, for a DataLoader batch; read as one array from shards."""
        if not self._batch_read:
            return [self[i] for i in indices]
        pairs = [self.data[i] for i in indices]
        images = normalize_prepared(np.stack([self.shards.get_raw(pair["row_id"]) for pair in pairs]), self.preprocess)
        return [{**pair, "image": image} for pair, image in zip(pairs, images, strict=True)]


def normalize_prepared(raw: np.ndarray, preprocess: PreprocessCfg) -> torch.Tensor:
    """Stored uint16 images [B, C, ...] -> float32 [B, C, ...] normalised as the per-sample pipeline would (no
    random steps): the whole-batch read of :class:`PairDataset` and of the streaming dataset."""
    return normalize_image(torch.from_numpy(raw.astype(np.float32)), preprocess, scale=1.0 / SCALE, inplace=True)


def prepared_tail(preprocess: PreprocessCfg, *, train: bool) -> tuple[Compose, bool]:
    """The per-sample steps that follow reading a prepared image (``build_transforms`` without its deterministic
    head), and whether they only normalise (then a batch can go through :func:`normalize_prepared` at once)."""
    pipeline = build_transforms(preprocess, train=train)
    head = [type(t) for t in deterministic_transforms(preprocess)]
    if [type(t) for t in pipeline.transforms[: len(head)]] != head:
        raise RuntimeError("build_transforms no longer starts with deterministic_transforms; update prepared_tail")
    tail = Compose(pipeline.transforms[len(head) :])
    return tail, [type(t) for t in tail.transforms] == [NormalizeImaged, EnsureTyped]


def shard_transforms(pipeline: Compose, preprocess: PreprocessCfg, shards: ShardStore) -> Compose:
    """``pipeline`` (from ``build_transforms``) with its deterministic head replaced by :class:`LoadShardd`."""
    head = [type(t) for t in deterministic_transforms(preprocess)]
    if [type(t) for t in pipeline.transforms[: len(head)]] != head:
        raise RuntimeError("build_transforms no longer starts with deterministic_transforms; update shard_transforms")
    return Compose([LoadShardd("image", shards), *pipeline.transforms[len(head) :]])


class PairCollator:
    """Stack images; tokenise the batch's texts padded to the longest one (not to ``max_length``).

    Items with ``text_choices`` (the ``sentence_sample`` policy) get one of their sentences drawn per call from a
    seeded generator, so a run is reproducible.
    """

    def __init__(
        self, tokenizer, texts: Sequence[str], *, max_length: int, tokenize_text: bool = True, seed: int = 0
    ) -> None:
        self.tokenizer, self.texts, self.max_length = tokenizer, texts, max_length
        self.tokenize_text = tokenize_text
        self.rng = random.Random(seed)

    def _text_index(self, item: dict) -> int:
        choices = item.get("text_choices")
        return self.rng.choice(choices) if choices else item["text_index"]

    def __call__(self, items: list[dict]) -> dict:
        text_index = torch.tensor([self._text_index(it) for it in items], dtype=torch.long)
        batch = {
            "image": torch.stack([torch.as_tensor(it["image"]) for it in items]),  # [B, C, H, W]
            "text_index": text_index,  # [B]
            "study_id": [it["study_id"] for it in items],
            "row_id": [it["row_id"] for it in items],
        }
        if self.tokenize_text:
            batch.update(
                tokenize(self.tokenizer, [self.texts[i] for i in text_index.tolist()], max_length=self.max_length)
            )
        return batch
