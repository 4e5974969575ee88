"""Image-text pair datasets and the collator that tokenises with dynamic padding."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd
import torch
from monai.data import CacheDataset
from monai.transforms import Compose

from medclip.config import PreprocessCfg
from medclip.data.reports import normalize_text, report_text
from medclip.data.shards import LoadShardd, ShardStore
from medclip.data.transforms import build_transforms, deterministic_transforms
from medclip.text.tokenizer import tokenize

logger = logging.getLogger(__name__)


def pair_text(row, text_policy: str) -> str:
    """The text a manifest row pairs with, under the given policy (from its findings / impression columns)."""
    return report_text({"findings": row.findings, "impression": row.impression}, text_policy)


def pairs_from_manifest(df: pd.DataFrame, *, text_policy: str) -> tuple[list[dict], list[str]]:
    """Manifest rows -> pair dicts + the table of unique texts.

    Each pair carries ``text_index`` (row in the unique-text table; identical normalised reports share one) so
    losses can treat duplicates as positives and a locked text tower can be run once per unique text.
    """
    texts: list[str] = []
    index_of: dict[str, int] = {}
    pairs = []
    for row in df.itertuples(index=False):
        text = pair_text(row, text_policy)
        key = normalize_text(text)
        if key not in index_of:
            index_of[key] = len(texts)
            texts.append(text)
        pairs.append(
            {"image": row.image_path, "text_index": index_of[key], "study_id": row.study_id, "row_id": row.row_id}
        )
    return pairs, texts


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
        transform = build_transforms(preprocess, train=train)
        if shards is not None:
            shards.check_recipe(preprocess)
            pairs = shards.select(pairs)
            transform = shard_transforms(transform, preprocess, shards)
            cache_rate = 0.0
        super().__init__(
            pairs,
            transform=transform,
            cache_rate=cache_rate,
            num_workers=num_workers or None,
            progress=logger.isEnabledFor(logging.INFO),
        )


def shard_transforms(pipeline: Compose, preprocess: PreprocessCfg, shards: ShardStore) -> Compose:
    """``pipeline`` (from ``build_transforms``) with its deterministic head replaced by :class:`LoadShardd`."""
    head = [type(t) for t in deterministic_transforms(preprocess)]
    if [type(t) for t in pipeline.transforms[: len(head)]] != head:
        raise RuntimeError("build_transforms no longer starts with deterministic_transforms; update shard_transforms")
    return Compose([LoadShardd("image", shards), *pipeline.transforms[len(head) :]])


class PairCollator:
    """Stack images; tokenise the batch's texts padded to the longest one (not to ``max_length``)."""

    def __init__(self, tokenizer, texts: Sequence[str], *, max_length: int, tokenize_text: bool = True) -> None:
        self.tokenizer, self.texts, self.max_length = tokenizer, texts, max_length
        self.tokenize_text = tokenize_text

    def __call__(self, items: list[dict]) -> dict:
        text_index = torch.tensor([it["text_index"] for it in items], dtype=torch.long)
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
