"""Benchmark ``medclip serve`` end to end: GET /api/search over HTTP on a synthetic case index; prints JSON.

What it does, in one run:

1. A checkpoint: ``--checkpoint CKPT``, else a throwaway one: a 40-study synthetic chest X-ray archive, its manifest
   and a few training steps of the ``demo_cxr`` preset (text tower: the packaged all-MiniLM-L6-v2, the offline
   default). Latency depends only on the text tower (its size, not its training) and on the index, so an almost
   untrained model times like a trained one; its rankings mean nothing.
2. A case index of ``--cases`` synthetic cases (one image each): clustered unit vectors of the checkpoint's
   embedding size (``scripts/bench_index.py``'s data), with study ids, snippets, split, modality and label columns.
   The image paths are fake: /api/search never reads them. Kind "auto": exact below 50,000 vectors, else IVF.
3. ``medclip serve`` as a subprocess, pinned to ``--cores`` CPUs (the goal is for 2): after /api/health and a
   warm-up, sequential single-client GET /api/search?q=...&k=10 over ``--queries`` distinct radiology queries (size x
   side x location x finding, so the server's text-embedding cache does not answer them), the same query repeated
   (cached), then ``--clients`` concurrent keep-alive clients for ``--duration`` seconds: requests/s and latency
   under load.
4. The in-process floor, interleaved query by query with the sequential HTTP requests (so both see the same machine
   load): ``CaseService.search(q, k=10)`` (text encoding + FAISS + result rows) without HTTP; the difference is
   what the web layer costs.
5. What a user would otherwise do: ``medclip index query IDX "text" -k 10`` per query (loads the index and the
   model each time), for ``--cli-queries`` queries.

Goal (issue): p50 <= 50 ms per distinct query over HTTP on 2 cores at 100,000 cases, text encoding included.

    python scripts/bench_serve.py                              # 100,000 cases, throwaway demo_cxr checkpoint
    python scripts/bench_serve.py --cases 2000 --queries 20 --clients 2 --duration 2   # quick check
    python scripts/bench_serve.py --checkpoint runs/demo/train/final --out serve.json
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import itertools
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOAL_P50_MS = 50.0
K = 10

SIZES = ("small", "moderate", "large", "tiny", "trace", "subtle")
SIDES = ("left", "right", "bilateral")
LOCATIONS = ("apical", "basilar", "upper lobe", "lower lobe", "mid lung", "perihilar", "lateral", "retrocardiac")
FINDINGS = ("pneumothorax", "pleural effusion", "consolidation", "atelectasis", "opacity", "nodule", "infiltrate")
MODIFIERS = ("", "new ", "persistent ", "increasing ", "decreasing ")
LABELS = ("pneumothorax", "pleural_effusion", "consolidation", "atelectasis", "cardiomegaly", "edema")
IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "Findings as above; clinical correlation recommended.",
    "Interval change since the prior study.",
    "Stable appearance of the chest.",
)


def radiology_queries(seed: int = 0) -> list[str]:
    """Every distinct "[modifier ]size side location finding" description (5,040), in a seeded random order."""
    out = [
        f"{m}{s} {side} {loc} {f}"
        for m, s, side, loc, f in itertools.product(MODIFIERS, SIZES, SIDES, LOCATIONS, FINDINGS)
    ]
    random.Random(seed).shuffle(out)
    return out


def _load_bench_index():
    path = Path(__file__).resolve().parent / "bench_index.py"
    spec = importlib.util.spec_from_file_location("bench_index", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- setup -----------------------------------------------------------------------------------------------------------
def make_checkpoint(work: Path, *, steps: int = 2, seed: int = 0) -> Path:
    """A throwaway ``demo_cxr`` checkpoint: 40 synthetic studies, ``steps`` training steps."""
    from medclip.config import load_config
    from medclip.ingest.manifest import build_manifest, write_manifest
    from medclip.synth.cxr.archive import synth_cxr
    from medclip.train.trainer import train

    archive, manifest = work / "archive", work / "manifest"
    synth_cxr(archive, studies=40, seed=seed)
    write_manifest(build_manifest(archive, salt="bench-serve", show_progress=False), manifest)
    overrides = [
        f"data.manifest={manifest}",
        f"train.out_dir={work / 'run'}",
        "train.epochs=1",
        f"train.max_steps={steps}",
        "train.batch_size=8",
    ]
    return train(load_config("demo_cxr", overrides), show_progress=False)


def case_entries(n: int, seed: int = 0):
    """``n`` synthetic index entries: study id, a fake image path, snippet, split, modality, impression, labels."""
    import pandas as pd

    from medclip.eval.index import LABEL_PREFIX

    rng = np.random.default_rng(seed)
    phrases = radiology_queries(seed)
    pick = rng.integers(0, len(phrases), n)
    impression = rng.integers(0, len(IMPRESSIONS), n)
    snippets = [
        f"Findings: {phrases[p].capitalize()}. Impression: {IMPRESSIONS[i]}"
        for p, i in zip(pick, impression, strict=True)
    ]
    entries = pd.DataFrame(
        {
            "study_id": [f"bench-{i:08d}" for i in range(n)],
            "image_path": [f"/nonexistent/bench-serve/{i:08d}.dcm" for i in range(n)],
            "snippet": snippets,
            "split": "test",
            "modality": np.where(rng.random(n) < 0.6, "CR", "DX"),
            "impression": [IMPRESSIONS[i] for i in impression],
        }
    )
    for name in LABELS:  # 1 positive (~10 %), 0 negative, -1 uncertain, -2 not mentioned
        entries[LABEL_PREFIX + name] = rng.choice(np.array([1, 0, -1, -2], dtype=np.int8), n, p=[0.1, 0.3, 0.05, 0.55])
    return entries


def make_index(checkpoint: Path, out_dir: Path, *, cases: int, dim: int, seed: int = 0) -> dict:
    """Build and save the synthetic case index for ``checkpoint`` -> its info."""
    from medclip.eval import index as index_module
    from medclip.eval.embeddings import checkpoint_fingerprint
    from medclip.eval.index import CaseIndex, IndexParams, _weights_stat

    vectors, _ = _load_bench_index().make_data(cases, dim=dim, latent=min(64, dim), queries=1, seed=seed)
    ckpt = checkpoint.resolve()
    info = {
        "checkpoint": str(ckpt),
        "checkpoint_fingerprint": checkpoint_fingerprint(ckpt),
        "weights_stat": _weights_stat(ckpt),
        "source": "synthetic (scripts/bench_serve.py)",
        "split": "test",
    }
    index = CaseIndex.build(vectors, case_entries(cases, seed), params=IndexParams(seed=seed), info=info)
    index.save(out_dir)
    inner = _faiss_inner(index.index)
    compression = index.info.get("compression")
    resolve = getattr(index_module, "choose_compression", None)  # "auto" -> what the build picked at this size
    if compression == "auto" and resolve is not None:
        compression = resolve(cases, compression)
    return {
        **index.info,
        "compression": compression,
        "faiss_index": type(inner).__name__,
        "nprobe": getattr(inner, "nprobe", None),
    }


def _faiss_inner(index):
    import faiss

    return faiss.downcast_index(index)


# -- HTTP ------------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pin(cores: list[int] | None):
    if not cores or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, cores)


def _medclip_cmd() -> list[str]:
    """``medclip`` run by this interpreter (no launcher shim in the timings), importing this checkout's package."""
    return [sys.executable, "-m", "medclip.cli"]


def _child_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("MEDCLIP_TOKEN", None)  # the benchmark's server needs none (loopback)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class Client:
    """One keep-alive HTTP/1.1 connection (stdlib: the client adds as little as possible to the timings)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> tuple[int, bytes, float]:
        t = time.perf_counter()
        try:
            self.conn.request("GET", path)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return 0, b"", (time.perf_counter() - t) * 1e3
        return response.status, body, (time.perf_counter() - t) * 1e3

    def close(self) -> None:
        self.conn.close()


def search_path(query: str, k: int = K) -> str:
    return f"/api/search?{urllib.parse.urlencode({'q': query, 'k': k})}"


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"medclip serve exited with {proc.returncode}:\n{_tail(log)}")
        try:
            client = Client(port)
            status, _, _ = client.get("/api/health")
            client.close()
            if status == 200:
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"medclip serve did not answer /api/health within {timeout:.0f}s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def pct(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def summary(ms: list[float]) -> dict:
    mean = round(float(np.mean(ms)), 2) if ms else None
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "p99_ms": pct(ms, 99), "mean_ms": mean}


def _search_ok(status: int, body: bytes) -> tuple[bool, float]:
    """Whether an /api/search answer is a success with K results, and its server-side FAISS ``search_ms``."""
    if status != 200:
        return False, 0.0
    answer = json.loads(body)
    return len(answer.get("results", [])) == K, float(answer.get("search_ms", 0.0))


def sequential(port: int, queries: list[str]) -> tuple[list[float], int]:
    """One client, one request after the other -> (round-trip ms per successful request, failed requests)."""
    client, total, errors = Client(port), [], 0
    for q in queries:
        status, body, ms = client.get(search_path(q))
        ok, _ = _search_ok(status, body)
        if ok:
            total.append(ms)
        else:
            errors += 1
    client.close()
    return total, errors


def interleaved(port: int, service: LocalService, queries: list[str]) -> dict:
    """Each query over HTTP and in process (``CaseService.search``, the same call without the web), alternating
    which goes first, so both see the same machine load; the server's and the service's text caches are apart."""
    client = Client(port)
    http_ms, faiss_ms, local_ms, local_faiss, errors = [], [], [], [], 0
    for i, q in enumerate(queries):
        for step in (0, 1) if i % 2 else (1, 0):
            if step == 0:
                status, body, ms = client.get(search_path(q))
                ok, search_ms = _search_ok(status, body)
                if ok:
                    http_ms.append(ms)
                    faiss_ms.append(search_ms)
                else:
                    errors += 1
            else:
                ms, answer = service.timed(q)
                local_ms.append(ms)
                local_faiss.append(answer["search_ms"])
    client.close()
    return {"http": http_ms, "http_faiss": faiss_ms, "local": local_ms, "local_faiss": local_faiss, "errors": errors}


def load_test(port: int, queries: list[str], *, clients: int, duration: float) -> dict:
    """``clients`` threads, each a keep-alive connection, sending distinct queries back to back for ``duration`` s."""
    counter, lock = itertools.count(), threading.Lock()
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(slot: int) -> None:
        client = Client(port)
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            with lock:
                i = next(counter)
            status, body, ms = client.get(search_path(queries[i % len(queries)]))
            if status == 200 and body.startswith(b"{"):
                lat[slot].append(ms)
            else:
                errors[slot] += 1
        client.close()

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + duration
    start = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = [x for slot in lat for x in slot]
    sent = len(ms) + sum(errors)
    return {
        "clients": clients,
        "duration_s": round(elapsed, 2),
        "requests": sent,
        "ok": len(ms),
        "errors": sum(errors),
        "rps": round(len(ms) / elapsed, 1),
        "p50_ms": pct(ms, 50),
        "p95_ms": pct(ms, 95),
        "p99_ms": pct(ms, 99),
        "distinct_queries": sent <= len(queries),  # False: the pool ran out and later requests hit the cache
    }


# -- the side-by-side baselines ------------------------------------------------------------------------------------
class LocalService:
    """The in-process floor: ``CaseService`` built and warmed up on the main thread as ``medclip serve`` does, its
    searches run on a worker thread as the server's thread pool runs them. (On a loaded 2-core machine, searches on
    the thread that first ran the model timed 5-30x slower and erratic; the server's split of threads does not.)"""

    def __init__(self, checkpoint: Path, index_dir: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bench-inprocess")
        t = time.perf_counter()
        self.service = self._load(checkpoint, index_dir)
        self.load_s = time.perf_counter() - t
        for i in range(10):
            self.timed(f"warm up query {i}")

    @staticmethod
    def _load(checkpoint: Path, index_dir: Path):
        from medclip.serve.engine import CaseService

        service = CaseService(checkpoint, index_dir)
        service.warm_up()
        return service

    def _timed(self, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        return (time.perf_counter() - t) * 1e3, out

    def timed(self, query: str) -> tuple[float, dict]:
        """-> (ms of ``CaseService.search(query, k=K)``, measured on the worker thread, its answer)."""
        return self.pool.submit(self._timed, self.service.search, query, k=K).result()

    def encode_ms(self, text: str) -> float:
        return self.pool.submit(self._timed, self.service.embedder.encode_text, [text]).result()[0]

    def close(self) -> None:
        self.pool.shutdown()
        self.service = None


def inprocess_extra(local: LocalService, queries: list[str], repeats: int) -> dict:
    """The in-process cached latency (a repeated query) and text encoding alone (the call the server serialises)."""
    cached = [local.timed(queries[0])[0] for _ in range(repeats)]
    encode = [local.encode_ms(f"{q} (encode {i})") for i, q in enumerate(queries[:100])]
    return {"cached": summary(cached), "encode_text_p50_ms": pct(encode, 50), "encode_text_p95_ms": pct(encode, 95)}


def cli_per_query(index_dir: Path, queries: list[str], cores: list[int] | None, work: Path) -> dict:
    """``medclip index query IDX TEXT -k 10``, one process per query (model and index loaded each time)."""
    seconds, failures = [], 0
    for i, q in enumerate(queries):
        cmd = [
            *_medclip_cmd(),
            "-q",
            "index",
            "query",
            str(index_dir),
            q,
            "-k",
            str(K),
            "--json",
            str(work / f"cli{i}.json"),
        ]
        t = time.perf_counter()
        done = subprocess.run(
            cmd, capture_output=True, text=True, preexec_fn=_pin(cores), env=_child_env(), check=False
        )
        seconds.append(time.perf_counter() - t)
        failures += done.returncode != 0
        if done.returncode != 0:
            print(f"bench_serve: {' '.join(cmd[-6:])} failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
    return {
        "queries": len(queries),
        "failures": failures,
        "per_query_s_median": round(float(np.median(seconds)), 2) if seconds else None,
        "per_query_s": [round(s, 2) for s in seconds],
    }


# -- main ------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a medclip final/ directory (default: train a throwaway demo_cxr one)")
    ap.add_argument("--cases", type=int, default=100_000, help="cases in the index (default 100,000)")
    ap.add_argument("--queries", type=int, default=300, help="distinct queries, sequential (default 300)")
    ap.add_argument("--cached-repeats", type=int, default=100, help="requests of one already-answered query")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients for the throughput test (default 8)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of the throughput test (default 15)")
    ap.add_argument("--cli-queries", type=int, default=5, help="`medclip index query` runs (0: skip)")
    ap.add_argument("--cores", type=int, default=2, help="CPUs the server is pinned to (default 2, the goal's)")
    ap.add_argument("--train-steps", type=int, default=2, help="steps of the throwaway checkpoint")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="keep the checkpoint / index / server log here (default: a temporary folder)")
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)

    import torch

    from medclip.models.medclip import read_checkpoint_meta

    load_start = round(os.getloadavg()[0], 2)  # other work on the machine skews the timings; report it
    available = (
        sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    )
    server_cores = available[: args.cores]
    client_cores = available[args.cores :] or server_cores  # a 2-core machine: clients share the server's cores
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, server_cores)
    torch.set_num_threads(len(server_cores))

    pool = radiology_queries(args.seed)
    warm, rest = pool[:20], pool[20:]
    if args.queries > len(rest):
        raise SystemExit(f"--queries is at most {len(rest)} (distinct descriptions available)")
    measured, load_pool = rest[: args.queries], rest[args.queries :] or rest

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="medclip-bench-serve-")
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    proc = None
    try:
        timings = {}
        t = time.perf_counter()
        if args.checkpoint:
            ckpt, trained = Path(args.checkpoint).resolve(), None
        else:
            ckpt, trained = (
                make_checkpoint(work / "ckpt", steps=args.train_steps, seed=args.seed).resolve(),
                args.train_steps,
            )
        timings["checkpoint_s"] = round(time.perf_counter() - t, 1)
        meta = read_checkpoint_meta(ckpt)
        dim = int(meta["model"]["embed_dim"])
        text_cfg = meta.get("text_config", {})

        t = time.perf_counter()
        index_dir = work / "index"
        info = make_index(ckpt, index_dir, cases=args.cases, dim=dim, seed=args.seed)
        timings["index_build_s"] = round(time.perf_counter() - t, 1)

        local = LocalService(ckpt, index_dir)
        timings["inprocess_load_s"] = round(local.load_s, 1)

        port, log = free_port(), work / "serve.log"
        cmd = [*_medclip_cmd(), "serve", "--checkpoint", str(ckpt), "--index", str(index_dir), "--port", str(port)]
        t = time.perf_counter()
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=_pin(server_cores), env=_child_env()
            )
        timings["server_start_s"] = round(wait_healthy(port, proc, 600, log), 1)

        health = Client(port)
        health_ms = [health.get("/api/health")[2] for _ in range(50)]
        health.close()
        warm_ms, warm_errors = sequential(port, warm)
        side = interleaved(port, local, measured)
        cached, cached_errors = sequential(port, [measured[0]] * args.cached_repeats)
        floor_extra = inprocess_extra(local, measured, args.cached_repeats)
        local.close()
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, client_cores)
        load = load_test(port, load_pool, clients=args.clients, duration=args.duration)
        load_end = round(os.getloadavg()[0], 2)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc = None

        cli = cli_per_query(index_dir, measured[: args.cli_queries], server_cores, work) if args.cli_queries else None
        distinct = side["http"]
        p50, floor_p50 = pct(distinct, 50), pct(side["local"], 50)
        result = {
            "cases": args.cases,
            "dim": dim,
            "k": K,
            "index": {
                "kind": info["kind"],
                "faiss_index": info["faiss_index"],
                "nprobe": info["nprobe"],
                "compression": info["compression"],
                "images_per_case": 1,
            },
            "checkpoint": {
                "path": str(ckpt) if args.checkpoint else "(throwaway, deleted)" if tmp else str(ckpt),
                "text_tower": meta["model"]["text"]["name"],
                "text_layers": text_cfg.get("num_hidden_layers"),
                "text_hidden": text_cfg.get("hidden_size"),
                "image_tower": meta["model"]["image"]["name"],
                "trained_steps": trained,
                "note": "latency depends on the text tower and the index only; an almost untrained checkpoint "
                "times like a trained one (its rankings are meaningless)"
                if trained is not None
                else "the given checkpoint",
            },
            "http": {
                "distinct": summary(distinct),
                "cached": summary(cached),
                "errors": side["errors"] + cached_errors + warm_errors,
                "warmup_requests": len(warm_ms) + warm_errors,
                "server_faiss_search_p50_ms": pct(side["http_faiss"], 50),
                "health_p50_ms": pct(health_ms, 50),
            },
            "throughput": load,
            "inprocess": {
                "distinct": summary(side["local"]),
                **floor_extra,
                "faiss_search_p50_ms": pct(side["local_faiss"], 50),
                "note": "CaseService.search in the benchmark's process on one worker thread (as the server's thread "
                "pool runs it), interleaved query by query with the HTTP requests (same texts, separate caches)",
            },
            "http_overhead_p50_ms": round(p50 - floor_p50, 2) if p50 is not None and floor_p50 is not None else None,
            "cli_per_query": cli,
            "speedup_vs_cli_p50": round(cli["per_query_s_median"] * 1e3 / p50, 1) if cli and p50 else None,
            "targets_met": {"p50_le_50ms": p50 is not None and p50 <= GOAL_P50_MS},
            "timings": timings,
            "machine": {
                "cpus": os.cpu_count(),
                "server_cores": server_cores,
                "client_cores": client_cores,
                "clients_share_server_cores": client_cores == server_cores,
                "torch_threads": len(server_cores),
                "torch": torch.__version__,
                "platform": platform.platform(),
                "python": platform.python_version(),
                "load_avg_1m_at_start": load_start,
                "load_avg_1m_after_http": load_end,
            },
        }
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        if tmp is not None:
            tmp.cleanup()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
