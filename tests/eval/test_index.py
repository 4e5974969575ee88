from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medclip.cli import main
from medclip.eval.index import CaseIndex, IndexParams, build_faiss, choose_kind, query_case_index, snippet


def _clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(index, x: np.ndarray, q: np.ndarray, k: int = 10) -> float:
    truth = np.argsort(-(q @ x.T), axis=1)[:, :k]
    found = index.search(q, k)[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))


@pytest.mark.parametrize(
    ("kind", "compression", "min_recall"),
    [("flat", "none", 1.0), ("ivf", "none", 0.9), ("hnsw", "none", 0.9), ("ivf", "int8", 0.85), ("flat", "pq", 0.15)],
)
def test_index_kinds_find_the_exact_neighbours(kind, compression, min_recall):
    """Recall@10 against brute force; PQ (4 bytes for 32 dims) is lossy but far above chance (10 / 3000)."""
    faiss = pytest.importorskip("faiss")
    x = _clustered(3000)
    q = x[:50] + 0.01
    index = build_faiss(x, IndexParams(kind=kind, compression=compression, nprobe=8))
    assert index.ntotal == 3000
    assert _recall(index, x, q / np.linalg.norm(q, axis=1, keepdims=True)) >= min_recall
    code_bytes = {"none": 4 * 32, "int8": 32, "pq": 4}[compression]
    inner = faiss.downcast_index(index)
    codes = faiss.downcast_index(inner.storage) if kind == "hnsw" else inner  # HNSW keeps its vectors in .storage
    assert codes.code_size == code_bytes


def test_auto_kind_is_exact_for_small_archives_only():
    assert choose_kind(1000) == "flat" and choose_kind(10_000_000) == "ivf" and choose_kind(10, "hnsw") == "hnsw"
    with pytest.raises(ValueError, match="not one of"):
        choose_kind(10, "lsh")


def test_case_index_round_trip_and_one_image_per_study(tmp_path):
    x = _clustered(200)
    x[1] = x[0]  # the study's second view looks the same: it must not take a second result slot
    entries = pd.DataFrame(
        {
            "study_id": [f"s{i // 2}" for i in range(200)],
            "image_path": [f"{i}.dcm" for i in range(200)],
            "snippet": [f"report {i // 2}" for i in range(200)],
        }
    )
    index = CaseIndex.build(x, entries, info={"checkpoint": "nowhere"})
    hits = index.search(x[:1], 5)[0]
    assert len(hits) == 5 and len({h["study_id"] for h in hits}) == 5 and hits[0]["study_id"] == "s0"
    every_image = index.search(x[:1], 5, unique_studies=False)[0]
    assert [h["study_id"] for h in every_image[:2]] == ["s0", "s0"]
    loaded = CaseIndex.load(index.save(tmp_path / "idx"))
    assert loaded.search(x[:3], 5) == index.search(x[:3], 5)
    assert loaded.info["kind"] == "flat" and loaded.info["n"] == 200


def test_snippet_is_one_short_line():
    text = "FINDINGS:\n  Small left apical pneumothorax.   " + "word " * 100
    s = snippet(text, 60)
    assert "\n" not in s and len(s) <= 64 and s.startswith("FINDINGS: Small left apical")


def test_index_build_and_query_through_the_cli(tiny_checkpoint, tiny_manifest, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert (
        main(
            [
                "-q",
                "index",
                "build",
                "--checkpoint",
                str(tiny_checkpoint),
                "--manifest",
                str(tiny_manifest),
                "--out",
                str(idx),
                "--allow-overlap",  # every image, the checkpoint's training patients too
            ]
        )
        == 0
    )
    info = json.loads((idx / "index.json").read_text())
    entries = pd.read_parquet(idx / "entries.parquet")
    assert info["overlap_check"] == "overlap allowed" and info["training_overlap"]["patients"] > 0
    assert (
        info["kind"] == "flat"
        and info["n"] == len(entries)
        and set(entries.columns) == {"study_id", "image_path", "snippet", "split", "modality", "impression"}
    )
    capsys.readouterr()
    assert main(["-q", "index", "query", str(idx), "small left apical pneumothorax", "-k", "3"]) == 0
    out = capsys.readouterr().out
    answer = json.loads((idx / "last_query.json").read_text())
    assert answer["query_type"] == "text" and len(answer["results"]) == 3
    assert answer["results"][0]["study_id"][:20] in out
    # An image query: the image itself is its own nearest neighbour.
    image = entries["image_path"].iloc[0]
    answer = query_case_index(idx, image, k=2)
    assert answer["query_type"] == "image" and answer["results"][0]["image_path"] == image


def test_query_refuses_another_checkpoint(tiny_checkpoint, tiny_manifest, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert (
        main(
            [
                "-q",
                "index",
                "build",
                "--checkpoint",
                str(tiny_checkpoint),
                "--manifest",
                str(tiny_manifest),
                "--out",
                str(idx),
                "--split",
                "test",
            ]
        )
        == 0
    )
    info = json.loads((idx / "index.json").read_text())
    info["checkpoint_fingerprint"] = "0" * 16
    (idx / "index.json").write_text(json.dumps(info))
    assert main(["-q", "index", "query", str(idx), "effusion", "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "not the one this index was built with" in capsys.readouterr().err
    assert main(["-q", "index", "query", str(tmp_path / "nope"), "effusion"]) == 2


def _bench_data(n: int, queries: int):
    """The synthetic embeddings of scripts/bench_index.py (clustered, 512-d, unit norm)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_index.py"
    spec = importlib.util.spec_from_file_location("bench_index", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.make_data(n, queries=queries)


def test_auto_compression_is_none_up_to_the_threshold_only():
    from medclip.eval.index import COMPRESS_ABOVE, choose_compression, index_spec

    assert choose_compression(COMPRESS_ABOVE) == "none" and choose_compression(COMPRESS_ABOVE + 1) == "rabitq"
    assert choose_compression(10**8, "int8") == "int8" and choose_compression(10, "rabitq") == "rabitq"
    assert index_spec(10_000_000, 512, IndexParams()) == "IVF4096,RaBitQ5"  # what `medclip index build` picks
    assert index_spec(1_000_000, 512, IndexParams()) == "IVF2048,Flat"
    with pytest.raises(ValueError, match="not one of"):
        choose_compression(10, "zip")
    with pytest.raises(ValueError, match="not hnsw"):
        index_spec(100_000, 512, IndexParams(kind="hnsw", compression="rabitq"))


def test_auto_compression_past_the_threshold_builds_saves_and_loads_rabitq(monkeypatch, tmp_path):
    """With the threshold patched small, an auto build compresses; the codes keep recall@10 high against exact search
    on the benchmark's data, and the saved index comes back with its search parameters."""
    faiss = pytest.importorskip("faiss")
    import medclip.eval.index as index_module

    monkeypatch.setattr(index_module, "COMPRESS_ABOVE", 10_000)
    monkeypatch.setattr(index_module, "EXACT_MAX", 5_000)  # and IVF from 5,000: an archive past both, in miniature
    x, q = _bench_data(20_000, 50)
    entries = pd.DataFrame(
        {
            "study_id": [f"s{i}" for i in range(len(x))],
            "image_path": [f"{i}.dcm" for i in range(len(x))],
            "snippet": ["report"] * len(x),
        }
    )
    built = CaseIndex.build(x, entries, params=IndexParams(nprobe=12), info={"checkpoint": "nowhere"})
    inner = faiss.downcast_index(built.index)
    assert isinstance(inner, faiss.IndexIVFRaBitQ) and inner.nprobe == 12 and inner.nlist == 128
    assert faiss.serialize_index(built.index).nbytes / len(x) < 400  # vs 2,048 + 8 bytes as float32
    assert _recall(built.index, x, q) >= 0.9
    loaded = CaseIndex.load(built.save(tmp_path / "idx"))
    assert faiss.downcast_index(loaded.index).nprobe == 12
    assert loaded.search(q[:5], 5) == built.search(q[:5], 5)
    assert faiss.downcast_index(CaseIndex.load(tmp_path / "idx", nprobe=3).index).nprobe == 3
