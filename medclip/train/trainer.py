"""The training loop: manifest -> pairs -> MedClip + InfoNCE -> ``OUT/final`` (a ``save_pretrained`` directory)."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medclip.config import RunCfg, save_config
from medclip.data.datasets import PairCollator, PairDataset, pairs_from_manifest
from medclip.data.manifest import read_manifest
from medclip.data.shards import ShardStore
from medclip.losses import create_loss
from medclip.models.medclip import MedClip
from medclip.text.tokenizer import load_tokenizer, tokenize
from medclip.train.optim import create_optimizer, create_scheduler

logger = logging.getLogger(__name__)

MAX_BAD_STEPS = 10


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


@torch.no_grad()
def text_features(model: MedClip, tokenizer, texts: list[str], *, max_length: int, device, batch_size: int = 64):
    """Pooled text-tower outputs [N, H] for each text; with a locked tower this runs once, not every step."""
    model.text.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenize(tokenizer, texts[i : i + batch_size], max_length=max_length)
        out.append(model.text(batch["input_ids"].to(device), batch["attention_mask"].to(device)))
    return torch.cat(out) if out else torch.empty(0, model.text.output_dim, device=device)


def _train_split(cfg: RunCfg):
    if not cfg.data.manifest:
        raise ValueError("data.manifest is not set; add data.manifest=DIR (a `medclip manifest` output folder)")
    df, meta = read_manifest(cfg.data.manifest)
    train_df = df[df["split"] == "train"]
    if train_df.empty:
        raise ValueError(f"{cfg.data.manifest}: the manifest has no 'train' rows ({len(df)} rows in all)")
    return train_df, meta


def train(cfg: RunCfg, *, show_progress: bool = True) -> Path:
    """Train and write ``OUT/final``; returns its path."""
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    generator = seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)

    train_df, meta = _train_split(cfg)
    pairs, texts = pairs_from_manifest(train_df, text_policy=cfg.data.text_policy)
    tokenizer = load_tokenizer(cfg.model.text.name)
    model = MedClip(cfg.model, cfg.preprocess).to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.image.to(memory_format=memory_format)
    cached = text_features(model, tokenizer, texts, max_length=cfg.data.max_text_tokens, device=device) \
        if model.text.is_locked else None  # fmt: skip
    dataset = PairDataset(pairs, texts, cfg.preprocess, train=True, cache_rate=cfg.data.cache_rate,
                          num_workers=cfg.data.num_workers,
                          shards=ShardStore(cfg.data.shards) if cfg.data.shards else None)  # fmt: skip
    collate = PairCollator(tokenizer, texts, max_length=cfg.data.max_text_tokens, tokenize_text=cached is None)
    batch_size = min(cfg.train.batch_size, len(dataset))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                        generator=generator, num_workers=0)  # fmt: skip
    total = cfg.train.max_steps or cfg.train.epochs * len(loader)
    loss_fn = create_loss(cfg.loss.name, duplicate_texts_positive=cfg.loss.duplicate_texts_positive)
    optimizer = create_optimizer(model, cfg.optim)
    scheduler = create_scheduler(optimizer, cfg.optim, total)
    logger.info("training on %d pairs (%d unique texts), %d steps, device %s", len(pairs), len(texts), total, device)

    state = {"step": 0, "bad_steps": 0, "skipped": 0}
    with (out / "metrics.jsonl").open("a") as metrics, tqdm(total=total, disable=not show_progress, unit="step") as bar:
        while state["step"] < total:
            for batch in loader:
                record = _step(model, batch, cached, loss_fn, optimizer, scheduler, cfg, device, state)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", pairs_s=f"{record['pairs_per_s']:.0f}")
                if state["step"] % cfg.train.log_every == 0 or state["step"] == total:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                if state["step"] >= total:
                    break
    extra = {"text_policy": cfg.data.text_policy, "max_text_tokens": cfg.data.max_text_tokens,
             "manifest_hash": meta.get("content_hash"), "train_steps": total, "skipped_steps": state["skipped"]}  # fmt: skip
    return model.save_pretrained(out / "final", tokenizer=tokenizer, extra=extra)


def _step(model, batch, cached, loss_fn, optimizer, scheduler, cfg: RunCfg, device, state: dict) -> dict:
    t0 = time.perf_counter()
    model.train()
    if cached is not None:
        model.text.eval()  # a locked tower stays deterministic (no dropout)
    image = batch["image"].to(device, non_blocking=True)
    if cfg.train.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    text_keys = batch["text_index"].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
        if cached is not None:
            out = model(image, text_features=cached[text_keys])
        else:
            out = model(image, batch["input_ids"].to(device), batch["attention_mask"].to(device))
        loss = loss_fn(out["image_emb"].float(), out["text_emb"].float(), out["logit_scale"].float(),
                       text_keys=text_keys)  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    state["step"] += 1
    if not torch.isfinite(loss):
        state["bad_steps"] += 1
        state["skipped"] += 1
        logger.warning("step %d: non-finite loss, step skipped (%d in a row)", state["step"], state["bad_steps"])
        if state["bad_steps"] >= MAX_BAD_STEPS:
            raise RuntimeError(f"{MAX_BAD_STEPS} non-finite losses in a row; lower optim.lr or check the data")
        scheduler.step()
        return {"step": state["step"], "loss": math.nan, "pairs_per_s": 0.0}
    state["bad_steps"] = 0
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
    optimizer.step()
    scheduler.step()
    dt = time.perf_counter() - t0
    return {"step": state["step"], "loss": float(loss), "lr": scheduler.get_last_lr()[0],
            "temperature": float(1.0 / out["logit_scale"].detach()), "grad_norm": float(grad_norm),
            "pairs_per_s": image.shape[0] / dt}  # fmt: skip
