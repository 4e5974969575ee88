"""Evaluation: embeddings once, then zero-shot, retrieval, linear probes, the case index and reports.

The notebook-level entry points are in :mod:`medclip` (``medclip.load``, ``medclip.build_index``, ...).
"""
