"""Benchmark image ingest into the training loop: raw DICOM decoding vs prepared shards, printed as JSON.

All loaders run in this process on one pinned core (DataLoader ``num_workers=0``, one torch thread), so every figure
is per core. On the same archive and at the same image size:

  (a) naive:          PairDataset(cache_rate=0): decode DICOM + window + resize + pad + random aug, every epoch
  (b) shards:         PairDataset(shards=...): memmap read + the same MONAI random aug + normalise
  (c) shards_no_aug:  PairDataset(train=False, shards=...): memmap read + normalise (pure read path)
  (d) shards_batched_aug: memmap read + a batched torch re-implementation of the same augmentation ranges, applied
      to the whole batch in the collator. A prototype measured here only, to show what batching buys; the library
      still uses the MONAI transforms.

Plus the cost of each MONAI random transform on one prepared image, so the bottleneck of (b) is visible, and the
one-off cost of ``prepare`` (all cores).

    python scripts/bench_ingest.py                      # synthesise a 150-study demo archive in a temp dir
    python scripts/bench_ingest.py --archive data/demo_archive --image-size 224
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from medclip.config import PreprocessCfg
from medclip.data.datasets import PairCollator, PairDataset, pairs_from_manifest
from medclip.data.manifest import build_manifest, read_manifest, write_manifest
from medclip.data.shards import SCALE, ShardStore, prepare_shards
from medclip.data.transforms import random_transforms

TARGET_RATIO, TARGET_PER_CORE = 10.0, 1000.0


def _pin_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def _loader_rate(dataset, texts: list[str], *, batch_size: int, min_images: int) -> dict:
    """Images/s through a shuffled DataLoader (same collator as training), for at least ``min_images`` images."""
    collate = PairCollator(None, texts, max_length=0, tokenize_text=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0), num_workers=0)  # fmt: skip
    seen, start = 0, time.perf_counter()
    while seen < min_images:
        for batch in loader:
            seen += batch["image"].shape[0]
    seconds = time.perf_counter() - start
    return {"images": seen, "seconds": round(seconds, 3), "images_per_s": round(seen / seconds, 1)}


def _affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid`` for square 2-D images (align_corners=False) from two outer sums instead of a batched
    matmul over every pixel: the grid is linear in the pixel coordinates. 4-5x faster on CPU."""
    coords = (torch.arange(size, dtype=theta.dtype) * 2 + 1) / size - 1  # [S] pixel centres in (-1, 1)
    x, y = coords.view(1, 1, size), coords.view(1, size, 1)
    t = theta.view(-1, 6, 1, 1)
    gx = t[:, 0] * x + t[:, 1] * y + t[:, 2]  # [B, S, S]
    gy = t[:, 3] * x + t[:, 4] * y + t[:, 5]
    return torch.stack([gx, gy], dim=-1)  # [B, S, S, 2]


def batch_augment(images: torch.Tensor, cfg: PreprocessCfg, gen: torch.Generator) -> torch.Tensor:
    """[B, C, S, S] in [0, 1] -> augmented + normalised, with the ranges and probabilities of ``random_transforms``.

    Prototype: RandAffined (p 0.8) -> RandAdjustContrastd (p 0.5) -> RandGaussianNoised (p 0.5, std ~ U(0, std)),
    each applied to the whole batch at once; contrast and noise are computed only for the samples drawn.
    """
    b, size = images.shape[0], images.shape[-1]
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    angle = (u(b) * 2 - 1) * math.radians(cfg.rotate_degrees)
    scale = 1 + (u(b, 2) * 2 - 1) * cfg.scale_range
    shift = (u(b, 2) * 2 - 1) * cfg.translate_frac * 2  # pixels -> normalised coordinates: 2 * t * S / S
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos / scale[:, 0], -sin / scale[:, 0], shift[:, 0]], 1),
                         torch.stack([sin / scale[:, 1], cos / scale[:, 1], shift[:, 1]], 1)], 1)  # fmt: skip
    theta[u(b) >= 0.8] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])  # prob 0.8, like RandAffined
    x = F.grid_sample(images, _affine_grid(theta, size), mode="bilinear", padding_mode="zeros", align_corners=False)
    pick = torch.nonzero(u(b) < 0.5).flatten()
    if len(pick):
        sub = x[pick]
        lo = sub.amin(dim=(1, 2, 3), keepdim=True)
        rng = sub.amax(dim=(1, 2, 3), keepdim=True) - lo
        gamma = 1 + (u(len(pick), 1, 1, 1) * 2 - 1) * cfg.contrast_gamma
        x[pick] = ((sub - lo) / (rng + 1e-7)).pow_(gamma).mul_(rng).add_(lo)
    pick = torch.nonzero(u(b) < 0.5).flatten()
    if len(pick):
        std = u(len(pick), 1, 1, 1) * cfg.noise_std
        x[pick] += torch.randn((len(pick), *x.shape[1:]), generator=gen).mul_(std)
    return x.sub_(cfg.mean).div_(cfg.std)


def _batched_rate(store: ShardStore, row_ids: list[int], cfg: PreprocessCfg, *, batch_size: int, min_images: int):
    gen = torch.Generator().manual_seed(0)
    order = np.random.default_rng(0)
    seen, start = 0, time.perf_counter()
    while seen < min_images:
        perm = order.permutation(row_ids)
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            raw = np.stack([store.get_raw(int(r)) for r in perm[i : i + batch_size]])  # uint16 [B, C, S, S]
            images = torch.from_numpy(raw.astype(np.float32)).mul_(1.0 / SCALE)
            batch_augment(images, cfg, gen)
            seen += batch_size
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
        from medclip.data.synthetic import synth_cxr

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
        naive = _loader_rate(PairDataset(pairs, texts, cfg, train=True, cache_rate=0.0), texts, min_images=1, **kw)
        sharded = PairDataset(pairs, texts, cfg, train=True, shards=store)
        shards = _loader_rate(sharded, texts, min_images=args.min_images, **kw)
        plain = PairDataset(pairs, texts, cfg, train=False, shards=store)
        no_aug = _loader_rate(plain, texts, min_images=4 * args.min_images, **kw)
        batched = _batched_rate(store, [p["row_id"] for p in pairs], cfg, min_images=args.min_images, **kw)
        costs = _transform_costs(store.get(pairs[0]["row_id"]), cfg)
    result = {
        "image_size": args.image_size, "batch_size": kw["batch_size"], "images_in_archive": len(pairs),
        "cores": 1, "pinned_core": core, "torch_threads": torch.get_num_threads(),
        "naive": naive, "shards": shards, "shards_no_aug": no_aug, "shards_batched_aug": batched,
        "ratio": round(shards["images_per_s"] / naive["images_per_s"], 1),
        "ratio_no_aug": round(no_aug["images_per_s"] / naive["images_per_s"], 1),
        "ratio_batched_aug": round(batched["images_per_s"] / naive["images_per_s"], 1),
        "per_core_images_per_s": {"naive": naive["images_per_s"], "shards": shards["images_per_s"],
                                  "shards_no_aug": no_aug["images_per_s"],
                                  "shards_batched_aug": batched["images_per_s"]},
        "monai_random_transform_images_per_s": costs,
        "prepare": {"workers": args.workers, "images_per_s": prep["images_per_s"], "seconds": prep["seconds"]},
        "target": {"ratio": TARGET_RATIO, "per_core": TARGET_PER_CORE,
                   "met_ratio": shards["images_per_s"] >= TARGET_RATIO * naive["images_per_s"],
                   "met_per_core": shards["images_per_s"] >= TARGET_PER_CORE},
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_avg_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__},
    }  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
