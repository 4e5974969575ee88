"""Scale-out benchmarks (docs/scale.md): prints one JSON object.

Sections (``--only a,b``; default all):

* ``ingest``: studies/s of ``manifest`` and ``prepare`` on the synthetic archive, serial vs 2 local processes vs a
  Dask LocalCluster of 2 workers, each run in a fresh interpreter with its driver's peak RSS; whether the three
  outputs are identical; and the Dask driver's peak RSS at smaller archives (its slope per study).

* ``ranged-vs-fetch``: reading one prepared image per ranged GET vs fetching a whole shard file, against a local
  S3 server (moto's server mode, started here; tests/s3_server.py).
* ``train-read``: training pairs/s through the DataLoader (read + normalise + collate, one epoch) from local disk
  (today's index path, and the streaming reader on the local folder) vs streaming from the S3 server with a cold
  and a warm cache.
* ``train-steps``: a few real training steps of the tiny preset (at the shards' image size) with each source.

The data is the synthetic chest X-ray archive (``--studies``, 2,000 by default), its manifest and its shards, made
once under ``--work`` and reused by later runs. The S3 server runs on this machine: its CPU time competes with the
data loader's (a real object store's does not), and its bandwidth is that of a Python server.

    python scripts/bench_scale.py --only ranged-vs-fetch,train-read --workers 0,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- data and server


def prepare_data(args: argparse.Namespace) -> dict:
    """Synthetic archive -> manifest -> shards under ``args.work`` (each step skipped when its output exists)."""
    from medclip.config import PreprocessCfg
    from medclip.data.shards import prepare_shards
    from medclip.ingest.manifest import build_manifest, read_manifest, write_manifest
    from medclip.synth.cxr.archive import synth_cxr

    work = Path(args.work)
    archive, manifest = work / f"archive-{args.studies}", work / f"manifest-{args.studies}"
    shards = work / f"shards-{args.studies}-{args.image_size}px-{args.rows_per_shard}"
    seconds = {}
    if not (archive / "README.txt").is_file():
        t0 = time.perf_counter()
        synth_cxr(archive, studies=args.studies, seed=0)
        seconds["synth"] = round(time.perf_counter() - t0, 1)
    if not (manifest / "manifest.parquet").exists():  # a file, or a folder of parts
        t0 = time.perf_counter()
        write_manifest(build_manifest(archive, salt="bench-scale", show_progress=False), manifest)
        seconds["manifest"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    summary = prepare_shards(
        manifest,
        shards,
        preprocess=PreprocessCfg(image_size=args.image_size),
        workers=args.prepare_workers,
        rows_per_shard=args.rows_per_shard,
        show_progress=False,
    )
    if summary["shards_written"]:
        seconds["prepare"] = round(time.perf_counter() - t0, 1)
    df, _ = read_manifest(manifest)
    files = sorted(shards.glob("shard-*.npy"))
    return {
        "archive": archive,
        "manifest": manifest,
        "shards": shards,
        "info": {
            "studies": args.studies,
            "images": len(df),
            "train_pairs": int((df["split"] == "train").sum()),
            "image_size": args.image_size,
            "shards": len(files),
            "shard_mb": round(files[0].stat().st_size / 2**20, 1),
            "image_kb": round(files[0].stat().st_size / max(1, args.rows_per_shard) / 2**10, 1),
            "seconds": seconds,
        },
    }


def start_s3(stack: ExitStack) -> str:
    """moto's S3 server on a free port; this process's environment points at it (credentials included, as a
    user's environment does). Returns a new bucket's URL."""
    sys.path.insert(0, str(ROOT))
    from tests.s3_server import s3_server

    server = stack.enter_context(s3_server())
    os.environ.update(server.env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem().mkdir(bucket)
    return f"s3://{bucket}"


def upload_shards(ctx: dict) -> str:
    """The shards in the bucket (uploaded once per run); returns their URL."""
    from medclip.io import storage

    if "shards_url" not in ctx:
        url = storage.join(ctx["bucket"], "shards")
        t0 = time.perf_counter()
        storage.upload(ctx["shards"], url)
        ctx["upload_s"] = round(time.perf_counter() - t0, 2)
        ctx["shards_url"] = url
    return ctx["shards_url"]


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


# ---------------------------------------------------------------------------------------------- sections


def bench_ranged_vs_fetch(args: argparse.Namespace, ctx: dict) -> dict:
    """Per-image ranged GETs vs one whole-file GET of a shard, from the S3 server."""
    import numpy as np

    from medclip.io import storage

    url = upload_shards(ctx)
    first = sorted(ctx["shards"].glob("shard-*.npy"))[0]
    array = np.load(first, mmap_mode="r")
    header, row_bytes = first.stat().st_size - array.nbytes, array[0].nbytes
    fs, path = storage.filesystem(storage.join(url, first.name))
    n = min(args.ranged_reads, array.shape[0])
    for size, key in ((8 << 10, "ranged_8kib"), (row_bytes, "ranged_image")):
        fs.cat_file(path, start=header, end=header + size)  # connection warm-up
        t0 = time.perf_counter()
        for i in range(n):
            start = header + i * row_bytes
            fs.cat_file(path, start=start, end=start + size)
        ctx[key] = (time.perf_counter() - t0) / n
    # the best case for ranged reads: a whole batch of random rows as concurrent requests (s3fs cat_ranges)
    rng = np.random.default_rng(0)
    t0, batches = time.perf_counter(), max(1, args.ranged_reads // args.batch_size)
    for _ in range(batches):
        rows = rng.choice(array.shape[0], size=min(args.batch_size, array.shape[0]), replace=False)
        starts = [header + int(r) * row_bytes for r in rows]
        fs.cat_ranges([path] * len(starts), starts, [x + row_bytes for x in starts])
    ctx["ranged_batch"] = (time.perf_counter() - t0) / (batches * min(args.batch_size, array.shape[0]))
    fetches = []
    for _ in range(args.repeats):
        dest = Path(args.work) / f".fetch-{uuid.uuid4().hex[:6]}.npy"
        t0 = time.perf_counter()
        fs.get_file(path, str(dest))
        fetches.append(time.perf_counter() - t0)
        dest.unlink()
    whole = statistics.median(fetches)
    mb = first.stat().st_size / 2**20
    tar_s = _tar_stream_seconds(array, storage.join(url, "tar", first.with_suffix(".tar").name), args.repeats)
    return {
        "ranged_8kib_ms": round(ctx["ranged_8kib"] * 1e3, 2),
        "ranged_image_ms": round(ctx["ranged_image"] * 1e3, 2),
        "ranged_images_per_s": round(1 / ctx["ranged_image"], 1),
        "ranged_batch_concurrent_images_per_s": round(1 / ctx["ranged_batch"], 1),
        "whole_shard_mb": round(mb, 1),
        "whole_fetch_s": round(whole, 3),
        "whole_fetch_mb_per_s": round(mb / whole, 1),
        "whole_fetch_images_per_s": round(array.shape[0] / whole, 1),
        "tar_stream_images_per_s": round(array.shape[0] / tar_s, 1),
        "image_kb": round(row_bytes / 2**10, 1),
    }


def _tar_stream_seconds(array, url: str, repeats: int) -> float:
    """The WebDataset way, without the package: the shard's images as ``.npy`` members of a tar, read as one
    sequential stream (tarfile over an fsspec file) and decoded member by member; median seconds per shard."""
    import io
    import tarfile

    import numpy as np

    from medclip.io import storage

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, image in enumerate(array):
            member = io.BytesIO()
            np.save(member, np.asarray(image))
            info = tarfile.TarInfo(f"{i:06d}.image.npy")
            info.size = member.tell()
            member.seek(0)
            tar.addfile(info, member)
    storage.write_bytes(url, buf.getvalue())
    fs, path = storage.filesystem(url)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with fs.open(path, "rb", block_size=8 << 20) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            for member in tar:
                np.load(io.BytesIO(tar.extractfile(member).read()))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _train_pairs(manifest: Path) -> tuple[list[dict], list[str]]:
    from medclip.data.datasets import pairs_from_manifest
    from medclip.ingest.manifest import read_manifest

    df, _ = read_manifest(manifest)
    return pairs_from_manifest(df[df["split"] == "train"], text_policy="findings_impression")


def _epoch_pairs_per_s(loader, *, set_epoch=None) -> float:
    """Pairs per second over one epoch of ``loader``, iterator start-up included."""
    if set_epoch is not None:
        set_epoch(0)
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["row_id"])
    return n / (time.perf_counter() - t0)


def bench_train_read(args: argparse.Namespace, ctx: dict) -> dict:
    """Pairs/s through the DataLoader, one epoch each: today's index path on local disk, and the streaming reader
    on the local folder and on the S3 server (cold: an empty cache; warm: a second run on the same cache), for each
    DataLoader worker count in ``--workers``."""
    import torch
    from torch.utils.data import DataLoader

    from medclip.config import PreprocessCfg
    from medclip.data.datasets import PairCollator, PairDataset
    from medclip.data.shards import ShardStore
    from medclip.data.streaming import StreamCollate, StreamingPairs
    from medclip.train.sampler import ShardedBatchSampler

    url = upload_shards(ctx)
    pairs, texts = _train_pairs(ctx["manifest"])
    preprocess, bs = PreprocessCfg(image_size=args.image_size), args.batch_size
    collator = PairCollator(None, texts, max_length=64, tokenize_text=False)  # a locked text tower: no tokenising

    def index_epoch() -> float:
        data = PairDataset(pairs, texts, preprocess, train=True, shards=ShardStore(ctx["shards"]))
        sampler = ShardedBatchSampler(len(data), batch_size=bs, generator=torch.Generator().manual_seed(0))
        return _epoch_pairs_per_s(DataLoader(data, batch_sampler=sampler, collate_fn=collator))  # the trainer's

    def stream_epoch(shards: str, workers: int, cache: Path | str = "", buffer: int = args.shuffle_buffer) -> float:
        data = StreamingPairs(
            pairs, texts, preprocess, shards=shards, train=True, batch_size=bs, workers=workers,
            shuffle_buffer=buffer, cache_dir=cache,
        )  # fmt: skip
        loader = DataLoader(data, batch_size=None, num_workers=workers, collate_fn=StreamCollate(collator, seed=0))
        return _epoch_pairs_per_s(loader, set_epoch=data.set_epoch)

    worker_counts = [int(w) for w in str(args.workers).split(",")]
    runs: dict[str, list[float]] = {"local_index": []}
    stream_epoch(str(ctx["shards"]), 0)  # page cache warm-up for the local runs
    for _ in range(args.repeats):
        runs["local_index"].append(index_epoch())
        for w in worker_counts:
            runs.setdefault(f"local_stream_w{w}", []).append(stream_epoch(str(ctx["shards"]), w))
            cache = Path(args.work) / "cache" / uuid.uuid4().hex[:8]
            runs.setdefault(f"s3_cold_w{w}", []).append(stream_epoch(url, w, cache))
            runs.setdefault(f"s3_warm_w{w}", []).append(stream_epoch(url, w, cache))  # the same node, shards cached
            # data.shuffle_buffer's default holds more rows than a worker has here: its first batch waits for all
            fresh = Path(args.work) / "cache" / uuid.uuid4().hex[:8]
            runs.setdefault(f"s3_cold_buffer_4096_w{w}", []).append(stream_epoch(url, w, fresh, 4096))
    out: dict = {"batch_size": bs, "shuffle_buffer": args.shuffle_buffer, "repeats": args.repeats}
    out["pairs_per_s"] = {k: _median(v) for k, v in runs.items()}
    best_local = max(statistics.median(v) for k, v in runs.items() if k.startswith("local"))
    ratios = {}
    for w in worker_counts:
        local = statistics.median(runs[f"local_stream_w{w}"])
        for kind in ("cold", "warm"):
            got = statistics.median(runs[f"s3_{kind}_w{w}"])
            ratios[f"s3_{kind}_w{w}_vs_local_stream_w{w}"] = round(got / local, 2)
            ratios[f"s3_{kind}_w{w}_vs_best_local"] = round(got / best_local, 2)
    out["ratios"] = ratios
    out["upload_s"] = ctx.get("upload_s")
    return out


def bench_train_steps(args: argparse.Namespace, ctx: dict) -> dict:
    """Pairs/s of real training steps (the tiny preset at the shards' image size): the median interval between
    step ends, so data waits count; one discarded warm-up run first."""
    import torch

    from medclip.config import load_config
    from medclip.train import trainer

    url = upload_shards(ctx)
    stamps: list[float] = []
    real_step = trainer.train_step

    def timed(*a, **kw):
        record = real_step(*a, **kw)
        stamps.append(time.perf_counter())
        return record

    trainer.train_step = timed  # the loop looks the step function up in the module at each call
    common = [
        f"data.manifest={ctx['manifest']}",
        f"preprocess.image_size={args.image_size}",
        f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch_size}",
        "train.checkpoint_every=100000",
        "train.tensorboard=false",
        f"train.threads={args.threads}",
        f"data.shuffle_buffer={args.shuffle_buffer}",
        f"data.num_workers={args.step_workers}",
    ]
    cache = Path(args.work) / "cache" / f"steps-{uuid.uuid4().hex[:8]}"
    sources = {
        "warm_up": [f"data.shards={ctx['shards']}", "data.streaming=off"],
        "local_index": [f"data.shards={ctx['shards']}", "data.streaming=off"],
        "local_stream": [f"data.shards={ctx['shards']}", "data.streaming=on"],
        "s3_cold": [f"data.shards={url}", f"data.cache_dir={cache}"],
        "s3_warm": [f"data.shards={url}", f"data.cache_dir={cache}"],
    }
    out: dict = {"steps": args.steps, "batch_size": args.batch_size, "preset": "tiny", "workers": args.step_workers}
    threads = torch.get_num_threads()
    try:
        for name, extra in sources.items():
            stamps.clear()
            out_dir = Path(args.work) / "runs" / f"{name}-{uuid.uuid4().hex[:6]}"
            trainer.train(load_config("tiny", [*common, *extra, f"train.out_dir={out_dir}"]), show_progress=False)
            if name != "warm_up":
                step_s = statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))
                out[f"{name}_pairs_per_s"] = round(args.batch_size / step_s, 1)
    finally:
        trainer.train_step = real_step
        torch.set_num_threads(threads)
    for name in ("s3_cold", "s3_warm"):
        out[f"{name}_vs_local_index"] = round(out[f"{name}_pairs_per_s"] / out["local_index_pairs_per_s"], 2)
    return out


# Each configuration runs in a fresh interpreter; the driver's RSS is sampled every 20 ms from after its imports (and
# the cluster's start), so the growth is what the work adds on the driver. Worker processes are children or cluster
# processes and are not counted: what grows on the driver is what this measures.
_RUN = textwrap.dedent(
    """
    import json, sys, threading, time
    import psutil
    import medclip.data.shards, medclip.ingest.manifest  # imports first: their pages are the same for every run
    from medclip.executors import make_executor
    kind, source, out, executor, workers = sys.argv[1:6]
    me, peak, done = psutil.Process(), [0], threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.02)
    def warm(_):  # a worker's first task pays its imports (torch, MONAI): counted apart, as cluster start-up
        import medclip.data.shards, medclip.ingest.layouts.dicom
        return 0
    t0 = time.perf_counter()
    with make_executor(executor, workers=int(workers)) as ex:
        list(ex.map(warm, range(2 * int(workers)))) if executor == "dask" else None
        base = me.memory_info().rss
        threading.Thread(target=sample, daemon=True).start()
        started = time.perf_counter()
        if kind == "manifest":
            from medclip.ingest.manifest import build_manifest, write_manifest
            result = build_manifest(source, salt="bench-salt-0123456789", show_progress=False, executor=ex)
            write_manifest(result, out)
            n = result.meta["counts"]["studies"]; images = result.meta["counts"]["kept"]
            del result
        else:
            from medclip.config import PreprocessCfg
            from medclip.data.shards import prepare_shards
            s = prepare_shards(source, out, preprocess=PreprocessCfg(image_size=224), workers=int(workers),
                               rows_per_shard=256, show_progress=False, executor=ex)
            images = s["rows_kept"] + s["rows_rejected"]
            from medclip.ingest.manifest import manifest_meta
            n = manifest_meta(source)["counts"]["studies"]
        seconds = time.perf_counter() - started
        done.set()
    print(json.dumps({"studies": n, "images": images, "seconds": round(seconds, 2),
                      "startup_s": round(started - t0, 2), "studies_per_s": round(n / seconds, 1),
                      "images_per_s": round(images / seconds, 1), "driver_rss_before_mb": round(base / 2**20, 1),
                      "driver_peak_rss_mb": round(peak[0] / 2**20, 1),
                      "driver_growth_mb": round((peak[0] - base) / 2**20, 1)}))
    """
)

CONFIGS = {  # name -> (executor, workers)
    "serial": ("local", 1),
    "local_processes": ("local", 2),
    "dask_localcluster": ("dask", 2),
}


def _run(kind: str, source: Path, out: Path, executor: str, workers: int) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # prepare skips finished shards: every run starts from nothing
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, kind, str(source), str(out), executor, str(workers)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {executor}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_ingest(args: argparse.Namespace, ctx: dict) -> dict:
    """studies/s and the driver's peak RSS of manifest and prepare (224 px, 256-row shards): serial, 2 local
    processes, a Dask LocalCluster of 2 workers; the outputs compared; the Dask driver's peak at smaller archives."""
    from medclip.synth.cxr.archive import synth_cxr

    work, studies = Path(args.work) / "ingest", args.studies
    work.mkdir(parents=True, exist_ok=True)
    archive = ctx["archive"]
    flat_points = tuple(int(n) for n in args.flat_points.split(",") if n.strip())
    results: dict = {"studies": studies, "manifest": {}, "prepare": {}}
    for name, (executor, workers) in CONFIGS.items():
        results["manifest"][name] = _run("manifest", archive, work / f"m-{name}", executor, workers)
    same = [_digest(work / f"m-{name}") for name in CONFIGS]
    results["manifest"]["identical_outputs"] = len(set(same)) == 1
    for name, (executor, workers) in CONFIGS.items():
        results["prepare"][name] = _run("prepare", work / "m-serial", work / f"s-{name}", executor, workers)
    shard_sets = [_npy_digest(work / f"s-{name}") for name in CONFIGS]
    results["prepare"]["identical_shard_bytes"] = len(set(shard_sets)) == 1
    # Driver memory against archive size on Dask: the slope is what a 10x larger archive adds on the driver.
    flat = {}
    for n in flat_points:
        sub = Path(args.work) / f"archive-{n}"
        if not (sub / "README.txt").is_file():
            synth_cxr(sub, studies=n, seed=0)
        flat[n] = _run("manifest", sub, work / f"m-flat-{n}", "dask", 2)["driver_growth_mb"]
    flat[studies] = results["manifest"]["dask_localcluster"]["driver_growth_mb"]
    points = sorted(flat)
    slope = (flat[points[-1]] - flat[points[0]]) / max(1, points[-1] - points[0])
    # what the manifest adds on the driver (RSS sampled every 20 ms, above the RSS after imports and cluster start)
    results["dask_driver_growth_mb_by_studies"] = {str(k): flat[k] for k in points}
    results["dask_driver_growth_kb_per_study"] = round(slope * 1024, 2)
    return results


def _digest(folder: Path) -> str:
    import hashlib

    import pandas as pd

    df = pd.read_parquet(folder / "manifest.parquet")
    rejects = pd.read_parquet(folder / "rejects.parquet")
    payload = df.to_csv(index=False) + rejects.to_csv(index=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _npy_digest(folder: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.glob("shard-*.npy")):
        h.update(p.read_bytes())
    return h.hexdigest()


SECTIONS = {
    "ingest": bench_ingest,
    "ranged-vs-fetch": bench_ranged_vs_fetch,
    "train-read": bench_train_read,
    "train-steps": bench_train_steps,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--work", default="/tmp/medclip-bench-scale", help="archive, manifest, shards and caches")
    p.add_argument("--studies", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--rows-per-shard", type=int, default=256, help="~25 MiB shards at 224 px")
    p.add_argument("--prepare-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", default="0,2", help="train-read: DataLoader worker counts of the streaming reader")
    p.add_argument("--step-workers", type=int, default=0, help="train-steps: data.num_workers")
    p.add_argument("--repeats", type=int, default=3, help="medians over this many runs")
    p.add_argument(
        "--shuffle-buffer",
        type=int,
        default=384,
        help="streaming buffer: 1.5 shards of 256 rows, as data.shuffle_buffer=4096 is of full 256 MiB shards",
    )
    p.add_argument("--ranged-reads", type=int, default=256, help="ranged-vs-fetch: reads per measurement")
    p.add_argument("--steps", type=int, default=10, help="train-steps: steps per source")
    p.add_argument("--flat-points", default="500,1000", help="ingest: smaller archives for the driver-memory slope")
    p.add_argument("--threads", type=int, default=0, help="train-steps: torch threads (0: torch's default)")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")

    import logging

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict = {"cpus": len(os.sched_getaffinity(0))}
    with ExitStack() as stack:
        ctx = prepare_data(args)
        result["data"] = ctx["info"]
        ctx["bucket"] = start_s3(stack)
        for name in only:
            t0 = time.perf_counter()
            result[name] = SECTIONS[name](args, ctx)
            result[name]["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
