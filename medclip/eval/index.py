"""Case index: FAISS over image embeddings, queried by text or by an image, returning similar prior cases.

Exact inner-product search below ``EXACT_MAX`` entries; above it an IVF index (inverted lists over k-means cells,
``nprobe`` cells searched per query) or HNSW. ``compression="int8"`` stores 1 byte per dimension (scalar quantiser),
``"pq"`` 1 byte per 8 dimensions (product quantiser), for archives of tens of millions of images. On the benchmark
(``scripts/bench_index.py``, 1M x 512-d, 2 cores) IVF keeps recall@10 = 1.0 at ~2 KB per vector, int8 0.98 at ~0.5 KB,
PQ only ~0.5 at ~77 B: use PQ for candidate generation when memory rules everything else out.

An index directory holds ``index.faiss``, ``entries.parquet`` (study id, image path, report snippet per entry) and
``index.json`` (kind, parameters, the checkpoint and its fingerprint, so queries use the same embedding space).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medclip.config import EVAL_SPLITS, INDEX_COMPRESSIONS, INDEX_KINDS, IndexBuildCfg, IndexParams
from medclip.errors import InputError, SetupError
from medclip.eval.embeddings import Embedder, checkpoint_fingerprint
from medclip.eval.overlap import check_training_overlap
from medclip.ingest.tables import check_source, load_table
from medclip.models.medclip import WEIGHTS_NAME

logger = logging.getLogger(__name__)

KINDS, COMPRESSIONS = INDEX_KINDS, INDEX_COMPRESSIONS
EXACT_MAX = 50_000  # below this many vectors exact search is fast enough (a few ms) and needs no training
SNIPPET_CHARS = 160
INDEX_FILE, ENTRIES_FILE, INFO_FILE = "index.faiss", "entries.parquet", "index.json"


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a runtime dependency
        raise SetupError("the case index needs FAISS: pip install faiss-cpu") from exc
    return faiss


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise InputError(f"index {what} '{value}' is not one of {allowed}")


def choose_kind(n: int, kind: str = "auto") -> str:
    """ "auto" -> "flat" (exact) below ``EXACT_MAX`` vectors, else "ivf"; any other kind is kept."""
    _check(kind, KINDS, "kind")
    return ("flat" if n < EXACT_MAX else "ivf") if kind == "auto" else kind


def default_nlist(n: int) -> int:
    """IVF cells: ~2 sqrt(n) rounded to a power of two (2,048 at a million), at most one cell per 39 vectors."""
    return int(max(1, min(2 ** round(math.log2(max(2 * math.sqrt(n), 1))), n // 39)))


def _codec(dim: int, params: IndexParams) -> str:
    if params.compression == "none":
        return "Flat"
    if params.compression == "int8":
        return "SQ8"
    m = params.pq_bytes or max(1, dim // 8)
    if dim % m:
        raise InputError(f"pq_bytes {m} must divide the embedding dimension {dim}")
    return f"PQ{m}"


def build_faiss(vectors: np.ndarray, params: IndexParams):
    """A trained, filled FAISS index over L2-normalised ``vectors`` [N, D] (inner product = cosine)."""
    faiss = _faiss()
    _check(params.compression, COMPRESSIONS, "compression")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = x.shape
    kind = choose_kind(n, params.kind)
    codec = _codec(dim, params)
    if kind == "flat":
        spec = codec + ("np" if codec.startswith("PQ") else "")  # np: skip polysemous training (slow, unused here)
    elif kind == "ivf":
        spec = f"IVF{params.nlist or default_nlist(n)},{codec}"
    elif kind == "hnsw":
        spec = f"HNSW{params.hnsw_m}" + ("" if codec == "Flat" else f"_{codec}")
    else:
        raise InputError(f"index kind '{kind}' is not one of {KINDS}")
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = params.ef_construction
    if not index.is_trained:
        rng = np.random.default_rng(params.seed)
        cells = faiss.extract_index_ivf(index).nlist if kind == "ivf" else 0
        sample = x[np.sort(rng.choice(n, min(n, max(params.train_size, 40 * cells)), replace=False))]
        index.train(sample)
    index.add(x)
    set_search_params(index, params)
    return index


def set_search_params(index, params: IndexParams) -> None:
    """Apply ``nprobe`` (IVF) or ``ef_search`` (HNSW) to a built or loaded index."""
    faiss = _faiss()
    inner = faiss.downcast_index(index)
    if hasattr(inner, "nprobe"):
        inner.nprobe = params.nprobe
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = params.ef_search


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The first ``limit`` characters of a report on one line (cut at a word boundary)."""
    text = re.sub(r"\s+", " ", text or "").strip()
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


class CaseIndex:
    """A FAISS index + one entry (study id, image path, report snippet) per vector + build info."""

    def __init__(self, index, entries: pd.DataFrame, info: dict) -> None:
        self.index, self.entries, self.info = index, entries.reset_index(drop=True), info

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(
        cls, vectors: np.ndarray, entries: pd.DataFrame, *, params: IndexParams | None = None, info: dict | None = None
    ) -> CaseIndex:
        """Index ``vectors`` [N, D] (L2-normalised); ``entries`` has N rows (study_id, image_path, snippet)."""
        params = params or IndexParams()
        if len(vectors) != len(entries):
            raise ValueError(f"{len(vectors)} vectors but {len(entries)} entries")
        if not len(vectors):
            raise InputError("nothing to index: no images")
        t = time.perf_counter()
        index = build_faiss(vectors, params)
        kind = choose_kind(len(vectors), params.kind)
        meta = {
            "n": len(vectors),
            "dim": int(vectors.shape[1]),
            "kind": kind,
            "compression": params.compression,
            "params": {**params.__dict__, "kind": kind},
            "build_s": round(time.perf_counter() - t, 3),
            **(info or {}),
        }
        logger.info(
            "case index: %d vectors, %s (%s), built in %.1fs", len(vectors), kind, params.compression, meta["build_s"]
        )
        return cls(index, entries, meta)

    def search(self, queries: np.ndarray, k: int = 10, *, unique_studies: bool = True) -> list[list[dict]]:
        """Top-``k`` entries per query [Q, D]; with ``unique_studies`` only a study's best image is kept."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n = len(self)
        fetch = min(n, k * 4 if unique_studies else k)
        while True:
            scores, ids = self.index.search(queries, fetch)
            out = [self._rows(s, i, k, unique_studies) for s, i in zip(scores, ids, strict=True)]
            if all(len(r) >= min(k, n) for r in out) or fetch >= n or not unique_studies:
                return out
            fetch = min(n, fetch * 4)

    def _rows(self, scores: np.ndarray, ids: np.ndarray, k: int, unique: bool) -> list[dict]:
        rows, seen = [], set()
        for score, i in zip(scores, ids, strict=True):
            if i < 0:  # FAISS pads with -1 when fewer results exist
                continue
            entry = self.entries.iloc[int(i)]
            if unique and entry["study_id"] in seen:
                continue
            seen.add(entry["study_id"])
            rows.append(
                {
                    "rank": len(rows) + 1,
                    "score": round(float(score), 4),
                    "study_id": str(entry["study_id"]),
                    "image_path": str(entry["image_path"]),
                    "snippet": str(entry["snippet"]),
                }
            )
            if len(rows) == k:
                break
        return rows

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self.index, str(out / INDEX_FILE))
        self.entries.to_parquet(out / ENTRIES_FILE, index=False)
        (out / INFO_FILE).write_text(json.dumps(self.info, indent=2, default=str))
        return out

    @classmethod
    def load(cls, path: str | Path, *, nprobe: int | None = None, ef_search: int | None = None) -> CaseIndex:
        path = Path(path)
        if not (path / INFO_FILE).is_file() or not (path / INDEX_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is not a case index (no {INFO_FILE} / {INDEX_FILE}); build one with "
                "`medclip index build --checkpoint CKPT --manifest M --out IDX`"
            )
        info = json.loads((path / INFO_FILE).read_text())
        index = _faiss().read_index(str(path / INDEX_FILE))
        stored = {k: v for k, v in info.get("params", {}).items() if k in IndexParams.__dataclass_fields__}
        params = IndexParams(**stored)
        params.nprobe = nprobe or params.nprobe
        params.ef_search = ef_search or params.ef_search
        set_search_params(index, params)
        return cls(index, pd.read_parquet(path / ENTRIES_FILE), info)


def _weights_stat(checkpoint: Path) -> list[int]:
    st = (checkpoint / WEIGHTS_NAME).stat()
    return [st.st_size, st.st_mtime_ns]


def build_case_index(cfg: IndexBuildCfg, *, show_progress: bool = True) -> CaseIndex:
    """Embed every image of a manifest (or CSV) split with the checkpoint and save a :class:`CaseIndex` to ``cfg.out_dir``.

    The image embeddings are cached in ``cfg.out_dir`` too, so rebuilding with other index parameters is cheap.
    """
    if not cfg.checkpoint or not cfg.out_dir:
        raise InputError("building a case index needs a checkpoint (--checkpoint) and an output directory (--out)")
    check_source(manifest=cfg.manifest, csv=cfg.csv, shards=cfg.shards)
    if cfg.split not in EVAL_SPLITS:
        raise InputError(f"unknown split '{cfg.split}'; choose from {EVAL_SPLITS}")
    embedder = Embedder(
        cfg.checkpoint,
        cache_dir=cfg.out_dir,
        batch_size=cfg.batch_size,
        device=cfg.device,
        show_progress=show_progress,
        shards=cfg.shards or None,
    )
    table = load_table(
        manifest=cfg.manifest or None,
        csv=cfg.csv or None,
        text_policy=embedder.text_policy,
        image_col=cfg.image_col or None,
        text_col=cfg.text_col or None,
    )
    overlap = check_training_overlap(
        cfg.checkpoint, table, cfg.split, allow=cfg.allow_overlap, action="build the case index"
    )
    emb = embedder.embed(table, cfg.split)
    entries = pd.DataFrame(
        {
            "study_id": emb.rows["study_id"].astype(str),
            "image_path": emb.rows["image_path"],
            "snippet": [snippet(t) for t in emb.rows["report"]],
        }
    )
    ckpt = Path(cfg.checkpoint).resolve()
    info = {
        "checkpoint": str(ckpt),
        "checkpoint_fingerprint": embedder.fingerprint(),
        "weights_stat": _weights_stat(ckpt),
        "source": table.source,
        "split": cfg.split,
        **overlap,
    }
    index = CaseIndex.build(emb.image_emb.numpy(), entries, params=cfg.params, info=info)
    index.save(cfg.out_dir)
    return index


def _query_embedder(index: CaseIndex, checkpoint: str | Path | None, *, device: str):
    ckpt = Path(checkpoint or index.info.get("checkpoint", ""))
    if not ckpt.is_dir():
        raise FileNotFoundError(
            f"the index's checkpoint {ckpt} is gone; pass --checkpoint CKPT (the one it was built with)"
        )
    same_file = checkpoint is None and _weights_stat(ckpt) == index.info.get("weights_stat")
    if not same_file and checkpoint_fingerprint(ckpt) != index.info.get("checkpoint_fingerprint"):
        raise InputError(
            f"checkpoint {ckpt} is not the one this index was built with (fingerprint differs); "
            "its embeddings would not match - rebuild the index or pass the original "
            "--checkpoint"
        )
    return Embedder(ckpt, device=device, show_progress=False)


def query_case_index(
    index: CaseIndex | str | Path,
    query: str,
    *,
    k: int = 10,
    checkpoint: str | Path | None = None,
    unique_studies: bool = True,
    device: str = "cpu",
    embedder: Embedder | None = None,
) -> dict:
    """Similar cases for a text query or an image file (DICOM / PNG / JPEG) -> {"query", "query_type", "results"}.

    ``embedder``: an already loaded model to embed the query with (it must be the index's checkpoint).
    """
    if not isinstance(index, CaseIndex):
        index = CaseIndex.load(index)
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if embedder is not None:
        if embedder.fingerprint() != index.info.get("checkpoint_fingerprint"):
            raise InputError("this model is not the checkpoint the index was built with; rebuild the index with it")
    else:
        embedder = _query_embedder(index, checkpoint, device=device)
    is_image = Path(query).is_file()
    vec = embedder.encode_images([query]) if is_image else embedder.encode_text([query])  # [1, D]
    t = time.perf_counter()
    results = index.search(vec.numpy(), k, unique_studies=unique_studies)[0]
    return {
        "query": query,
        "query_type": "image" if is_image else "text",
        "k": k,
        "results": results,
        "search_ms": round((time.perf_counter() - t) * 1e3, 3),
        "index": {key: index.info.get(key) for key in ("n", "kind", "compression", "checkpoint")},
    }


def results_table(answer: dict, *, width: int = 70) -> str:
    """A plain-text table of a query's results, for the console."""
    sw = min(max([len(r["study_id"]) for r in answer["results"]] + [5]), 64)
    lines = [
        f"{answer['query_type']} query: {answer['query']!r} -> top {len(answer['results'])} of "
        f"{answer['index']['n']} ({answer['index']['kind']})",
        "",
        f"{'#':>3}  {'score':>6}  {'study':<{sw}}  report",
    ]
    for r in answer["results"]:
        text = r["snippet"] if len(r["snippet"]) <= width else r["snippet"][: width - 3] + "..."
        lines.append(f"{r['rank']:>3}  {r['score']:>6.3f}  {r['study_id'][:sw]:<{sw}}  {text}")
    return "\n".join(lines)
