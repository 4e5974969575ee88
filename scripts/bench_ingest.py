"""Benchmark image ingest into the training loop: raw DICOM decoding vs prepared shards, printed as JSON.

All loaders run in this process on one pinned core (DataLoader ``num_workers=0``, one torch thread), so every figure
is per core. On the same archive and at the same image size:

  (a) naive:          PairDataset(cache_rate=0, augment=monai): decode DICOM + window + resize + pad + per-sample
                      MONAI random augmentation + normalise, every epoch
  (b) shards:         what the trainer does with ``data.shards`` (and the default ``preprocess.augment: batch``):
                      PairDataset(shards=...) memmap read + normalise of each DataLoader batch as one array
                      (__getitems__), then BatchAugment on the collated batch
  (c) shards_monai_aug: PairDataset(shards=..., augment=monai): memmap read + per-sample MONAI augmentation
  (d) shards_no_aug:  PairDataset(train=False, shards=...): memmap read + normalise (pure read path)

Plus the cost of each MONAI random transform on one prepared image (why (c) is slow) and the one-off cost of
``prepare`` (all cores).

    python scripts/bench_ingest.py                      # synthesise a 150-study demo archive in a temp dir
    python scripts/bench_ingest.py --archive data/demo_archive --image-size 224
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from medclip.config import PreprocessCfg
from medclip.data.batch_aug import BatchAugment
from medclip.data.datasets import PairCollator, PairDataset, pairs_from_manifest
from medclip.data.shards import ShardStore, prepare_shards
from medclip.data.transforms import random_transforms
from medclip.ingest.manifest import build_manifest, read_manifest, write_manifest

TARGET_RATIO, TARGET_PER_CORE = 10.0, 1000.0


def _pin_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def _loader_rate(dataset, texts: list[str], *, batch_size: int, min_images: int, augment=None) -> dict:
    """Images/s through a shuffled DataLoader (same collator as training) and ``augment`` on each batch (as the
    trainer applies it), for at least ``min_images`` images."""
    collate = PairCollator(None, texts, max_length=0, tokenize_text=False)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
        num_workers=0,
    )
    seen, start = 0, time.perf_counter()
    while seen < min_images:
        for batch in loader:
            if augment is not None:
                augment(batch["image"], step=seen)
            seen += batch["image"].shape[0]
    seconds = time.perf_counter() - start
    return {"images": seen, "seconds": round(seconds, 3), "images_per_s": round(seen / seconds, 1)}


def _transform_costs(image: np.ndarray, cfg: PreprocessCfg, repeat: int = 100) -> dict:
    """Images/s of each MONAI random transform alone (prob forced to 1), on one prepared image."""
    out = {}
    for t in random_transforms(cfg):
        t.prob = 1.0
        t.set_random_state(0)
        start = time.perf_counter()
        for _ in range(repeat):
            t({"image": image})
        out[type(t).__name__] = round(repeat / (time.perf_counter() - start), 1)
    return out


def _inputs(args, tmp: Path) -> tuple[Path, float]:
    archive = Path(args.archive) if args.archive else tmp / "archive"
    if not args.archive:
        from medclip.synth.cxr.archive import synth_cxr

        synth_cxr(archive, studies=args.studies, seed=0)
    start = time.perf_counter()
    result = build_manifest(archive, salt="bench", verify_pixels=False, show_progress=False)
    write_manifest(result, tmp / "manifest")
    return tmp / "manifest", time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", help="a DICOM archive folder (default: synthesise one)")
    parser.add_argument("--studies", type=int, default=150, help="studies in the synthetic archive")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--min-images", type=int, default=512, help="images per shard measurement (>= one epoch)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for prepare")
    args = parser.parse_args()
    cfg = PreprocessCfg(image_size=args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = _inputs(args, Path(tmp))
        prep = prepare_shards(manifest, Path(tmp) / "shards", preprocess=cfg, workers=args.workers, show_progress=False)
        core = _pin_one_core()
        torch.set_num_threads(1)
        df, _ = read_manifest(manifest)
        pairs, texts = pairs_from_manifest(df, text_policy="findings_impression")
        store = ShardStore(Path(tmp) / "shards")
        kw = {"batch_size": min(args.batch_size, len(pairs))}
        monai = replace(cfg, augment="monai")
        naive = _loader_rate(PairDataset(pairs, texts, monai, train=True, cache_rate=0.0), texts, min_images=1, **kw)
        sharded = PairDataset(pairs, texts, cfg, train=True, shards=store)
        shards = _loader_rate(sharded, texts, min_images=4 * args.min_images, augment=BatchAugment(cfg), **kw)
        per_sample = PairDataset(pairs, texts, monai, train=True, shards=store)
        monai_aug = _loader_rate(per_sample, texts, min_images=args.min_images, **kw)
        plain = PairDataset(pairs, texts, cfg, train=False, shards=store)
        no_aug = _loader_rate(plain, texts, min_images=4 * args.min_images, **kw)
        costs = _transform_costs(store.get(pairs[0]["row_id"]), cfg)
    result = {
        "image_size": args.image_size,
        "batch_size": kw["batch_size"],
        "images_in_archive": len(pairs),
        "cores": 1,
        "pinned_core": core,
        "torch_threads": torch.get_num_threads(),
        "naive": naive,
        "shards": shards,
        "shards_monai_aug": monai_aug,
        "shards_no_aug": no_aug,
        "ratio": round(shards["images_per_s"] / naive["images_per_s"], 1),
        "ratio_monai_aug": round(monai_aug["images_per_s"] / naive["images_per_s"], 1),
        "ratio_no_aug": round(no_aug["images_per_s"] / naive["images_per_s"], 1),
        "per_core_images_per_s": {
            "naive": naive["images_per_s"],
            "shards": shards["images_per_s"],
            "shards_monai_aug": monai_aug["images_per_s"],
            "shards_no_aug": no_aug["images_per_s"],
        },
        "monai_random_transform_images_per_s": costs,
        "prepare": {"workers": args.workers, "images_per_s": prep["images_per_s"], "seconds": prep["seconds"]},
        "target": {
            "ratio": TARGET_RATIO,
            "per_core": TARGET_PER_CORE,
            "met_ratio": shards["images_per_s"] >= TARGET_RATIO * naive["images_per_s"],
            "met_per_core": shards["images_per_s"] >= TARGET_PER_CORE,
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "torch": torch.__version__,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
