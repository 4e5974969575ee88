"""Case index: FAISS over image embeddings, queried by text or by an image, returning similar prior cases.

Exact inner-product search below ``EXACT_MAX`` entries; above it an IVF index (inverted lists over k-means cells,
``nprobe`` cells searched per query) or HNSW. ``compression="int8"`` stores 1 byte per dimension (scalar quantiser),
``"pq"`` 1 byte per 8 dimensions (product quantiser), ``"rabitq"`` ``rabitq_bits`` (5) bits per dimension plus a few
per-vector factors (multi-bit RaBitQ on the IVF residuals, ~350 B at 512-d), for archives of millions of images.
``compression="auto"`` (the default) keeps full vectors up to ``COMPRESS_ABOVE`` (2,000,000: IVF-Flat then needs
~4 GB) and uses IVF-RaBitQ above it, with ~sqrt(N) cells (4,096 at 10M).

Measured with ``scripts/bench_index.py`` (synthetic clustered 512-d embeddings, recall@10 against exact search, single
queries, 2 cores): at 1M, IVF-Flat recall@10 = 1.0 at ~2 KB per vector, int8 0.98 at ~0.5 KB, PQ only ~0.5 at ~77 B,
RaBitQ-5 0.95 at 356 B; at 10M (``--n 10000000``) IVF4096,RaBitQ5 gives recall@10 0.938, p50 4.5 ms at 349 B
per vector (3.3 GB; 3.8 GiB peak while building). Other compressed codes at
<= 400 B per vector rank worse on this data (recall@10 when re-ranking the exact top-50, 1M): SQ4 0.72, SQ6 0.92,
PQ256 0.80, OPQ128+PQ128 0.75, IVF residual SQ4 0.83 / SQ6 0.96 (384 B, 0.94 at 10M density); IVF-Flat (20.6 GB) and
IVF-SQ8 (5.2 GB) do not fit 4 GiB at 10M.

An index directory holds ``index.faiss``, ``entries.parquet`` (study id, image path, report snippet per entry) and
``index.json`` (kind, parameters, the checkpoint and its fingerprint, so queries use the same embedding space).
It may be a URL (``s3://bucket/indexes/cxr``): built in a temporary folder and uploaded (the embeddings cache stays
local), and fetched into the local cache to be queried.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medclip.config import EVAL_SPLITS, INDEX_COMPRESSIONS, INDEX_KINDS, IndexBuildCfg, IndexParams
from medclip.errors import InputError, SetupError
from medclip.eval.embeddings import Embedder, checkpoint_fingerprint
from medclip.eval.overlap import check_training_overlap
from medclip.eval.report import check_out_url, local_out_dir, upload_outputs
from medclip.ingest.tables import check_source, load_table
from medclip.io import storage
from medclip.models.medclip import WEIGHTS_NAME, local_checkpoint

logger = logging.getLogger(__name__)

KINDS, COMPRESSIONS = INDEX_KINDS, INDEX_COMPRESSIONS
EXACT_MAX = 50_000  # below this many vectors exact search is fast enough (a few ms) and needs no training
# compression="auto": full float vectors up to this many (IVF-Flat takes 4 GB at 2M x 512-d), RaBitQ above it
COMPRESS_ABOVE = 2_000_000
AUTO_COMPRESSION = "rabitq"
HNSW_COARSE_MIN = 32_768  # IVF cells from which the coarse quantiser is an HNSW graph (below, flat is as fast)
SNIPPET_CHARS = 160
LABEL_PREFIX = "label:"  # entries' label columns: 1 positive, 0 negative, -1 uncertain, -2 not mentioned
INDEX_FILE, ENTRIES_FILE, INFO_FILE = "index.faiss", "entries.parquet", "index.json"
INDEX_FILES = (INDEX_FILE, ENTRIES_FILE, INFO_FILE)  # what a query needs (index.json last: uploaded after the others)


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


def choose_compression(n: int, compression: str = "auto") -> str:
    """ "auto" -> "none" up to ``COMPRESS_ABOVE`` vectors, else ``AUTO_COMPRESSION``; any other value is kept."""
    _check(compression, COMPRESSIONS, "compression")
    return ("none" if n <= COMPRESS_ABOVE else AUTO_COMPRESSION) if compression == "auto" else compression


def default_nlist(n: int, compression: str = "none") -> int:
    """IVF cells: ~2 sqrt(n) rounded to a power of two (2,048 at a million), at most one cell per 39 vectors; ~sqrt(n)
    for rabitq (4,096 at 10M: its 5-bit codes scan fast, and fewer cells halve k-means and add time on few cores)."""
    factor = 1 if compression == "rabitq" else 2
    return int(max(1, min(2 ** round(math.log2(max(factor * math.sqrt(n), 1))), n // 39)))


def _codec(dim: int, params: IndexParams, compression: str) -> str:
    if compression == "none":
        return "Flat"
    if compression == "int8":
        return "SQ8"
    if compression == "rabitq":
        return f"RaBitQ{params.rabitq_bits}"
    m = params.pq_bytes or max(1, dim // 8)
    if dim % m:
        raise InputError(f"pq_bytes {m} must divide the embedding dimension {dim}")
    return f"PQ{m}"


def index_spec(n: int, dim: int, params: IndexParams) -> str:
    """The FAISS factory string that ``params`` give for ``n`` vectors of ``dim`` dimensions."""
    kind = choose_kind(n, params.kind)
    compression = choose_compression(n, params.compression)
    codec = _codec(dim, params, compression)
    if kind == "flat":
        spec = codec + ("np" if codec.startswith("PQ") else "")  # np: skip polysemous training (slow, unused here)
    elif kind == "ivf":
        cells = params.nlist or default_nlist(n, compression)
        spec = f"IVF{cells}" + ("_HNSW32" if cells >= HNSW_COARSE_MIN else "") + f",{codec}"
    elif kind == "hnsw" and compression == "rabitq":
        raise InputError("compression 'rabitq' works with index kind flat or ivf, not hnsw")
    elif kind == "hnsw":
        spec = f"HNSW{params.hnsw_m}" + ("" if codec == "Flat" else f"_{codec}")
    else:
        raise InputError(f"index kind '{kind}' is not one of {KINDS}")
    return spec


def new_faiss(n: int, dim: int, params: IndexParams):
    """The empty (untrained) FAISS index of :func:`index_spec`."""
    faiss = _faiss()
    index = faiss.index_factory(dim, index_spec(n, dim, params), faiss.METRIC_INNER_PRODUCT)
    if choose_kind(n, params.kind) == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = params.ef_construction
    return index


def train_size(index, n: int, params: IndexParams) -> int:
    """How many of ``n`` vectors train ``index``: ``params.train_size``, at least 40 per IVF cell (0: no training)."""
    if index.is_trained:
        return 0
    ivf = _faiss().try_extract_index_ivf(index)
    return min(n, max(params.train_size, 40 * (ivf.nlist if ivf is not None else 0)))


def build_faiss(vectors: np.ndarray, params: IndexParams):
    """A trained, filled FAISS index over L2-normalised ``vectors`` [N, D] (inner product = cosine)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = x.shape
    index = new_faiss(n, dim, params)
    if m := train_size(index, n, params):
        rng = np.random.default_rng(params.seed)
        index.train(x[np.sort(rng.choice(n, m, replace=False))])
    index.add(x)
    set_search_params(index, params)
    return index


def set_search_params(index, params: IndexParams) -> None:
    """Apply ``nprobe`` (IVF) or ``ef_search`` (HNSW, also an IVF's HNSW coarse quantiser) to a built or loaded index."""
    faiss = _faiss()
    inner = faiss.downcast_index(index)
    if hasattr(inner, "nprobe"):
        inner.nprobe = params.nprobe
        coarse = faiss.downcast_index(inner.quantizer)
        if hasattr(coarse, "hnsw"):  # it must find the nprobe nearest cells, not just the nearest
            coarse.hnsw.efSearch = max(params.ef_search, 2 * params.nprobe)
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = params.ef_search


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The first ``limit`` characters of a report on one line (cut at a word boundary)."""
    text = re.sub(r"\s+", " ", text or "").strip()
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _params_for(faiss, index, selector):
    """Search parameters of the index's own type (keeping its nprobe / efSearch / k_factor) with ``selector``."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexRefine):
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = inner.k_factor
        params.base_index_params = _params_for(faiss, inner.base_index, selector)
    elif isinstance(inner, faiss.IndexPreTransform):
        return _params_for(faiss, inner.index, selector)
    elif hasattr(inner, "nprobe"):
        params = faiss.SearchParametersIVF()
        params.nprobe = inner.nprobe
    elif hasattr(inner, "hnsw"):
        params = faiss.SearchParametersHNSW()
        params.efSearch = inner.hnsw.efSearch
    else:
        params = faiss.SearchParameters()
    params.sel = selector
    return params


class CaseIndex:
    """A FAISS index + one entry (study id, image path, report snippet) per vector + build info."""

    def __init__(self, index, entries: pd.DataFrame, info: dict) -> None:
        self.index, self.entries, self.info = index, entries.reset_index(drop=True), info
        # Plain arrays per column: result rows are read from these (a DataFrame row lookup costs ~50 us each).
        self._cols = {c: self.entries[c].to_numpy() for c in self.entries.columns}
        self.label_names = [c[len(LABEL_PREFIX) :] for c in self.entries.columns if c.startswith(LABEL_PREFIX)]
        self._study_rows: dict[str, np.ndarray] | None = None
        self._masks: dict[tuple, np.ndarray | None] = {}

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
        compression = choose_compression(len(vectors), params.compression)  # "auto" recorded as what it chose
        meta = {
            "n": len(vectors),
            "dim": int(vectors.shape[1]),
            "kind": kind,
            "compression": compression,
            "params": {**params.__dict__, "kind": kind, "compression": compression},
            "build_s": round(time.perf_counter() - t, 3),
            **(info or {}),
        }
        logger.info("case index: %d vectors, %s (%s), built in %.1fs", len(vectors), kind, compression, meta["build_s"])
        return cls(index, entries, meta)

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        unique_studies: bool = True,
        where: np.ndarray | None = None,
        exclude_studies: tuple[str, ...] | list[str] = (),
    ) -> list[list[dict]]:
        """Top-``k`` entries per query [Q, D]; with ``unique_studies`` only a study's best image is kept.

        ``where``: a boolean mask over the entries (see :meth:`filter_mask`); only those are searched, inside FAISS.
        ``exclude_studies``: studies left out of the results (the query's own, for "more like this").
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n = len(self) if where is None else int(where.sum())
        if n == 0:
            return [[] for _ in queries]
        exclude = set(exclude_studies)
        # Over-fetch when results are dropped (other images of a study, excluded studies), then widen if short.
        fetch = min(n, (k * 4 if unique_studies else k) + (len(exclude) * 8 if exclude else 0))
        params = self._search_params(where)
        while True:
            scores, ids = self.index.search(queries, fetch, params=params)
            out = [self._rows(s, i, k, unique_studies, exclude, where) for s, i in zip(scores, ids, strict=True)]
            if all(len(r) >= min(k, n) for r in out) or fetch >= n or not (unique_studies or exclude):
                return out
            fetch = min(n, fetch * 4)

    def _search_params(self, where: np.ndarray | None):
        """FAISS search parameters restricting the search to the ``where`` entries (None: search everything)."""
        if where is None:
            return None
        faiss = _faiss()
        bits = np.packbits(where.astype(bool), bitorder="little")
        selector = faiss.IDSelectorBitmap(len(where), faiss.swig_ptr(bits))
        params = _params_for(faiss, self.index, selector)
        params._keep = (bits, selector)  # the bitmap must outlive the search: FAISS only holds a pointer
        return params

    def filter_mask(self, *, modality: str | None = None, label: str | None = None) -> np.ndarray | None:
        """Boolean mask of the entries of ``modality`` whose ``label`` is positive (None: no filter)."""
        if not modality and not label:
            return None
        key = (modality or "", label or "")
        if key not in self._masks:
            mask = np.ones(len(self.entries), dtype=bool)
            if modality:
                if "modality" not in self._cols:
                    raise InputError("this index has no modality column; rebuild it to filter by modality")
                mask &= self._cols["modality"].astype(str) == modality
            if label:
                if label not in self.label_names:
                    raise InputError(f"label '{label}' is not in this index; it has {self.label_names or 'no labels'}")
                mask &= self._cols[LABEL_PREFIX + label] == 1
            if len(self._masks) > 256:
                self._masks.clear()
            self._masks[key] = mask
        return self._masks[key]

    def facets(self) -> dict:
        """Filter values the index holds: modalities and labels, each with its number of entries."""
        out: dict = {"modalities": {}, "labels": {}}
        if "modality" in self._cols:
            values, counts = np.unique(self._cols["modality"].astype(str), return_counts=True)
            out["modalities"] = {str(v): int(c) for v, c in zip(values, counts, strict=True) if v}
        for name in self.label_names:
            out["labels"][name] = int((self._cols[LABEL_PREFIX + name] == 1).sum())
        return out

    def study_entries(self, study_id: str) -> np.ndarray:
        """Entry numbers of one study's images (KeyError when the index has no such study)."""
        if self._study_rows is None:
            studies = self._cols["study_id"].astype(str)
            order = np.argsort(studies, kind="stable")
            uniq, starts = np.unique(studies[order], return_index=True)
            self._study_rows = dict(zip(uniq, np.split(order, starts[1:]), strict=True))
        return self._study_rows[study_id]

    def vectors(self, entries: np.ndarray) -> np.ndarray:
        """The stored vectors of ``entries`` [M, D] (decoded from the codes when the index is compressed)."""
        faiss = _faiss()
        try:
            return np.stack([self.index.reconstruct(int(i)) for i in entries])
        except RuntimeError:  # an IVF index needs its direct map to find an id's list
            faiss.extract_index_ivf(self.index).make_direct_map()
            return np.stack([self.index.reconstruct(int(i)) for i in entries])

    def study_vector(self, study_id: str) -> np.ndarray:
        """The normalised mean vector of a study's images: the "more like this" query."""
        v = self.vectors(self.study_entries(study_id)).mean(0)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def entry(self, i: int) -> dict:
        """One entry as a result row (without rank and score)."""
        cols = self._cols
        row = {
            "entry": int(i),
            "study_id": str(cols["study_id"][i]),
            "image_path": str(cols["image_path"][i]),
            "snippet": str(cols["snippet"][i]),
        }
        for col in ("split", "modality", "impression"):
            if col in cols:
                value = cols[col][i]
                row[col] = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        if self.label_names:
            row["labels"] = [n for n in self.label_names if cols[LABEL_PREFIX + n][i] == 1]
        return row

    def _rows(self, scores, ids, k: int, unique: bool, exclude: set, where: np.ndarray | None) -> list[dict]:
        rows, seen = [], set(exclude)
        study = self._cols["study_id"]
        for score, i in zip(scores, ids, strict=True):
            if i < 0 or (where is not None and not where[i]):  # FAISS pads with -1 when fewer results exist
                continue
            sid = str(study[i])
            if sid in seen and (unique or sid in exclude):
                continue
            seen.add(sid)
            rows.append({"rank": len(rows) + 1, "score": round(float(score), 4), **self.entry(int(i))})
            if len(rows) == k:
                break
        return rows

    def save(self, out_dir: str | Path) -> str | Path:
        """Write the index files to folder ``out_dir``, or to a URL (through a temporary folder, then uploaded)."""
        if storage.is_url(out_dir):
            with tempfile.TemporaryDirectory(prefix="medclip-index-") as tmp:
                upload_outputs(self.save(tmp), out_dir, list(INDEX_FILES))
            return out_dir
        out = storage.local_path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self.index, str(out / INDEX_FILE))
        self.entries.to_parquet(out / ENTRIES_FILE, index=False)
        (out / INFO_FILE).write_text(json.dumps(self.info, indent=2, default=str))
        return out

    @classmethod
    def load(cls, path: str | Path, *, nprobe: int | None = None, ef_search: int | None = None) -> CaseIndex:
        """The index in folder ``path``, or at a URL (its three files fetched into the local cache)."""
        files = index_files(path)
        info = json.loads(files[INFO_FILE].read_text())
        index = _faiss().read_index(str(files[INDEX_FILE]))
        stored = {k: v for k, v in info.get("params", {}).items() if k in IndexParams.__dataclass_fields__}
        params = IndexParams(**stored)
        params.nprobe = nprobe or params.nprobe
        params.ef_search = ef_search or params.ef_search
        set_search_params(index, params)
        return cls(index, pd.read_parquet(files[ENTRIES_FILE]), info)


def index_files(path: str | Path) -> dict[str, Path]:
    """The index's files on this machine by name; those of a URL are fetched (each once per version), and nothing
    else of its folder is (an embeddings cache put there would be large)."""
    remote = storage.is_url(path)
    found = {name: storage.join(path, name) for name in INDEX_FILES}
    if not all(storage.isfile(found[name]) for name in (INFO_FILE, INDEX_FILE)):
        raise FileNotFoundError(
            f"{storage.display(path)} is not a case index (no {INFO_FILE} / {INDEX_FILE})"
            f"{storage.where_missing(path) if remote else ''}; build one with "
            "`medclip index build --checkpoint CKPT --manifest M --out IDX`"
        )
    return {name: storage.fetch(where) if remote else Path(where) for name, where in found.items()}


def _weights_stat(checkpoint: Path) -> list[int]:
    st = (checkpoint / WEIGHTS_NAME).stat()
    return [st.st_size, st.st_mtime_ns]


def index_entries(rows: pd.DataFrame, labels: pd.DataFrame, table_rows: pd.DataFrame) -> pd.DataFrame:
    """One entry per embedded image: study id, image path, report snippet, split, modality and impression where the
    source has them, and a ``label:<finding>`` column per label (1 / 0 / -1, -2 where not mentioned)."""
    entries = pd.DataFrame(
        {
            "study_id": rows["study_id"].astype(str).to_numpy(),
            # Absolute, so thumbnails and "more like this" work wherever the index is served from.
            "image_path": [os.path.abspath(p) for p in rows["image_path"].astype(str)],
            "snippet": [snippet(t) for t in rows["report"]],
            "split": rows["split"].astype(str).to_numpy(),
        }
    )
    for col in ("modality", "impression"):
        if col in rows.columns:
            entries[col] = rows[col].fillna("").astype(str).to_numpy()
    if len(labels.columns):
        # Labels are aligned with the table's rows; the embedded rows are a split of them, matched by row_id.
        position = pd.Series(np.arange(len(table_rows)), index=table_rows["row_id"].to_numpy())
        aligned = labels.iloc[position[rows["row_id"].to_numpy()].to_numpy()]
        for col in aligned.columns:
            entries[LABEL_PREFIX + str(col)] = aligned[col].fillna(-2).to_numpy(dtype=np.int8)
    return entries


def build_case_index(cfg: IndexBuildCfg, *, show_progress: bool = True) -> CaseIndex:
    """Embed every image of a manifest (or CSV) split with the checkpoint and save a :class:`CaseIndex` to ``cfg.out_dir``.

    The image embeddings are cached in ``cfg.out_dir`` too, so rebuilding with other index parameters is cheap; for
    an output URL they are cached in its local staging folder instead (:func:`~medclip.eval.report.local_out_dir`)
    and only the index files are uploaded. A URL checkpoint is fetched, and recorded as its URL so that a query on
    another machine fetches it too.
    """
    if not cfg.checkpoint or not cfg.out_dir:
        raise InputError("building a case index needs a checkpoint (--checkpoint) and an output directory (--out)")
    check_source(manifest=cfg.manifest, csv=cfg.csv, shards=cfg.shards)
    if cfg.split not in EVAL_SPLITS:
        raise InputError(f"unknown split '{cfg.split}'; choose from {EVAL_SPLITS}")
    check_out_url(cfg.out_dir)
    out = local_out_dir(cfg.out_dir)
    ckpt = local_checkpoint(cfg.checkpoint)
    embedder = Embedder(
        ckpt,
        cache_dir=out,
        batch_size=cfg.batch_size,
        device=cfg.device,
        show_progress=show_progress,
        shards=cfg.shards or None,
    )
    table = load_table(
        manifest=cfg.manifest or None,
        csv=cfg.csv or None,
        text_policy=embedder.text_policy,
        labels_csv=cfg.labels or None,
        image_col=cfg.image_col or None,
        text_col=cfg.text_col or None,
        splits=None if cfg.split == "all" else [cfg.split],  # a manifest: only the indexed split's rows are read
    )
    overlap = check_training_overlap(ckpt, table, cfg.split, allow=cfg.allow_overlap, action="build the case index")
    emb = embedder.embed(table, cfg.split)
    entries = index_entries(emb.rows, table.labels, table.rows)
    ckpt = ckpt.resolve()
    info = {
        "checkpoint": storage.display(cfg.checkpoint) if storage.is_url(cfg.checkpoint) else str(ckpt),
        "checkpoint_fingerprint": embedder.fingerprint(),
        "weights_stat": _weights_stat(ckpt),
        "source": table.source,
        "split": cfg.split,
        **overlap,
    }
    index = CaseIndex.build(emb.image_emb.numpy(), entries, params=cfg.params, info=info)
    index.save(cfg.out_dir)
    return index


def index_embedder(index: CaseIndex, checkpoint: str | Path | None, *, device: str) -> Embedder:
    """The index's checkpoint (or ``checkpoint``, refused unless it is the same model) as a query embedder; either
    may be a URL (fetched into the local cache)."""
    source = checkpoint or index.info.get("checkpoint", "")
    gone = f"the index's checkpoint {storage.display(source)} is gone"
    hint = "; pass --checkpoint CKPT (the one it was built with)"
    try:
        ckpt = local_checkpoint(source)
    except FileNotFoundError:  # a URL with no checkpoint (any more)
        raise FileNotFoundError(gone + storage.where_missing(source) + hint) from None
    if not ckpt.is_dir():
        raise FileNotFoundError(gone + hint)
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
    modality: str | None = None,
    label: str | None = None,
    text_only: bool = False,
) -> dict:
    """Similar cases for a text query or an image file (DICOM / PNG / JPEG) -> {"query", "query_type", "results"}.

    ``embedder``: an already loaded model to embed the query with (it must be the index's checkpoint).
    ``modality`` / ``label``: search only the entries of that modality / with that label positive.
    ``text_only``: ``query`` is always text, even when a file of that name exists (a server's queries).
    """
    if not isinstance(index, CaseIndex):
        index = CaseIndex.load(index)
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if embedder is not None:
        if embedder.fingerprint() != index.info.get("checkpoint_fingerprint"):
            raise InputError("this model is not the checkpoint the index was built with; rebuild the index with it")
    else:
        embedder = index_embedder(index, checkpoint, device=device)
    where = index.filter_mask(modality=modality, label=label)
    is_image = not text_only and Path(query).is_file()
    vec = embedder.encode_images([query]) if is_image else embedder.encode_text([query])  # [1, D]
    t = time.perf_counter()
    results = index.search(vec.numpy(), k, unique_studies=unique_studies, where=where)[0]
    return {
        "query": query,
        "query_type": "image" if is_image else "text",
        "k": k,
        "filters": {"modality": modality or None, "label": label or None},
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
