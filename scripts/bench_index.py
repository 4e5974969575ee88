"""Benchmark the case index on synthetic embeddings with the structure of real ones; prints JSON.

Data (seed 0 by default): 2,000 cluster centres ~ N(0, I) in a 64-d latent space; each point = a random centre +
N(0, 0.5^2 I); mapped to 512-d by a random orthonormal projection, plus N(0, 0.02^2 I), L2-normalised. Queries: random
points + N(0, 0.05^2 I), normalised. Reports build time, bytes per vector, single-query p50 / p99 latency and
recall@10 against exact search. Targets on 2 cores at 1,000,000 vectors: p50 <= 2 ms, recall@10 >= 0.98, build <= 3 min.

    python scripts/bench_index.py                      # 1,000,000 vectors (needs ~6 GB of memory)
    python scripts/bench_index.py --n 20000 --kind ivf # quick check
    python scripts/bench_index.py --compression int8   # 1 byte per dimension
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from medclip.eval.index import COMPRESSIONS, KINDS, IndexParams, build_faiss, choose_kind


def make_data(
    n: int,
    *,
    dim: int = 512,
    latent: int = 64,
    centres: int = 2000,
    queries: int = 200,
    seed: int = 0,
    chunk: int = 100_000,
) -> tuple[np.ndarray, np.ndarray]:
    """-> (points [n, dim], queries [queries, dim]) float32, unit norm; generated in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((centres, latent))
    proj = np.linalg.qr(rng.standard_normal((dim, latent)))[0]  # [dim, latent], orthonormal columns
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = centre[rng.integers(0, centres, m)] + 0.5 * rng.standard_normal((m, latent))
        v = (z @ proj.T).astype(np.float32) + 0.02 * rng.standard_normal((m, dim), dtype=np.float32)
        x[start : start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    q = x[rng.choice(n, queries, replace=False)] + 0.05 * rng.standard_normal((queries, dim), dtype=np.float32)
    return x, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_neighbours(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat.search(q, k)[1]


def latencies_ms(index, q: np.ndarray, k: int, *, warmup: int = 10) -> np.ndarray:
    for i in range(min(warmup, len(q))):
        index.search(q[i : i + 1], k)
    out = []
    for i in range(len(q)):
        t = time.perf_counter()
        index.search(q[i : i + 1], k)
        out.append((time.perf_counter() - t) * 1e3)
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the index (default 1,000,000)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kind", default="auto", choices=KINDS, help="auto: exact below the size threshold, else IVF")
    ap.add_argument("--compression", default="none", choices=COMPRESSIONS)
    ap.add_argument("--nlist", type=int, default=None, help="IVF cells (default ~sqrt(n), a power of two)")
    ap.add_argument("--nprobe", type=int, default=IndexParams.nprobe)
    ap.add_argument("--ef-search", type=int, default=IndexParams.ef_search)
    ap.add_argument("--threads", type=int, default=2, help="FAISS threads (the targets are for 2 cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(args.threads)
    load = round(os.getloadavg()[0], 2)  # other work on the machine skews the timings; report it
    t = time.perf_counter()
    x, q = make_data(args.n, queries=args.queries, seed=args.seed)
    data_s = time.perf_counter() - t
    truth = exact_neighbours(x, q, args.k)
    params = IndexParams(
        kind=args.kind,
        compression=args.compression,
        nlist=args.nlist,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        seed=args.seed,
    )
    t = time.perf_counter()
    index = build_faiss(x, params)
    build_s = time.perf_counter() - t
    lat = latencies_ms(index, q, args.k)
    found = index.search(q, args.k)[1]
    recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, truth, strict=True)]))
    del x
    nbytes = int(faiss.serialize_index(index).nbytes)
    inner = faiss.downcast_index(index)
    result = {
        "n": args.n,
        "dim": q.shape[1],
        "queries": args.queries,
        "k": args.k,
        "kind": choose_kind(args.n, args.kind),
        "compression": args.compression,
        "index": type(inner).__name__,
        "nlist": getattr(inner, "nlist", None),
        "nprobe": getattr(inner, "nprobe", None),
        "threads": args.threads,
        "data_s": round(data_s, 1),
        "build_s": round(build_s, 2),
        "bytes_per_vector": round(nbytes / args.n, 1),
        "index_mb": round(nbytes / 2**20, 1),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
        f"recall@{args.k}": round(recall, 4),
        "targets_met": {
            "p50_le_2ms": bool(np.percentile(lat, 50) <= 2.0),
            "recall_ge_0.98": recall >= 0.98,
            "build_le_180s": build_s <= 180,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "faiss": faiss.__version__,
            "load_avg_1m_at_start": load,
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
