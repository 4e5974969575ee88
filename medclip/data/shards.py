"""Prepared image shards: decode, window and resize every manifest image once, then train and evaluate from them.

``medclip prepare`` runs exactly the deterministic part of the MONAI pipeline (:func:`deterministic_transforms`:
decode + window, aspect-preserving resize, pad to square) in worker processes and stores the result; the random
augmentation and normalisation still run per epoch, so a model sees the same inputs from shards as from raw files.

Why memory-mapped ``.npy`` and not WebDataset tars: a memmap gives O(1) random access to any row with zero-copy
reads served from the OS page cache (no tar parsing, no per-sample decode). From object storage the same files stream
(:mod:`medclip.data.streaming`): whole shard files are fetched into a local cache and memory-mapped, which measured
faster than per-image ranged reads or a tar stream (docs/scale.md). ``--out`` may be a URL; with a Dask executor
each block is one task that a worker decodes and writes.

Storage: uint16, ``round(x * 65535)`` of the [0, 1] image. The step (1.5e-5) is finer than any 12-16-bit
radiograph's grey levels after windowing, uniform over [0, 1] (float16 has a coarser 4.9e-4 step near 1) and half
the bytes of float32: 100 KiB per 224 px image.

Layout of ``SHARDS/``::

    shards.json                 recipe (image_size, channels, window_index), manifest content hash, plan, counts
    shard-00000.npy             uint16 [n, C, S, S], the kept rows of block 0 in row_id order
    shard-00000.rows.parquet    per row of block 0: row_id, image_path, offset (-1 = rejected), reason, detail
    index.parquet               row_id -> (shard, offset), written once every block is done
    rejects.parquet             rows that failed to decode: row_id, path, kind, reason (a ReadError code), detail

Manifest rows, sorted by row_id, are cut into contiguous blocks of ``rows_per_shard``; block ``k`` is one shard.
``--shard I/N`` makes this machine do the blocks with ``k % N == I``, so N machines writing into one shared folder
produce byte-identical files to a single run. Each block is written under a temporary name and renamed (``.npy``
first, the ``.rows.parquet`` marker last), so an interrupted run resumes and a rerun skips finished blocks.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from monai.transforms import Compose, MapTransform
from tqdm.auto import tqdm

from medclip.config import PreprocessCfg
from medclip.data.transforms import deterministic_transforms
from medclip.errors import InputError
from medclip.executors import Executor
from medclip.io import storage

logger = logging.getLogger(__name__)

FORMAT, FORMAT_VERSION = "medclip-shards", 1
SCALE = 65535  # uint16 full range <-> [0, 1]
RECIPE_FIELDS = (
    "image_size",
    "channels",
    "window_index",
    "invert",
)  # the PreprocessCfg fields the stored pixels depend on
INFO_NAME, INDEX_NAME, REJECTS_NAME = "shards.json", "index.parquet", "rejects.parquet"
SHARD_BYTES = 256 << 20  # default block size: ~2,700 images at 224 px, 1 channel
_PLAN_KEYS = ("format", "version", "recipe", "dtype", "scale", "manifest_hash", "rows", "rows_per_shard", "num_shards")


def recipe_of(preprocess: PreprocessCfg) -> dict:
    """The deterministic preprocessing fields that prepared pixels depend on."""
    full = asdict(preprocess)
    return {k: full[k] for k in RECIPE_FIELDS}


def parse_shard_spec(spec: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N); ``None`` or ``""`` -> (0, 1), i.e. all blocks."""
    if not spec:
        return 0, 1
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise InputError(f"--shard {spec!r}: expected I/N with 0 <= I < N (e.g. 0/4 on the first of 4 machines)")
    return i, n


def _atomic_write(path: str | Path, write) -> None:
    """``write(tmp_path)`` then rename to ``path``; for a URL the file is written locally and uploaded as one object
    (an object store's PUT is atomic: a reader never sees half of it)."""
    if storage.is_url(path):
        with tempfile.TemporaryDirectory(prefix="medclip-prepare-") as tmpdir:
            tmp = Path(tmpdir) / Path(str(path)).name
            write(tmp)
            storage.upload(tmp, path)
        return
    path = storage.local_path(path)
    # host + pid: machines splitting the work (--shard I/N) may share this folder over a network file system
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: str | Path, obj: dict) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2)))


def _read_json(path: str | Path) -> dict:
    return json.loads(storage.read_text(path))


def _read_rows(path: str) -> pd.DataFrame:
    if storage.is_url(path):
        fs, inner = storage.filesystem(path)
        return pd.read_parquet(inner, filesystem=fs)
    return pd.read_parquet(path)


def _block_name(k: int) -> str:
    return f"shard-{k:05d}"


# ---------------------------------------------------------------------------------------------- writing (workers)

_WORKER: dict = {}


def _init_worker(preprocess: dict, single_thread: bool = True) -> None:
    if single_thread:
        import torch

        torch.set_num_threads(1)  # one process per core; intra-op threads would oversubscribe
    _WORKER["transform"] = Compose(deterministic_transforms(PreprocessCfg(**preprocess)))


def _decode_one(task: tuple[int, str]) -> tuple[int, np.ndarray | None, str, str]:
    """(row_id, path) -> (row_id, uint16 [C, S, S] or None, reject reason, detail). Never raises."""
    from medclip.io.dicom import ReadError

    row_id, path = task
    try:
        image = np.asarray(_WORKER["transform"]({"image": path})["image"], dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a run over a whole archive
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ReadError):  # MONAI wraps errors in RuntimeError
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ReadError):
            return row_id, None, cause.reason, cause.detail
        return row_id, None, "transform_error", f"{path}: {type(exc).__name__}: {exc}"
    return row_id, np.rint(np.clip(image, 0.0, 1.0) * SCALE).astype(np.uint16), "", ""


@contextmanager
def _decoder(preprocess: PreprocessCfg, workers: int) -> Iterator[Callable[[list], Iterator[tuple]]]:
    """A map over (row_id, path) tasks, in task order, run by ``workers`` processes (this one when workers <= 1)."""
    if workers <= 1:
        _init_worker(asdict(preprocess), single_thread=False)  # leave this process's thread count alone
        yield lambda tasks: map(_decode_one, tasks)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(asdict(preprocess),)) as pool:
        yield lambda tasks: pool.map(_decode_one, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))


def _write_block(out: str, k: int, block: pd.DataFrame, results: list[tuple], shape: tuple[int, ...]) -> int:
    """Write block ``k`` (array first, then its rows marker); returns the number of kept rows."""
    kept = [r[1] for r in results if r[1] is not None]
    array = np.stack(kept) if kept else np.zeros((0, *shape), dtype=np.uint16)

    def save(p: Path) -> None:
        with open(p, "wb") as fh:  # a file handle, so np.save does not append ".npy" to the temp name
            np.save(fh, array)

    _atomic_write(storage.join(out, f"{_block_name(k)}.npy"), save)
    ok = np.array([r[1] is not None for r in results], dtype=bool)
    rows = pd.DataFrame(
        {
            "row_id": [r[0] for r in results],
            "image_path": block["image_path"].astype(str).tolist(),
            "offset": np.where(ok, np.cumsum(ok) - 1, -1),
            "reason": [r[2] for r in results],
            "detail": [r[3] for r in results],
        }
    )
    _atomic_write(storage.join(out, f"{_block_name(k)}.rows.parquet"), lambda p: rows.to_parquet(p, index=False))
    return int(ok.sum())


def prepare_block(task: tuple[str, int, pd.DataFrame, dict, tuple[int, ...]]) -> tuple[int, int, int]:
    """One shard as one executor task (``--executor dask``): decode block ``k``'s rows in this worker and write
    the block; -> (k, rows kept, rows rejected). Never raises on a bad image (it becomes a reject row)."""
    out, k, block, preprocess, shape = task
    if _WORKER.get("recipe") != preprocess:
        _init_worker(preprocess)
        _WORKER["recipe"] = preprocess
    tasks = [(int(r), str(p)) for r, p in zip(block["row_id"], block["image_path"], strict=True)]
    results = [_decode_one(t) for t in tasks]
    shape = next((r[1].shape for r in results if r[1] is not None), shape)
    kept = _write_block(out, k, block, results, shape)
    return k, kept, len(results) - kept


# ---------------------------------------------------------------------------------------------- writing (driver)


def _plan(df: pd.DataFrame, meta: dict, preprocess: PreprocessCfg, rows_per_shard: int) -> dict:
    from medclip.ingest.manifest import content_hash

    if rows_per_shard <= 0:
        rows_per_shard = max(1, SHARD_BYTES // (2 * preprocess.channels * preprocess.image_size**2))
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "recipe": recipe_of(preprocess),
        "dtype": "uint16",
        "scale": SCALE,
        "manifest_hash": meta.get("content_hash") or content_hash(df),
        "rows": len(df),
        "rows_per_shard": rows_per_shard,
        "num_shards": -(-len(df) // rows_per_shard),
        "complete": False,
    }


def _claim(out: str, plan: dict, *, adopt_rows_per_shard: bool) -> dict:
    """Create ``out`` with ``shards.json``, or check that an existing one was made by the same plan.

    With ``adopt_rows_per_shard`` (no explicit block size asked for) a rerun keeps the folder's block size.
    """
    if not storage.is_url(out):
        storage.local_path(out).mkdir(parents=True, exist_ok=True)
    info_path = storage.join(out, INFO_NAME)
    if not storage.isfile(info_path):
        _write_json(info_path, plan)
        return plan
    info = _read_json(info_path)
    if adopt_rows_per_shard and isinstance(info.get("rows_per_shard"), int) and info["rows_per_shard"] > 0:
        rps = info["rows_per_shard"]
        plan = {**plan, "rows_per_shard": rps, "num_shards": -(-plan["rows"] // rps)}
    diff = [k for k in _PLAN_KEYS if info.get(k) != plan[k]]
    if diff:
        theirs = ", ".join(f"{k}={info.get(k)}" for k in diff)
        ours = ", ".join(f"{k}={plan[k]}" for k in diff)
        raise InputError(
            f"{storage.display(out)} holds shards of another recipe or manifest ({theirs}; this run: {ours}); "
            "use a new --out folder or delete the old one"
        )
    return info


def _block_done(out: str, k: int) -> bool:
    rows, array = (storage.join(out, f"{_block_name(k)}{ext}") for ext in (".rows.parquet", ".npy"))
    return storage.isfile(rows) and storage.isfile(array)


def _run_blocks(
    out: str, blocks: dict[int, pd.DataFrame], preprocess: PreprocessCfg, *, workers: int, show_progress: bool
) -> tuple[int, int]:
    """Decode and write each block; -> (rows kept, rows rejected)."""
    shape = (preprocess.channels, preprocess.image_size, preprocess.image_size)
    kept = rejected = 0
    n_tasks = sum(len(b) for b in blocks.values())
    with (
        _decoder(preprocess, workers if n_tasks > 1 else 1) as decode,
        tqdm(total=n_tasks, desc="prepare", unit="img", disable=not show_progress) as bar,
    ):
        for k, block in blocks.items():
            tasks = [(int(r), str(p)) for r, p in zip(block["row_id"], block["image_path"], strict=True)]
            results = []
            for result in decode(tasks):
                results.append(result)
                bar.update(1)
            shape = next((r[1].shape for r in results if r[1] is not None), shape)
            n_kept = _write_block(out, k, block, results, shape)
            kept, rejected = kept + n_kept, rejected + len(results) - n_kept
    return kept, rejected


def prepare_shards(
    manifest_dir: str | Path,
    out_dir: str | Path,
    *,
    preprocess: PreprocessCfg,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    rows_per_shard: int = 0,
    show_progress: bool = True,
    executor: Executor | None = None,
) -> dict:
    """Decode + window + resize every manifest row once into ``out_dir`` (see the module docstring).

    Args:
        manifest_dir: a ``medclip manifest`` output folder.
        out_dir: the shard folder; rerunning into it skips finished blocks.
        preprocess: the recipe; only image_size, channels and window_index matter here.
        workers: decoding processes (<= 1: decode in this process).
        shard: (I, N) -> do only blocks with ``k % N == I`` (N machines sharing one folder).
        rows_per_shard: rows per block; 0 -> the folder's (on a rerun), else about 256 MiB of pixels.
        show_progress: show a tqdm bar over rows.
        executor: a :class:`~medclip.executors.DaskExecutor` runs one task per block on the cluster (each worker
            decodes its block and writes it into ``out_dir``, so every worker must reach it: a shared folder or an
            object-storage URL); None or a local executor decodes with ``workers`` processes here. The files are
            byte-identical either way.

    Returns:
        A summary: blocks total / written / skipped, rows kept / rejected by this call, whether the store is complete.
    """
    from medclip.ingest.manifest import manifest_meta, read_manifest

    t0 = time.perf_counter()
    out = str(out_dir)
    # Only the two columns decoding needs (the whole manifest when an older one has no content hash to key on)
    hashed = bool(manifest_meta(manifest_dir).get("content_hash"))
    df, meta = read_manifest(manifest_dir, columns=["row_id", "image_path"] if hashed else None)
    df = df.sort_values("row_id").reset_index(drop=True)
    plan = _claim(out, _plan(df, meta, preprocess, rows_per_shard), adopt_rows_per_shard=rows_per_shard <= 0)
    step, i, n = plan["rows_per_shard"], *shard
    todo = [k for k in range(plan["num_shards"]) if k % n == i and not _block_done(out, k)]
    blocks = {k: df.iloc[k * step : (k + 1) * step][["row_id", "image_path"]] for k in todo}
    if executor is not None and executor.name != "local":
        kept, rejected = _run_blocks_on(executor, out, blocks, preprocess, show_progress=show_progress)
    else:
        kept, rejected = _run_blocks(out, blocks, preprocess, workers=workers, show_progress=show_progress)
    n_tasks = kept + rejected
    info = _finalise(out, plan)
    seconds = time.perf_counter() - t0
    summary = {
        "out": str(out),
        "shards_total": plan["num_shards"],
        "shards_written": len(todo),
        "shards_skipped": sum(k % n == i for k in range(plan["num_shards"])) - len(todo),
        "rows_kept": kept,
        "rows_rejected": rejected,
        "complete": info["complete"],
        "seconds": round(seconds, 2),
        "images_per_s": round(n_tasks / seconds, 1) if n_tasks else 0.0,
    }
    if executor is not None:
        summary.update(executor.describe())
    if rejected:
        logger.warning(
            "%d of %d rows failed to decode; see %s",
            rejected,
            n_tasks,
            storage.display(storage.join(out, REJECTS_NAME)),
        )
    return summary


def _run_blocks_on(
    executor: Executor, out: str, blocks: dict[int, pd.DataFrame], preprocess: PreprocessCfg, *, show_progress: bool
) -> tuple[int, int]:
    """One executor task per block (:func:`prepare_block`); -> (rows kept, rows rejected)."""
    if not storage.is_url(out):
        out = str(storage.local_path(out).resolve())  # workers may run elsewhere: no relative paths
    shape = (preprocess.channels, preprocess.image_size, preprocess.image_size)
    tasks = [(out, k, block.reset_index(drop=True), asdict(preprocess), shape) for k, block in blocks.items()]
    kept = rejected = 0
    with tqdm(total=sum(len(b) for b in blocks.values()), desc="prepare", unit="img", disable=not show_progress) as bar:
        for k, n_kept, n_rejected in executor.map(prepare_block, tasks):
            kept, rejected = kept + n_kept, rejected + n_rejected
            bar.update(len(blocks[k]))
    return kept, rejected


def _finalise(out: str, plan: dict) -> dict:
    """Once every block is done (by any machine), write index.parquet, rejects.parquet and the counts."""
    info = _read_json(storage.join(out, INFO_NAME))
    if info.get("complete") and storage.isfile(storage.join(out, INDEX_NAME)):
        return info
    done = [k for k in range(plan["num_shards"]) if _block_done(out, k)]
    if len(done) < plan["num_shards"]:
        logger.info(
            "%d of %d blocks done; the index is written when the last one finishes", len(done), plan["num_shards"]
        )
        return info
    parts = [_read_rows(storage.join(out, f"{_block_name(k)}.rows.parquet")).assign(shard=k) for k in done]
    columns = ["row_id", "image_path", "offset", "reason", "detail", "shard"]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    ok = rows["offset"] >= 0
    index = rows.loc[ok, ["row_id", "image_path", "shard", "offset"]].reset_index(drop=True)
    bad = rows.loc[~ok].rename(columns={"image_path": "path"}).assign(kind="image")
    _atomic_write(storage.join(out, INDEX_NAME), lambda p: index.to_parquet(p, index=False))
    rejects = bad[["row_id", "path", "kind", "reason", "detail"]].reset_index(drop=True)
    _atomic_write(storage.join(out, REJECTS_NAME), lambda p: rejects.to_parquet(p, index=False))
    counts = {
        "rows": len(rows),
        "kept": int(ok.sum()),
        "rejected": int((~ok).sum()),
        "reject_reasons": dict(Counter(bad["reason"])),
    }
    info = {**info, "complete": True, "counts": counts}
    _write_json(storage.join(out, INFO_NAME), info)
    return info


# ---------------------------------------------------------------------------------------------- reading


class ShardStore:
    """Read-only access to a prepared shard folder: ``get(row_id)`` -> float32 [C, S, S] in [0, 1].

    Memmaps open lazily and are not pickled, so DataLoader workers each map the files themselves.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        info_path = self.path / INFO_NAME
        if not info_path.is_file():
            raise FileNotFoundError(
                f"no {INFO_NAME} in {self.path}; build shards with `medclip prepare MANIFEST --out {self.path}`"
            )
        self.info = json.loads(info_path.read_text())
        if not self.info.get("complete") or not (self.path / INDEX_NAME).is_file():
            raise InputError(
                f"{self.path}: shards are incomplete; run `medclip prepare` for every --shard I/N part "
                "(or without --shard) to finish them"
            )
        index = pd.read_parquet(self.path / INDEX_NAME)
        locs = zip(index["shard"].tolist(), index["offset"].tolist(), strict=True)
        self._loc = dict(zip(index["row_id"].tolist(), locs, strict=True))
        self._paths = dict(zip(index["row_id"].tolist(), index["image_path"].tolist(), strict=True))
        self._arrays: dict[int, np.ndarray] = {}

    @property
    def recipe(self) -> dict:
        return dict(self.info["recipe"])

    def __len__(self) -> int:
        return len(self._loc)

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._loc

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}  # never pickle mapped pixels

    def _array(self, shard: int) -> np.ndarray:
        if shard not in self._arrays:
            self._arrays[shard] = np.load(self.path / f"{_block_name(shard)}.npy", mmap_mode="r")
        return self._arrays[shard]

    def get_raw(self, row_id: int) -> np.ndarray:
        """The stored uint16 [C, S, S] (a read-only view into the memmap)."""
        try:
            shard, offset = self._loc[row_id]
        except KeyError:
            raise KeyError(
                f"row_id {row_id} is not in {self.path} (rejected at prepare time, see "
                f"{REJECTS_NAME}, or not in the manifest the shards were made from)"
            ) from None
        return self._array(shard)[offset]

    def get(self, row_id: int) -> np.ndarray:
        """float32 [C, S, S] in [0, 1]."""
        return self.get_raw(row_id).astype(np.float32) * np.float32(1.0 / SCALE)

    def check_recipe(self, preprocess: PreprocessCfg) -> None:
        """Raise unless the shards were prepared with this run's deterministic preprocessing."""
        ours, theirs = recipe_of(preprocess), self.recipe
        theirs = {"invert": False, **theirs}  # shards written before the field existed were not inverted
        diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
        if diff:
            said = ", ".join(f"{k}={a} in the shards but preprocess.{k}={b} in this run" for k, (a, b) in diff.items())
            raise InputError(
                f"{self.path}: {said}; re-run `medclip prepare MANIFEST --out NEW_DIR --image-size "
                f"{preprocess.image_size}` (same window/channels) or point data.shards at matching "
                "shards"
            )

    def select(self, pairs: list[dict]) -> list[dict]:
        """The pairs that have a prepared image; a pair whose path differs from the shard's is an error."""
        kept, missing = [], []
        for pair in pairs:
            path = self._paths.get(pair["row_id"])
            if path is None:
                missing.append(pair["row_id"])
            elif path != str(pair["image"]):
                raise InputError(
                    f"{self.path}: row_id {pair['row_id']} is {path} in the shards but {pair['image']} "
                    "in the manifest; the shards were made from another manifest, re-run "
                    "`medclip prepare`"
                )
            else:
                kept.append(pair)
        if missing:
            logger.warning(
                "%d of %d rows have no prepared image (rejected at prepare time, see %s); skipped",
                len(missing),
                len(pairs),
                self.path / REJECTS_NAME,
            )
        return kept


class LoadShardd(MapTransform):
    """Replace ``data[key]`` (a file path) by the prepared [C, S, S] float32 image of ``data[row_key]``."""

    def __init__(self, keys: str | list[str], store: ShardStore, *, row_key: str = "row_id") -> None:
        super().__init__(keys)
        self.store, self.row_key = store, row_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.store.get(d[self.row_key])
        return d
