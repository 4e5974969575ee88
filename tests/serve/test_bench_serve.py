"""scripts/bench_serve.py runs at a small size against a real ``medclip serve`` and prints its figures as JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_serve.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_serve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_queries_are_distinct_radiology_descriptions():
    bench = _load()
    queries = bench.radiology_queries()
    assert len(queries) == len(set(queries)) > 1000  # enough for 300 sequential + a 15 s load test uncached
    assert queries == bench.radiology_queries() and queries != bench.radiology_queries(seed=1)  # seeded order
    assert all(q == q.strip() and len(q.split()) >= 4 for q in queries)
    entries = bench.case_entries(50)
    assert {"study_id", "image_path", "snippet", "split", "modality", "label:pneumothorax"} <= set(entries.columns)
    assert entries["study_id"].is_unique and set(entries["label:edema"].unique()) <= {1, 0, -1, -2}


def test_bench_prints_json(tiny_checkpoint, tmp_path, capsys):
    bench = _load()
    out = tmp_path / "serve.json"
    argv = ["--checkpoint", str(tiny_checkpoint), "--cases", "2000", "--queries", "20", "--cached-repeats", "20"]
    argv += ["--clients", "2", "--duration", "2", "--cli-queries", "0", "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == result
    assert result["cases"] == 2000 and result["dim"] == 64 and result["index"]["kind"] == "flat"
    assert result["checkpoint"]["text_tower"] == "minilm" and result["checkpoint"]["trained_steps"] is None
    http = result["http"]
    assert http["errors"] == 0 and http["distinct"]["n"] == 20 and http["cached"]["n"] == 20
    assert 0 < http["distinct"]["p50_ms"] <= http["distinct"]["p95_ms"] <= http["distinct"]["p99_ms"]
    assert http["cached"]["p50_ms"] > 0 and http["server_faiss_search_p50_ms"] > 0
    load = result["throughput"]
    assert load["clients"] == 2 and load["errors"] == 0 and load["ok"] == load["requests"] > 0 and load["rps"] > 0
    assert load["p50_ms"] > 0 and load["distinct_queries"]
    floor = result["inprocess"]
    assert floor["distinct"]["n"] == 20 and floor["distinct"]["p50_ms"] > 0 and floor["encode_text_p50_ms"] > 0
    assert result["cli_per_query"] is None and result["speedup_vs_cli_p50"] is None
    assert set(result["targets_met"]) == {"p50_le_50ms"}
    machine = result["machine"]
    assert machine["cpus"] >= 1 and 1 <= len(machine["server_cores"]) <= 2 and "load_avg_1m_at_start" in machine
