"""scripts/bench_index.py runs at a small size and prints its figures as JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_index.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_index", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_has_the_specified_structure():
    bench = _load()
    x, q = bench.make_data(3000, queries=20, chunk=1300)
    assert x.shape == (3000, 512) and q.shape == (20, 512) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    # Points live near a 64-d subspace: the top 64 singular values hold almost all the energy.
    s = np.linalg.svd(x[:1000], compute_uv=False)
    assert (s[:64] ** 2).sum() / (s**2).sum() > 0.75
    x2, _ = bench.make_data(3000, queries=20, chunk=1300)
    assert np.array_equal(x, x2)  # seeded


def test_bench_prints_json(capsys):
    bench = _load()
    assert bench.main(["--n", "20000", "--queries", "50", "--kind", "ivf", "--nprobe", "64"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 20000 and result["kind"] == "ivf" and result["index"] == "IndexIVFFlat"
    assert result["recall@10"] >= 0.95 and result["latency_ms_p50"] > 0 and result["bytes_per_vector"] > 2048
    assert set(result["targets_met"]) == {"p50_le_2ms", "recall_ge_0.98", "build_le_180s"}


def test_blocks_are_remade_one_by_one_and_the_running_top_k_is_exact():
    bench = _load()
    x, q = bench.make_data(3000, queries=20, chunk=1000)
    centre, proj = bench.data_model()
    assert np.array_equal(bench.make_chunk(2, 1000, centre, proj), x[2000:])  # block 2 alone, as in the full set
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    assert np.array_equal(bench.exact_neighbours(x, q, 10, chunk=700), truth)


def test_bench_of_the_compressed_index_prints_the_10m_targets(capsys, tmp_path):
    bench = _load()
    argv = ["--n", "20000", "--queries", "30", "--kind", "ivf", "--compression", "rabitq", "--tmp", str(tmp_path)]
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["factory"] == "IVF128,RaBitQ5" and result["index"] == "IndexIVFRaBitQ"
    assert result["recall@10"] >= 0.9 and result["bytes_per_vector"] < 400 and result["peak_rss_mb"] > 0
    assert set(result["targets_met"]) == {"p50_le_5ms", "recall_ge_0.95", "peak_rss_le_4gib"}
    assert result["baseline"]["ivf_flat_gib"] > result["baseline"]["ivf_sq8_gib"] > 0
