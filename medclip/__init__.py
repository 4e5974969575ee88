"""medclip: medical image-report contrastive learning.

What a notebook user types::

    import medclip

    model = medclip.load("runs/demo/train/final")                    # a trained checkpoint
    image_emb = medclip.encode_images(model, ["a.dcm", "b.png"])       # [N, D], the checkpoint's own preprocessing
    text_emb = medclip.encode_texts(model, ["small left pleural effusion"])
    scores = medclip.zero_shot_scores(model, ["a.dcm"], prompts="cxr_demo")  # finding -> [N] probabilities
    index = medclip.build_index(model, "runs/index", manifest="data/manifest", split="test")  # held-out patients
    medclip.query_index(index, "small left apical pneumothorax", k=5)
    maps = medclip.ground(model, "a.dcm", ["left pleural effusion"])  # heat maps: .heatmap, .grid, .peak
    medclip.parse_sections(report_text)                                # {"findings": ..., "impression": ...}
    medclip.label_report(report_text, "chexpert")                      # label -> 1 / 0 / -1 / None

The functions import the heavy parts (torch, MONAI, FAISS) when first called, so ``import medclip`` and the
``medclip`` command start fast. Everything else lives in the subpackages (``medclip.eval``, ``medclip.train``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medclip.reports.labeler import label_report
from medclip.reports.sections import parse_sections
from medclip.version import __version__

if TYPE_CHECKING:
    import numpy as np
    import torch

    from medclip.eval.embeddings import Embedder
    from medclip.eval.grounding import Grounding
    from medclip.eval.index import CaseIndex

__all__ = [
    "__version__",
    "build_index",
    "encode_images",
    "encode_texts",
    "ground",
    "label_report",
    "load",
    "load_index",
    "parse_sections",
    "query_index",
    "zero_shot_scores",
]


def load(checkpoint: str | Path, *, device: str = "cpu", batch_size: int = 64, show_progress: bool = False) -> Embedder:
    """A trained checkpoint (a run's ``final/`` directory), ready to embed images and texts.

    The returned :class:`~medclip.eval.embeddings.Embedder` holds the model (``.model``), its tokenizer and the
    preprocessing recipe the checkpoint was trained with; the weights load on first use.
    """
    from medclip.eval.embeddings import Embedder

    return Embedder(checkpoint, batch_size=batch_size, device=device, show_progress=show_progress)


def _model(model: Embedder | str | Path) -> Embedder:
    return load(model) if isinstance(model, str | Path) else model


def encode_images(model: Embedder | str | Path, images: Sequence[str | Path]) -> torch.Tensor:
    """[N, D] L2-normalised embeddings of image files (DICOM, PNG, JPEG; CT series folders or NIfTI for CT models)."""
    return _model(model).encode_images([str(p) for p in images])


def encode_texts(model: Embedder | str | Path, texts: Sequence[str]) -> torch.Tensor:
    """[M, D] L2-normalised embeddings of report texts, prompts or queries."""
    return _model(model).encode_text(list(texts))


def zero_shot_scores(
    model: Embedder | str | Path,
    images: Sequence[str | Path] | torch.Tensor,
    *,
    prompts: str = "cxr_demo",
    mode: str = "multilabel",
) -> dict[str, np.ndarray]:
    """finding -> [N] zero-shot probabilities for image files (or their [N, D] embeddings).

    ``prompts``: a packaged prompt set (``cxr_demo``, ``chexpert``, ``chestxray14``, ``ct``, ``sketch``) or a YAML file;
    ``mode``: ``multilabel`` (each finding's positive vs negative prompts) or ``multiclass`` (a softmax over findings).
    """
    import torch

    from medclip.eval.zero_shot import class_embeddings, scores_for_mode
    from medclip.text.prompts import load_prompts

    embedder = _model(model)
    emb = images if isinstance(images, torch.Tensor) else encode_images(embedder, images)
    classes = class_embeddings(load_prompts(prompts), embedder.encode_text)
    return scores_for_mode(emb, classes, embedder.logit_scale, mode=mode)


def ground(
    model: Embedder | str | Path, image: str | Path, phrases: str | Sequence[str], *, method: str = "auto"
) -> list[Grounding]:
    """Heat maps of where each phrase lands on one image (DICOM, PNG, JPEG; a CT series or NIfTI for CT models).

    Each :class:`~medclip.eval.grounding.Grounding` has ``heatmap`` (on the image's own pixels), ``grid`` (the
    tower's cells) and ``peak``. ``method``: ``local`` (word-region heads, models trained with
    ``loss.local_weight``), ``global`` (the global head on each cell, any CNN or ViT model) or ``auto``.
    """
    from medclip.eval.grounding import Grounder

    phrases = [phrases] if isinstance(phrases, str) else list(phrases)
    return Grounder(_model(model), method=method).ground(image, phrases)


def build_index(
    model: Embedder | str | Path,
    out: str | Path,
    *,
    manifest: str | Path | None = None,
    csv: str | Path | None = None,
    split: str = "all",
    allow_overlap: bool = False,
    **params: Any,
) -> CaseIndex:
    """Embed every image of a manifest (or CSV) split and save a FAISS case index to ``out``.

    A split holding patients the checkpoint trained on is refused unless ``allow_overlap`` (then the counts are in
    the index's info). ``params`` are :class:`medclip.config.IndexParams` fields (``kind="ivf"``, ...).
    """
    from medclip.config import IndexBuildCfg, IndexParams
    from medclip.eval.index import build_case_index

    embedder = _model(model)
    cfg = IndexBuildCfg(
        checkpoint=str(embedder.checkpoint),
        device=str(embedder.device),
        batch_size=embedder.batch_size,
        out_dir=str(out),
        manifest=str(manifest or ""),
        csv=str(csv or ""),
        split=split,
        allow_overlap=allow_overlap,
        params=IndexParams(**params),
    )
    return build_case_index(cfg, show_progress=False)


def load_index(path: str | Path, *, nprobe: int | None = None) -> CaseIndex:
    """A case index saved by :func:`build_index` or ``medclip index build``."""
    from medclip.eval.index import CaseIndex

    return CaseIndex.load(path, nprobe=nprobe)


def query_index(
    index: CaseIndex | str | Path,
    query: str,
    *,
    k: int = 10,
    unique_studies: bool = True,
    model: Embedder | None = None,
) -> dict:
    """Similar cases for a text (or an image file path): ``{"query", "query_type", "results": [...]}``.

    ``model``: the loaded checkpoint the index was built with (else the index loads it from the path it recorded).
    """
    from medclip.eval.index import query_case_index

    return query_case_index(index, query, k=k, unique_studies=unique_studies, embedder=model)
