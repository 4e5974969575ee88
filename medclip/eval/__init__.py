"""Evaluation: embeddings once, then zero-shot, retrieval, linear probes, the case index and reports.

The names below are imported lazily, so ``import medclip.eval.metrics`` does not load models or FAISS.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate": "pipeline",
    "Embedder": "embeddings",
    "SplitEmbeddings": "embeddings",
    "EvalTable": "csv_source",
    "load_table": "csv_source",
    "read_csv_table": "csv_source",
    "evaluate_zero_shot": "zero_shot",
    "retrieval_metrics": "retrieval",
    "label_precision_at_k": "retrieval",
    "linear_probe": "linear_probe",
    "CaseIndex": "index",
    "IndexParams": "index",
    "build_case_index": "index",
    "query_case_index": "index",
    "markdown_table": "report",
    "write_results": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medclip.eval' has no attribute '{name}'")
    return getattr(importlib.import_module(f"medclip.eval.{_EXPORTS[name]}"), name)
