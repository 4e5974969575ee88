"""The training loop: manifest -> pairs -> MedClip + contrastive loss -> ``OUT/final`` (a ``save_pretrained`` dir).

One process or many (``torchrun``: DDP, NCCL on GPU, gloo on CPU). The run directory holds ``config.yaml``,
``metrics.jsonl``, ``tensorboard/``, resumable ``checkpoints/step-NNNNNNN/`` and ``final/``. With ``resume=True``
training continues from the newest checkpoint and ends with the same weights an uninterrupted run would have.

Prepared shards are read by index (``ShardedBatchSampler``) or streamed (``data.streaming``; always for an
object-storage ``data.shards``: medclip.data.streaming). ``train.out_dir`` may be a URL: the run writes a local
mirror and rank 0 uploads to it (medclip.train.run_mirror).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medclip.config import RunCfg, save_config, to_yaml
from medclip.data.batch_aug import BatchAugment
from medclip.data.datasets import PairCollator, PairDataset, pairs_from_manifest
from medclip.data.shards import ShardStore
from medclip.data.streaming import StreamCollate, StreamingPairs, use_streaming
from medclip.distributed import DistInfo, barrier, destroy, init_distributed, is_initialized
from medclip.errors import InputError
from medclip.ingest.manifest import COLUMNS, read_manifest
from medclip.ingest.trained_on import write_trained_on
from medclip.io import storage
from medclip.losses import local_loss_from_cfg, loss_from_cfg
from medclip.models.medclip import MedClip
from medclip.models.text_tower import row_extents
from medclip.text.prompts import load_prompts
from medclip.text.tokenizer import load_tokenizer, tokenize
from medclip.train import checkpoint as ckpt
from medclip.train.cpu_memory import keep_freed_memory
from medclip.train.metrics_log import MetricsLogger, memory_stats
from medclip.train.optim import create_optimizer, create_scheduler
from medclip.train.run_mirror import RunMirror
from medclip.train.sampler import ShardedBatchSampler
from medclip.train.step import (
    PRECISIONS,
    NonFiniteLossError,
    StepParts,
    autocast_factory,
    resolve_precision,
    train_step,
)

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def text_features(model: MedClip, tokenizer, texts: list[str], *, max_length: int, device, batch_size: int = 64):
    """A locked tower's outputs for each text, computed once instead of every step: pooled [N, H], or, when its
    pooling trains or local heads read every word (``caches_text_tokens``), (token states [N, L, H] in bf16, mask [N, L]) padded to the longest text:
    N x L x H x 2 bytes, fine for thousands of unique texts, not for millions (use mean pooling there)."""
    model.text.eval()
    if not model.caches_text_tokens:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = tokenize(tokenizer, texts[i : i + batch_size], max_length=max_length)
            out.append(model.text(batch["input_ids"].to(device), batch["attention_mask"].to(device)))
        return torch.cat(out) if out else torch.empty(0, model.text.output_dim, device=device)
    batch = tokenize(tokenizer, texts, max_length=max_length)  # one padding width for the whole table
    mask = batch["attention_mask"].to(device)
    states = torch.zeros(*mask.shape, model.text.output_dim, dtype=torch.bfloat16, device=device)
    for i in range(0, len(texts), batch_size):
        ids, m = batch["input_ids"][i : i + batch_size].to(device), mask[i : i + batch_size]
        width = max(row_extents(m)[1])  # drop trailing all-padding columns
        states[i : i + batch_size, :width] = model.text.token_states(ids[:, :width], m[:, :width]).to(torch.bfloat16)
    return states, mask


def _train_split(cfg: RunCfg):
    if not cfg.data.manifest:
        raise InputError("data.manifest is not set; add data.manifest=DIR (a `medclip manifest` output folder)")
    train_df, meta = read_manifest(cfg.data.manifest, splits=["train"])  # the train split's rows only
    if train_df.empty:
        rows = meta.get("counts", {}).get("kept", "?")
        raise InputError(f"{cfg.data.manifest}: the manifest has no 'train' rows ({rows} rows in all)")
    return train_df.reset_index(drop=True), meta


@dataclass
class PairTables:
    """Per-pair loss inputs looked up by the batch's ``row_id``: study ids (multi-view) and label vectors."""

    position: dict[int, int]
    study: torch.Tensor | None = None  # [n] int64
    labels: torch.Tensor | None = None  # [n, C] float

    @classmethod
    def build(cls, df: pd.DataFrame, cfg: RunCfg) -> PairTables:
        tables = cls({int(r): i for i, r in enumerate(df["row_id"])})
        if cfg.loss.study_positives:
            tables.study = torch.as_tensor(pd.factorize(df["study_id"])[0], dtype=torch.long)
        if cfg.loss.name == "infonce_soft":
            tables.labels = label_matrix(df, columns=cfg.loss.label_columns, uncertain=cfg.loss.label_uncertain)
        return tables

    def loss_kwargs(self, batch: dict, device: torch.device) -> dict:
        out = {"text_keys": batch["text_index"].to(device, non_blocking=True)}
        if self.study is None and self.labels is None:
            return out
        rows = torch.tensor([self.position[int(r)] for r in batch["row_id"]])
        if self.study is not None:
            out["study_keys"] = self.study[rows].to(device, non_blocking=True)
        if self.labels is not None:
            out["labels"] = self.labels[rows].to(device, non_blocking=True)
        return out


def label_matrix(df: pd.DataFrame, *, columns: list[str], uncertain: float) -> torch.Tensor:
    """[n, C] label vectors from CheXpert-style columns: 1 -> 1, 0 -> 0, -1 -> ``uncertain``, blank -> 0."""
    extra = [c for c in df.columns if c not in COLUMNS and pd.api.types.is_numeric_dtype(df[c])]
    columns = list(columns) or extra
    missing = [c for c in columns if c not in df.columns]
    if not columns or missing:
        raise InputError(
            f"loss.name=infonce_soft needs label columns in the manifest (missing: {missing or 'all'}); "
            "build it with `medclip manifest ... --labels chexpert` or set loss.label_columns"
        )
    values = df[columns].to_numpy(dtype=np.float32, na_value=np.nan)
    values = np.where(values == -1, uncertain, np.nan_to_num(values, nan=0.0))
    return torch.from_numpy(values.astype(np.float32))


def prepare_inputs(
    batch: dict,
    *,
    device: torch.device,
    cached: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None,
    channels_last: bool,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """The model's keyword inputs for a collated batch (cached text-tower features replace the tokens if locked),
    its images augmented on ``device`` by ``augment`` when given."""
    image = batch["image"].to(device, non_blocking=True)
    if augment is not None:
        image = augment(image)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last if image.ndim == 4 else torch.channels_last_3d)
    if isinstance(cached, tuple):  # token states + mask of a locked encoder under a trainable pooling
        index = batch["text_index"].to(device, non_blocking=True)
        states, mask = cached[0][index], cached[1][index]
        width = max(row_extents(mask)[1])
        return {"image": image, "text_features": states[:, :width].float(), "text_mask": mask[:, :width]}
    if cached is not None:
        return {"image": image, "text_features": cached[batch["text_index"].to(device, non_blocking=True)]}
    return {
        "image": image,
        "input_ids": batch["input_ids"].to(device, non_blocking=True),
        "attention_mask": batch["attention_mask"].to(device, non_blocking=True),
    }


def build_model(cfg: RunCfg, device: torch.device) -> MedClip:
    """MedClip on ``device`` with warm start, memory format, gradient checkpointing and compilation applied."""
    model = MedClip(cfg.model, cfg.preprocess).to(device)
    if cfg.model.init_from:
        from medclip.models.warm_start import load_warm_start

        load_warm_start(model, cfg.model.init_from)
    channels_last = torch.channels_last_3d if cfg.preprocess.spatial_dims == 3 else torch.channels_last
    memory_format = channels_last if cfg.train.channels_last else torch.contiguous_format
    model.image.to(memory_format=memory_format)
    if cfg.train.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.train.compile:
        model.image.compile()
        if not model.text.is_locked:
            model.text.compile()
    return model


def _wrap_ddp(model: MedClip, cfg: RunCfg, info: DistInfo, device: torch.device):
    if not info.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    unused = model.logit_bias is not None and cfg.loss.name != "siglip"
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused
    )


def _prepare_run_dir(cfg: RunCfg, out: Path, info: DistInfo, *, resume: bool) -> None:
    if not info.is_main:
        return
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "config.yaml"
    if resume and previous.is_file() and previous.read_text() != to_yaml(cfg):
        logger.warning("%s differs from this run's config; resuming with the new one (results may differ)", previous)
    save_config(cfg, previous)
    ckpt.clean_partial(out / "checkpoints")


def train(cfg: RunCfg, *, show_progress: bool = True, resume: bool = False) -> Path:
    """Train and write ``OUT/final``; returns its path. Under torchrun every process calls this."""
    owns_group = not is_initialized()
    info, device = init_distributed(cfg.train.device)
    if not info.is_main:  # rank 0 alone logs and writes; the others keep warnings only
        logging.getLogger("medclip").setLevel(logging.WARNING)
    try:
        return _train(cfg, info, device, show_progress=show_progress and info.is_main, resume=resume)
    finally:
        if owns_group:
            destroy()


def validate(cfg: RunCfg) -> None:
    """Option combinations that would fail late (after caching data), checked before any work."""
    if cfg.train.precision not in (*PRECISIONS, "auto"):
        raise InputError(f"train.precision '{cfg.train.precision}' is not one of {sorted(PRECISIONS)} or auto")
    if cfg.loss.local_weight < 0:
        raise InputError(f"loss.local_weight={cfg.loss.local_weight} must be >= 0 (0: no local word-region loss)")
    if cfg.loss.local_weight > 0 and cfg.model.local_dim <= 0:
        cfg.model.local_dim = cfg.model.embed_dim  # the local loss needs local heads; one switch turns both on
    if cfg.loss.name == "siglip" and not cfg.model.logit_bias:
        raise InputError("loss.name=siglip needs model.logit_bias=true (SigLIP also uses model.init_temperature=0.1)")
    for key in ("grad_cache_micro_batch", "checkpoint_every", "keep_checkpoints", "max_bad_steps"):
        if getattr(cfg.train, key) < (0 if key == "grad_cache_micro_batch" else 1):
            raise InputError(f"train.{key}={getattr(cfg.train, key)} is out of range")
    use_streaming(cfg.data.streaming, cfg.data.shards)  # a bad data.streaming value, before any work
    for key in ("data.manifest", "data.shards", "train.out_dir"):  # credentials come from the environment only
        section, name = key.split(".")
        storage.refuse_credentials(getattr(getattr(cfg, section), name), key=key)


def _build_loader(cfg: RunCfg, info: DistInfo, dataset, collate, generator) -> tuple[ShardedBatchSampler, DataLoader]:
    batch_size = min(cfg.train.batch_size, len(dataset) // info.world_size)
    sampler = ShardedBatchSampler(
        len(dataset), batch_size=batch_size, generator=generator, rank=info.rank, world_size=info.world_size
    )
    return sampler, DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, generator=generator, num_workers=0)


def _shard_store(cfg: RunCfg) -> ShardStore | None:
    """data.shards for random access by index: a local folder, or a remote one fetched whole into the cache."""
    if not cfg.data.shards:
        return None
    if not storage.is_url(cfg.data.shards):
        return ShardStore(storage.local_path(cfg.data.shards))
    cache = Path(cfg.data.cache_dir) / "fetched" if cfg.data.cache_dir else None
    try:
        return ShardStore(storage.fetch(cfg.data.shards, cache_dir=cache))
    except FileNotFoundError as exc:
        raise InputError(f"data.shards: {exc}; check the URL and the credentials in the environment") from None


def _streaming_dataset(cfg: RunCfg, info: DistInfo, pairs: list[dict], texts: list[str]) -> StreamingPairs:
    return StreamingPairs(
        pairs,
        texts,
        cfg.preprocess,
        shards=cfg.data.shards,
        train=True,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        rank=info.rank,
        world_size=info.world_size,
        workers=cfg.data.num_workers,
        shuffle_buffer=cfg.data.shuffle_buffer,
        cache_dir=cfg.data.cache_dir,
    )


def _data_order(sampler: ShardedBatchSampler | StreamingPairs) -> dict:
    """What the batches depend on besides (seed, epoch, batch_in_epoch): saved, and compared on resume."""
    if isinstance(sampler, StreamingPairs):
        return {"streaming": True, **sampler.order_key()}
    return {"streaming": False}


def _build_parts(cfg: RunCfg, model: MedClip, info: DistInfo, device: torch.device, total: int) -> StepParts:
    optimizer = create_optimizer(model, cfg.optim)
    return StepParts(
        model=model,
        forward_model=_wrap_ddp(model, cfg, info, device),
        loss_fn=loss_from_cfg(cfg.loss),
        optimizer=optimizer,
        scheduler=create_scheduler(optimizer, cfg.optim, total),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16"),
        autocast=autocast_factory(device, cfg.train.precision),
        grad_clip=cfg.optim.grad_clip,
        micro_batch=cfg.train.grad_cache_micro_batch,
        max_bad_steps=cfg.train.max_bad_steps,
        local_loss=local_loss_from_cfg(cfg.loss),
        local_weight=cfg.loss.local_weight,
    )


def _train(cfg: RunCfg, info: DistInfo, device: torch.device, *, show_progress: bool, resume: bool) -> Path:
    precision = resolve_precision(cfg.train.precision, device)
    if precision != cfg.train.precision:
        logger.info("train.precision auto -> %s on %s", precision, device)
        cfg.train.precision = precision
    validate(cfg)
    mirror = RunMirror(cfg.train.out_dir, cache_dir=cfg.data.cache_dir) if storage.is_url(cfg.train.out_dir) else None
    out = mirror.open(info, resume=resume) if mirror else storage.local_path(cfg.train.out_dir)
    _prepare_run_dir(cfg, out, info, resume=resume)
    if mirror is not None and info.is_main:
        mirror.upload("config.yaml")
    barrier()
    generator = seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if device.type == "cuda":  # after seed_everything: MONAI's set_determinism turns cuDNN autotuning off
        torch.backends.cudnn.deterministic = cfg.train.deterministic
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        if cfg.train.tf32:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    train_df, meta = _train_split(cfg)
    pairs, texts = pairs_from_manifest(train_df, text_policy=cfg.data.text_policy)
    tokenizer = load_tokenizer(cfg.model.text.name)
    model = build_model(cfg, device)
    streaming = use_streaming(cfg.data.streaming, cfg.data.shards)
    if streaming:
        dataset = _streaming_dataset(cfg, info, pairs, texts)
    else:
        dataset = PairDataset(
            pairs,
            texts,
            cfg.preprocess,
            train=True,
            cache_rate=cfg.data.cache_rate,
            num_workers=cfg.data.num_workers,
            shards=_shard_store(cfg),
        )
    transforms = None if streaming else dataset.transform  # streaming seeds its per-sample steps per batch instead
    if info.is_distributed:  # different augmentations and dropout masks on each rank
        torch.manual_seed(cfg.train.seed + 1 + info.rank)
        if transforms is not None:
            transforms.set_random_state(seed=cfg.train.seed + 1 + info.rank)
    locked = model.text.is_locked  # then its outputs are computed once per unique text, not every step
    collate = PairCollator(tokenizer, texts, max_length=cfg.data.max_text_tokens, tokenize_text=not locked)
    if streaming:  # the dataset yields whole batches; its workers read disjoint runs of shards
        stream_collate = StreamCollate(collate, seed=cfg.train.seed)
        loader = DataLoader(dataset, batch_size=None, collate_fn=stream_collate, num_workers=cfg.data.num_workers)
        sampler = dataset
    else:
        sampler, loader = _build_loader(cfg, info, dataset, collate, generator)
    total = cfg.train.max_steps or cfg.train.epochs * len(loader)
    parts = _build_parts(cfg, model, info, device, total)
    tables = PairTables.build(train_df, cfg)
    run = _Run(cfg, info, device, out, parts, sampler, generator, transforms, tables, mirror=mirror)
    if resume:
        run.resume()
    cached = (
        text_features(model, tokenizer, texts, max_length=cfg.data.max_text_tokens, device=device) if locked else None
    )
    logger.info(
        "training on %d pairs (%d unique texts), %d steps of %d x %d pairs, device %s",
        len(pairs),
        len(texts),
        total,
        sampler.batch_size,
        info.world_size,
        device,
    )
    with keep_freed_memory(device.type == "cpu" and cfg.train.keep_freed_memory):
        run.loop(loader, cached, total, show_progress=show_progress)
    final = out / "final"
    if info.is_main:
        extra = {
            "text_policy": cfg.data.text_policy,
            "max_text_tokens": cfg.data.max_text_tokens,
            "manifest_hash": meta.get("content_hash"),
            "salt_fingerprint": meta.get("salt_fingerprint"),
            "train_steps": total,
            "skipped_steps": run.state["skipped"],
            "world_size": info.world_size,
            "global_batch": sampler.batch_size * info.world_size,
            # The screening prompts the model is evaluated (and served) with, expanded so a YAML file need not travel.
            "prompts": cfg.eval.prompts,
            "prompt_set": _prompt_set(cfg.eval.prompts),
            "zero_shot_mode": cfg.eval.mode,
        }
        model.save_pretrained(final, tokenizer=tokenizer, extra=extra)
        write_trained_on(final, train_df, meta)  # salted keys of the training patients/studies: eval checks overlap
        if mirror is not None:
            mirror.upload("metrics.jsonl", "tensorboard", "final")
            logger.info("uploaded the final model to %s", storage.display(storage.join(cfg.train.out_dir, "final")))
    barrier()
    return final


def _prompt_set(name: str) -> dict | None:
    try:
        return load_prompts(name)
    except (InputError, FileNotFoundError, OSError) as exc:  # a bad eval.prompts must not lose the trained weights
        logger.warning(
            "eval.prompts '%s' could not be read (%s); the checkpoint is saved without a prompt set", name, exc
        )
        return None


def _gather_to_main(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` on rank 0 in rank order (an empty list on the other ranks)."""
    if not info.is_distributed:
        return [obj]
    import torch.distributed as dist

    found = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, found, dst=0)
    return found if info.is_main else []


class _Run:
    """Loop state: step / epoch / data position, checkpoints and resume."""

    def __init__(self, cfg, info, device, out, parts, sampler, generator, transforms, tables, *, mirror=None) -> None:
        self.cfg, self.info, self.device, self.out, self.parts = cfg, info, device, out, parts
        self.mirror: RunMirror | None = mirror  # train.out_dir is a URL: `out` is its local mirror, rank 0 uploads
        self.sampler, self.generator, self.transforms, self.tables = sampler, generator, transforms, tables
        self.state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "bad_steps": 0, "skipped": 0}
        self.epoch_start = generator.get_state()  # the data order is a function of this state + batch_in_epoch
        self.ckpt_root = out / "checkpoints"
        # Batch augmentation draws from (seed, rank, step) alone: nothing to save for an exact resume.
        self.augment = BatchAugment(cfg.preprocess, seed=cfg.train.seed) if cfg.preprocess.augment == "batch" else None
        self.last_checkpoint: Path | None = None

    def loop(self, loader: DataLoader, cached: torch.Tensor | None, total: int, *, show_progress: bool) -> None:
        tcfg = self.cfg.train
        with (
            MetricsLogger(
                self.out, enabled=self.info.is_main, tensorboard=tcfg.tensorboard, resume_step=self.state["step"]
            ) as metrics,
            tqdm(total=total, initial=self.state["step"], disable=not show_progress, unit="step") as bar,
        ):
            while self.state["step"] < total:
                if self.state["batch_in_epoch"] == 0:
                    self.epoch_start = self.generator.get_state()
                if isinstance(self.sampler, StreamingPairs):  # its order is a function of the epoch number
                    self.sampler.set_epoch(self.state["epoch"])
                for batch in loader:
                    augment = (
                        partial(self.augment, step=self.state["step"], rank=self.info.rank) if self.augment else None
                    )
                    inputs = prepare_inputs(
                        batch, device=self.device, cached=cached, channels_last=tcfg.channels_last, augment=augment
                    )
                    record = self._step(inputs, self.tables.loss_kwargs(batch, self.device))
                    self.state["batch_in_epoch"] += 1
                    step = self.state["step"]
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", pairs_s=f"{record['pairs_per_s']:.0f}")
                    if step % tcfg.log_every == 0 or step == total:
                        metrics.log({**record, "epoch": self.state["epoch"], **memory_stats(self.device)})
                    if (step % tcfg.checkpoint_every == 0 or step == total) and self.state["bad_steps"] == 0:
                        self.save()
                    if step >= total:
                        break
                else:
                    self.state["epoch"] += 1
                    self.state["batch_in_epoch"] = 0

    def _step(self, inputs: dict, loss_kwargs: dict) -> dict:
        try:
            return train_step(self.parts, inputs, loss_kwargs, self.state)
        except NonFiniteLossError as exc:
            where = self.last_checkpoint or ckpt.latest_checkpoint(self.ckpt_root)
            kept = (
                f"the last good checkpoint is {where} (resume with --resume)" if where else "no checkpoint was written"
            )
            raise NonFiniteLossError(f"{exc}; {kept}") from None

    def _trainer_state(self) -> dict:
        p = self.parts
        return {
            **self.state,
            "loader_epoch_start": self.epoch_start,
            "world_size": self.info.world_size,
            "batch_size": self.sampler.batch_size,
            "data_order": _data_order(self.sampler),
            "scheduler": p.scheduler.state_dict(),
            "scaler": p.scaler.state_dict(),
        }

    def save(self) -> None:
        """Write ``checkpoints/step-N`` atomically: every rank adds its RNG file, rank 0 the rest and renames."""
        step = self.state["step"]
        tmp = self.ckpt_root / f"{ckpt.TMP_PREFIX}step-{step:07d}"
        if self.info.is_main:
            ckpt.begin(self.ckpt_root, step)
        barrier()
        rng = ckpt.rng_state(transforms=self.transforms, device=self.device)
        if self.mirror is None:
            torch.save(rng, tmp / f"rng-rank{self.info.rank}.pt")
        else:  # each node has its own mirror: rank 0 writes every rank's state into its checkpoint
            for rank, state in enumerate(_gather_to_main(rng, self.info)):
                torch.save(state, tmp / f"rng-rank{rank}.pt")
        barrier()
        if self.info.is_main:
            ckpt.write_main(
                tmp, model=self.parts.model, optimizer=self.parts.optimizer, trainer_state=self._trainer_state()
            )
            self.last_checkpoint = ckpt.commit(tmp, keep=self.cfg.train.keep_checkpoints)
            logger.debug("checkpoint %s", self.last_checkpoint)
            if self.mirror is not None:  # metrics first: a resume from this checkpoint finds its steps logged
                self.mirror.upload("metrics.jsonl", "tensorboard")
                self.mirror.upload_checkpoint(self.last_checkpoint, keep=self.cfg.train.keep_checkpoints)
        barrier()

    def resume(self) -> None:
        path = ckpt.latest_checkpoint(self.ckpt_root)
        if path is None:
            where = storage.join(self.cfg.train.out_dir, "checkpoints") if self.mirror else self.ckpt_root
            logger.warning("--resume: no checkpoint in %s; starting from step 0", storage.display(where))
            return
        ts = ckpt.load_main(path, model=self.parts.model, optimizer=self.parts.optimizer, device=self.device)
        self.parts.scheduler.load_state_dict(ts["scheduler"])
        if ts["scaler"]:
            self.parts.scaler.load_state_dict(ts["scaler"])
        if (ts["world_size"], ts["batch_size"]) != (self.info.world_size, self.sampler.batch_size):
            logger.warning(
                "resuming %s with %d x %d pairs per step instead of %d x %d: the data order changes",
                path,
                self.info.world_size,
                self.sampler.batch_size,
                ts["world_size"],
                ts["batch_size"],
            )
        order = _data_order(self.sampler)
        if ts.get("data_order", {"streaming": False}) != order:
            logger.warning(
                "resuming %s with another data order (%s, was %s): the batches differ from an uninterrupted run",
                path,
                order,
                ts.get("data_order"),
            )
        self.state = {k: int(ts[k]) for k in self.state}
        self.epoch_start = ts["loader_epoch_start"]
        self.generator.set_state(self.epoch_start)
        self.sampler.skip_batches(self.state["batch_in_epoch"])
        rng_file = path / f"rng-rank{self.info.rank}.pt"
        if rng_file.is_file():
            state = torch.load(rng_file, map_location="cpu", weights_only=True)
            ckpt.set_rng_state(state, transforms=self.transforms, device=self.device)
        else:
            logger.warning("%s has no random state for rank %d; augmentations will differ", path, self.info.rank)
        self.last_checkpoint = path
        logger.info("resumed from %s (step %d, epoch %d)", path, self.state["step"], self.state["epoch"])
