"""Streaming prepared shards (a folder or an object-storage URL) into training, with an exact resume.

Format decision (measured by ``scripts/bench_scale.py`` against a local S3 server, 98 KiB images in 24.5 MiB shards;
figures in docs/scale.md): today's memory-mapped ``.npy`` shards stay, fetched *whole* into a local cache, not
WebDataset tars or litdata. A ranged GET costs ~8 ms whatever its size, so one image per request gives ~120 images/s
(~170 with a batch of concurrent ranges); a whole-shard GET runs at the store's bandwidth (~460-630 MB/s, ~5,000-6,500
images/s) and, once local, the file is memory-mapped exactly as local shards are, so a warm cache reads at local-disk
speed (0.95-1.0x). A tar stream moves the same bytes but parses and decodes every member (~3,000 images/s) and gives
up random access inside a shard and the cache for later epochs.

Each epoch's order is a pure function of (seed, epoch, rank, world size, worker count) and the shard sizes:

1. the shards are permuted (seed, epoch) and each shard's training rows shuffled (seed, epoch, shard);
2. laid end to end, those rows are cut into ``world_size x workers`` equal contiguous *slots* (rank-major), the
   remainder (fewer rows than slots) dropped: every rank and worker gets the same number of rows from a run of
   whole shards (a shard on a cut is read by both neighbours, each for its own rows);
3. a seeded shuffle buffer of ``shuffle_buffer`` rows mixes each slot's stream across its shards, and the stream is
   cut into ``rows // batch_size`` batches; batch ``j`` of slot ``w`` is the rank's batch ``j * workers + w``.

So every rank yields the same number of batches (DDP never waits on a rank that ran out), and a resume at
``batch_in_epoch = k`` computes the same index streams, drops their first batches without reading a pixel and goes
on with the identical batches: DataLoader worker ``i`` serves slot ``(k + i) % workers`` so the DataLoader's
round-robin over workers still yields batch ``k, k + 1, ...``. Random choices made per batch (a sentence of
``text_choices``, per-sample MONAI augmentation) are seeded by (seed, epoch, rank, batch) too; the trainer's batch
augmentation is a function of (seed, rank, step). Nothing about the data position but (epoch, batch) is saved.

Remote shard files are fetched whole into ``cache_dir/shards/<key>-<name>/`` (the key covers the URL and the
shards' plan: manifest hash, recipe, block size, counts) under a temporary name, renamed when complete, with a file
lock so processes on one node fetch each file once; the next ``prefetch`` shards a worker needs are fetched by
background threads while it reads the current one. The cache is never evicted: give it room for the shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import IterableDataset, get_worker_info

from medclip.config import PreprocessCfg
from medclip.data.datasets import PairCollator, normalize_prepared, prepared_tail
from medclip.data.shards import FORMAT, INDEX_NAME, INFO_NAME, REJECTS_NAME, SCALE, recipe_of
from medclip.errors import InputError
from medclip.io import storage

logger = logging.getLogger(__name__)

STREAMING_MODES = ("auto", "on", "off")
_PLAN_KEYS = ("manifest_hash", "recipe", "rows_per_shard", "num_shards", "counts")  # what the cached bytes depend on
# Purposes mixed into the seeds, so the draws of one step never reuse another's stream.
_SHARD_ORDER, _ROW_ORDER, _BUFFER, _PER_BATCH = range(4)


def shard_file(k: int) -> str:
    """The pixel file of block ``k`` (the layout in medclip.data.shards' docstring)."""
    return f"shard-{k:05d}.npy"


def use_streaming(mode: str, shards: str) -> bool:
    """Whether ``data.streaming`` (auto | on | off) streams ``data.shards``: auto streams a remote URL."""
    # YAML 1.1 (and so an override `data.streaming=on`) reads bare on / off as booleans: "True" / "False" here
    mode = {"true": "on", "false": "off"}.get(str(mode).strip().lower(), str(mode).strip().lower())
    if mode not in STREAMING_MODES:
        raise InputError(
            f"data.streaming={mode!r} is not one of {STREAMING_MODES} (auto: stream when data.shards is an "
            "object-storage URL; on: stream a local folder too; off: random access by index)"
        )
    if mode == "on" and not shards:
        raise InputError("data.streaming=on needs data.shards (a `medclip prepare` output folder or URL)")
    return bool(shards) and (mode == "on" or (mode == "auto" and storage.is_url(shards)))


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) for p in parts]))


# ---------------------------------------------------------------------------------------------- the shard folder


def _read_meta(url: str, name: str) -> bytes:
    """A small metadata file of the shard folder, with errors that name the URL (never credentials)."""
    where = storage.display(url)
    try:
        return storage.read_bytes(storage.join(url, name))
    except FileNotFoundError:
        if storage.missing_bucket(url):
            problem = f"the bucket {storage.bucket(url)} does not exist or these credentials cannot see it"
        else:
            problem = f"no {name} there"
        raise InputError(
            f"{where}: {problem}; point data.shards at a `medclip prepare MANIFEST --out {where}` output"
        ) from None
    except (PermissionError, OSError) as exc:
        raise InputError(
            f"{where}: cannot read {name} ({type(exc).__name__}: {exc}); check the URL and that the credentials in "
            "the environment (AWS_PROFILE or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) may read it"
        ) from None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX flock) shared by the processes of a node; a no-op where flock is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps the cache consistent (a file may be fetched twice)
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class ShardSource:
    """A complete prepared shard folder, local or remote: its ``shards.json`` and where its pixel files are read.

    ``cache`` is the local folder remote shard files are fetched into (None for a local folder).
    """

    url: str
    info: dict
    cache: Path | None

    @classmethod
    def open(cls, url: str, *, cache_dir: str | Path = "") -> tuple[ShardSource, pd.DataFrame]:
        """The source and its index (row_id, image_path, shard, offset)."""
        info = json.loads(_read_meta(url, INFO_NAME))
        where = storage.display(url)
        if info.get("format") != FORMAT:
            raise InputError(f"{where}/{INFO_NAME} is not a medclip shard folder (format {info.get('format')!r})")
        if not info.get("complete"):
            raise InputError(
                f"{where}: shards are incomplete; run `medclip prepare` for every --shard I/N part to finish them"
            )
        index = pd.read_parquet(io.BytesIO(_read_meta(url, INDEX_NAME)))
        cache = None
        if storage.is_url(url):
            plan = json.dumps({k: info.get(k) for k in _PLAN_KEYS}, sort_keys=True, default=str)
            key = hashlib.sha256(f"{where.rstrip('/')}\n{plan}".encode()).hexdigest()[:16]
            name = where.rstrip("/").rsplit("/", 1)[-1] or "shards"
            cache = Path(cache_dir or storage.cache_root()) / "shards" / f"{key}-{name}"
        return cls(url, info, cache), index

    @property
    def remote(self) -> bool:
        return self.cache is not None

    def check_recipe(self, preprocess: PreprocessCfg) -> None:
        """Raise unless the shards were prepared with this run's deterministic preprocessing."""
        theirs = {"invert": False, **self.info.get("recipe", {})}
        diff = {k: (theirs.get(k), v) for k, v in recipe_of(preprocess).items() if theirs.get(k) != v}
        if diff:
            said = ", ".join(f"{k}={a} in the shards but preprocess.{k}={b} in this run" for k, (a, b) in diff.items())
            raise InputError(
                f"{storage.display(self.url)}: {said}; re-run `medclip prepare MANIFEST --out NEW --image-size "
                f"{preprocess.image_size}` (same window/channels) or point data.shards at matching shards"
            )

    def local_file(self, k: int) -> Path:
        """Shard ``k``'s ``.npy`` on this machine: the file itself, or its cached copy (fetched whole if missing)."""
        if self.cache is None:
            return storage.local_path(self.url) / shard_file(k)
        target = self.cache / shard_file(k)
        if target.is_file():
            return target
        self.cache.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.cache / f".{shard_file(k)}.lock"):
            if target.is_file():  # another process of this node fetched it while we waited
                return target
            url = storage.join(self.url, shard_file(k))
            tmp = target.with_name(f".{target.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
            t0 = time.perf_counter()
            try:
                fs, path = storage.filesystem(url)
                fs.get_file(path, str(tmp))
                os.replace(tmp, target)
            except FileNotFoundError:
                raise InputError(
                    f"{storage.display(url)} is missing although {INFO_NAME} says the shards are complete; "
                    "re-run `medclip prepare` into that folder"
                ) from None
            finally:
                tmp.unlink(missing_ok=True)
            logger.debug("fetched %s in %.2f s", storage.display(url), time.perf_counter() - t0)
        return target


# ---------------------------------------------------------------------------------------------- the epoch's order


def shuffle_buffer(order: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``order`` through a shuffle buffer of ``size`` items: fill it, then emit a random slot and refill it from
    the stream; at the end emit the rest in random order. ``size <= 1`` keeps the order."""
    if size <= 1:
        return order.copy()
    if len(order) <= size:
        return rng.permutation(order)
    buf = list(order[:size])
    out = []
    for item, j in zip(order[size:].tolist(), rng.integers(0, size, len(order) - size).tolist(), strict=True):
        out.append(buf[j])
        buf[j] = item
    out.extend(rng.permutation(np.asarray(buf, dtype=order.dtype)).tolist())
    return np.asarray(out, dtype=order.dtype)


def slot_rows(shard_rows: list[np.ndarray], *, seed: int, epoch: int, slot: int, rows_per_slot: int) -> np.ndarray:
    """Slot ``slot``'s rows (items of ``shard_rows``) in epoch ``epoch``: rows ``[slot * n, (slot + 1) * n)`` of the
    shards permuted by (seed, epoch), each shard's rows shuffled by (seed, epoch, shard). Only the shards the slot
    overlaps are shuffled, so a worker does work for its own rows only."""
    perm = _rng(seed, epoch, _SHARD_ORDER).permutation(len(shard_rows))
    sizes = np.array([len(shard_rows[k]) for k in perm], dtype=np.int64)
    ends = np.cumsum(sizes)
    lo, hi = slot * rows_per_slot, (slot + 1) * rows_per_slot
    parts = []
    for i in range(int(np.searchsorted(ends, lo, side="right")), len(perm)):
        start = int(ends[i] - sizes[i])
        if start >= hi:
            break
        k = int(perm[i])
        rows = _rng(seed, epoch, _ROW_ORDER, k).permutation(shard_rows[k])
        parts.append(rows[max(lo, start) - start : min(hi, int(ends[i])) - start])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- reading


class _ShardReader:
    """The shard files a worker's remaining batches need, fetched in order of first use (``prefetch`` ahead, in a
    background thread, for a remote source), memory-mapped while needed and released after their last batch."""

    def __init__(self, source: ShardSource, needs: list[np.ndarray], *, kept: dict[int, int], prefetch: int) -> None:
        self.source, self.kept, self.prefetch = source, kept, max(0, prefetch)
        self.last: dict[int, int] = {}
        first: dict[int, int] = {}
        for i, shards in enumerate(needs):
            for k in np.unique(shards).tolist():
                first.setdefault(k, i)
                self.last[k] = i
        self.schedule = sorted(first, key=first.get)  # shards in order of first use
        self.position = {k: i for i, k in enumerate(self.schedule)}
        self.pool = (
            ThreadPoolExecutor(max(1, self.prefetch), thread_name_prefix="medclip-fetch") if source.remote else None
        )
        self.futures: dict[int, Future] = {}
        self.arrays: dict[int, np.ndarray] = {}

    def _submit_through(self, k: int) -> None:
        stop = min(len(self.schedule), self.position[k] + 1 + self.prefetch)
        for shard in self.schedule[:stop]:
            if shard not in self.futures and shard not in self.arrays:
                self.futures[shard] = self.pool.submit(self.source.local_file, shard)

    def array(self, k: int) -> np.ndarray:
        if k in self.arrays:
            return self.arrays[k]
        if self.pool is None:
            path = self.source.local_file(k)
        else:
            self._submit_through(k)
            path = self.futures.pop(k).result()
        array = np.load(path, mmap_mode="r")
        if array.shape[0] != self.kept.get(k, -1):
            raise InputError(
                f"{path} holds {array.shape[0]} rows but {INDEX_NAME} lists {self.kept.get(k)} for shard {k}; "
                "delete the cached copy (or re-run `medclip prepare`)"
            )
        self.arrays[k] = array
        return array

    def done_with(self, batch: int) -> None:
        for k in [k for k in self.arrays if self.last[k] <= batch]:
            del self.arrays[k]  # unmaps once the last view is gone

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.arrays.clear()


class StreamingPairs(IterableDataset):
    """Training pairs streamed from prepared shards: yields whole batches ``{"key": [epoch, rank, batch], "items":
    [pair dict, ...]}`` (pair dicts as :class:`~medclip.data.datasets.PairDataset` gives them) for a DataLoader with
    ``batch_size=None`` and :class:`StreamCollate`. See the module docstring for the order and the resume.

    Call :meth:`set_epoch` before iterating an epoch; :meth:`skip_batches` (before it) makes that epoch start at a
    batch, like :class:`~medclip.train.sampler.ShardedBatchSampler`.
    """

    def __init__(
        self,
        pairs: list[dict],
        texts: list[str],
        preprocess: PreprocessCfg,
        *,
        shards: str,
        train: bool,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        shuffle_buffer: int = 4096,
        cache_dir: str | Path = "",
        prefetch: int = 2,
    ) -> None:
        self.source, index = ShardSource.open(shards, cache_dir=cache_dir)
        self.source.check_recipe(preprocess)
        self.texts, self.preprocess = texts, preprocess
        self.pairs = self._select(pairs, index)
        position = pd.Series(np.arange(len(index)), index=index["row_id"].to_numpy())
        rows = position.loc[[p["row_id"] for p in self.pairs]].to_numpy()
        self.pair_shard = index["shard"].to_numpy(dtype=np.int64)[rows]  # [n] pair -> shard
        self.pair_offset = index["offset"].to_numpy(dtype=np.int64)[rows]  # [n] pair -> row in the shard's array
        self.kept = index.groupby("shard").size().astype(int).to_dict()
        by_offset = np.lexsort((self.pair_offset, self.pair_shard))
        bounds = np.searchsorted(self.pair_shard[by_offset], np.arange(self.source.info["num_shards"] + 1))
        self.shard_rows = [by_offset[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.workers, self.buffer, self.prefetch = max(1, workers), shuffle_buffer, prefetch
        self.rows_per_slot = len(self.pairs) // (world_size * self.workers)
        self.batches_per_slot = self.rows_per_slot // batch_size
        if self.batches_per_slot == 0:
            raise InputError(
                f"{len(self.pairs)} training pairs in {storage.display(shards)} over {world_size} rank(s) x "
                f"{self.workers} worker(s) are {self.rows_per_slot} per worker, fewer than one batch of {batch_size}; "
                "lower train.batch_size or data.num_workers"
            )
        self.tail, self.normalize_only = prepared_tail(preprocess, train=train)
        self._epoch, self._start, self._skip = 0, 0, 0
        unused = len(self.pairs) - world_size * self.samples_per_rank
        logger.info(
            "streaming %d pairs from %d shards in %s: %d per rank per epoch (%d left out each epoch, different ones)",
            len(self.pairs),
            sum(len(r) > 0 for r in self.shard_rows),
            storage.display(shards),
            self.samples_per_rank,
            unused,
        )

    def _select(self, pairs: list[dict], index: pd.DataFrame) -> list[dict]:
        paths = dict(zip(index["row_id"].tolist(), index["image_path"].tolist(), strict=True))
        kept, missing = [], 0
        for pair in pairs:
            path = paths.get(pair["row_id"])
            if path is None:
                missing += 1
            elif path != str(pair["image"]):
                raise InputError(
                    f"{storage.display(self.source.url)}: row_id {pair['row_id']} is {path} in the shards but "
                    f"{pair['image']} in the manifest; the shards were made from another manifest, re-run "
                    "`medclip prepare`"
                )
            else:
                kept.append(pair)
        if missing:
            logger.warning(
                "%d of %d pairs have no prepared image (rejected at prepare time, see %s); skipped",
                missing,
                len(pairs),
                storage.display(storage.join(self.source.url, REJECTS_NAME)),
            )
        return kept

    # -- the order (pure functions of the arguments and the shard sizes) ------------------------------------------
    @property
    def samples_per_rank(self) -> int:
        return self.workers * self.batches_per_slot * self.batch_size

    def __len__(self) -> int:
        """Batches per epoch on each rank."""
        return self.workers * self.batches_per_slot

    def order_key(self) -> dict:
        """What the data order depends on besides (epoch, batch): a resume with other values gets other batches."""
        return {
            "seed": self.seed,
            "world_size": self.world_size,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "shuffle_buffer": self.buffer,
            "pairs": len(self.pairs),
        }

    def slot_order(self, epoch: int, slot: int, *, rank: int | None = None) -> np.ndarray:
        """Indices into ``self.pairs`` that worker slot ``slot`` of ``rank`` (default: this one) yields in
        ``epoch``, batch after batch."""
        rank = self.rank if rank is None else rank
        global_slot = rank * self.workers + slot
        rows = slot_rows(
            self.shard_rows, seed=self.seed, epoch=epoch, slot=global_slot, rows_per_slot=self.rows_per_slot
        )
        mixed = shuffle_buffer(rows, self.buffer, _rng(self.seed, epoch, _BUFFER, global_slot))
        return mixed[: self.batches_per_slot * self.batch_size]

    def batch_indices(self, epoch: int, *, rank: int | None = None) -> list[np.ndarray]:
        """Every batch of ``epoch`` on ``rank`` in the order the DataLoader yields them (for tests and tools)."""
        orders = [self.slot_order(epoch, w, rank=rank) for w in range(self.workers)]
        bs = self.batch_size
        return [orders[b % self.workers][(b // self.workers) * bs :][:bs] for b in range(len(self))]

    # -- iteration ---------------------------------------------------------------------------------------------
    def skip_batches(self, k: int) -> None:
        """Make the next :meth:`set_epoch` start at batch ``k`` (a resume mid-epoch)."""
        self._skip = k

    def set_epoch(self, epoch: int) -> None:
        self._epoch, self._start, self._skip = epoch, self._skip, 0

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, n = (info.id, info.num_workers) if info is not None else (0, 1)
        if n != self.workers:
            raise RuntimeError(f"StreamingPairs was planned for {self.workers} DataLoader workers but runs under {n}")
        start, epoch, bs = self._start, self._epoch, self.batch_size
        slot = (start + worker) % n  # so the DataLoader's round-robin over workers yields batch start, start + 1, ...
        order = self.slot_order(epoch, slot)
        first = max(0, -(-(start - slot) // n))  # the slot's first batch j with j * n + slot >= start
        batches = [(j * n + slot, order[j * bs : (j + 1) * bs]) for j in range(first, self.batches_per_slot)]
        reader = _ShardReader(
            self.source, [self.pair_shard[idx] for _, idx in batches], kept=self.kept, prefetch=self.prefetch
        )
        try:
            for i, (b, idx) in enumerate(batches):
                yield {"key": [epoch, self.rank, b], "items": self._items(epoch, b, idx, reader)}
                reader.done_with(i)
        finally:
            reader.close()

    def _read(self, idx: np.ndarray, reader: _ShardReader) -> np.ndarray:
        shards, offsets = self.pair_shard[idx], self.pair_offset[idx]
        raw = None
        for k in np.unique(shards).tolist():
            sel = np.flatnonzero(shards == k)
            sel = sel[np.argsort(offsets[sel], kind="stable")]  # ascending offsets: sequential reads in the file
            array = reader.array(k)
            if raw is None:
                raw = np.empty((len(idx), *array.shape[1:]), dtype=array.dtype)
            raw[sel] = array[offsets[sel]]
        return raw

    def _items(self, epoch: int, b: int, idx: np.ndarray, reader: _ShardReader) -> list[dict]:
        raw = self._read(idx, reader)
        pairs = [self.pairs[i] for i in idx.tolist()]
        if self.normalize_only:
            images = normalize_prepared(raw, self.preprocess)
        else:  # per-sample MONAI random transforms, seeded per batch so a resume repeats them
            self.tail.set_random_state(seed=_seed(self.seed, epoch, self.rank, b, _PER_BATCH))
            scale = np.float32(1.0 / SCALE)
            images = [self.tail({"image": r.astype(np.float32) * scale})["image"] for r in raw]
        return [{**pair, "image": image} for pair, image in zip(pairs, images, strict=True)]


class StreamCollate:
    """A :class:`PairCollator` for :class:`StreamingPairs` batches: the sentence drawn for ``text_choices`` is
    seeded by (seed, epoch, rank, batch), so it does not depend on which worker collates or on a resume."""

    def __init__(self, collator: PairCollator, *, seed: int) -> None:
        self.collator, self.seed = collator, seed

    def __call__(self, batch: dict) -> dict:
        epoch, rank, b = batch["key"]
        self.collator.rng.seed(_seed(self.seed, epoch, rank, b, _PER_BATCH, 1))
        return self.collator(batch["items"])
