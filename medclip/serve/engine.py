"""What the web app does, without the web: search a case index by text, by a case or by an uploaded study, screen
an uploaded study with the checkpoint's prompt set, render thumbnails with the checkpoint's preprocessing, and
heat maps of where a phrase lands on an image (:mod:`medclip.eval.grounding`, with the same loaded model).

:class:`CaseService` loads the checkpoint and the index once. Text and image queries go through the same
:func:`medclip.eval.index.query_case_index` as ``medclip index query``, so both rank alike. Model calls hold a lock:
the model runs one query at a time on all cores, searches and page requests run beside it.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from medclip.data.transforms import deterministic_transforms
from medclip.errors import InputError
from medclip.eval.embeddings import Embedder
from medclip.eval.grounding import Grounder, Grounding
from medclip.eval.index import CaseIndex, index_embedder, query_case_index
from medclip.eval.zero_shot import class_embeddings, scores_for_mode
from medclip.io import storage
from medclip.models.medclip import checkpoint_sibling
from medclip.text.prompts import load_prompts

logger = logging.getLogger(__name__)

MAX_K = 100
THUMB_PX = 256  # longest side of a thumbnail
HEAT_PX = 320  # longest side of a heat-map overlay
HEAT_ALPHA = 0.45  # the heat map's weight over the gray image
SCREEN_MAPS = 3  # screening: heat maps of this many top-scoring findings
PUBLIC_FIELDS = ("rank", "score", "entry", "study_id", "split", "modality", "impression", "snippet", "labels")


def public_row(row: dict) -> dict:
    """A result row as the API shows it: no image path (a file layout's path can hold identifiers)."""
    out = {k: row[k] for k in PUBLIC_FIELDS if k in row}
    out["thumbnail"] = f"/api/thumbnail/{row['entry']}"
    return out


def default_prompts(meta: dict, checkpoint: str | Path) -> tuple[str | dict, str]:
    """The checkpoint's screening prompts and zero-shot mode: recorded at training time, else the run's config
    (fetched when the checkpoint is a URL), else the packaged set for its input (``ct`` for volumes, ``cxr_demo`` for
    2-D images)."""
    if meta.get("prompt_set"):
        return meta["prompt_set"], meta.get("zero_shot_mode", "multilabel")
    run_config = checkpoint_sibling(checkpoint, "config.yaml")
    if run_config is not None:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(run_config)
        prompts = OmegaConf.select(cfg, "eval.prompts")
        if prompts:
            return str(prompts), str(OmegaConf.select(cfg, "eval.mode") or "multilabel")
    return ("ct" if meta.get("preprocess", {}).get("spatial_dims") == 3 else "cxr_demo"), "multilabel"


class CaseService:
    """A checkpoint + the case index built with it, ready to answer the web app's questions; either may be a URL
    (``s3://...``), fetched once into the local cache."""

    def __init__(
        self,
        checkpoint: str | Path,
        index: str | Path | CaseIndex,
        *,
        prompts: str = "",
        mode: str = "",
        device: str = "cpu",
        nprobe: int | None = None,
        thumbnail_cache: int = 2048,
        heatmap_cache: int = 64,
    ) -> None:
        self.index = index if isinstance(index, CaseIndex) else CaseIndex.load(index, nprobe=nprobe)
        self.embedder: Embedder = index_embedder(self.index, checkpoint, device=device)
        self.embedder.show_progress = False
        self.embedder.batch_size = 8
        source = checkpoint or self.index.info.get("checkpoint", "")  # as named: a URL perhaps, not the local copy
        default_set, default_mode = default_prompts(self.embedder.meta, source)
        self.checkpoint_name = PurePosixPath(storage.display(source).rstrip("/")).name
        raw = load_prompts(prompts) if prompts else (default_set if isinstance(default_set, dict) else None)
        recorded = str(self.embedder.meta.get("prompts") or "the checkpoint's")
        self.prompt_name = prompts or (default_set if isinstance(default_set, str) else recorded)
        self.prompt_set = raw if raw is not None else load_prompts(self.prompt_name)
        self.mode = mode or default_mode
        self._lock = threading.Lock()  # one model call at a time (torch already uses every core)
        self._classes = None
        self._thumbs = PngCache(thumbnail_cache)  # entry -> PNG
        self._render = None
        self._grounder: Grounder | None = None
        self._heats = PngCache(heatmap_cache)  # (entry, phrase) -> PNG, in memory only
        self.preprocess = self.embedder.meta.get("preprocess", {})
        self.is_volume = self.preprocess.get("spatial_dims") == 3
        self._facets = self.index.facets()

    # -- start-up ---------------------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the weights and encode the prompts now, so the first request is as fast as the others."""
        with self._lock:
            self.embedder.encode_text(["warm up"])
            self._class_embeddings()
            _ = self.grounder  # resolves the heat-map method on the loaded model

    @property
    def grounder(self) -> Grounder:
        """Heat maps with the loaded model (``method="auto"``: local word-region heads where it has them)."""
        if self._grounder is None:
            self._grounder = Grounder(self.embedder)
        return self._grounder

    def _class_embeddings(self):
        if self._classes is None:
            self._classes = class_embeddings(self.prompt_set, self.embedder.encode_text)
        return self._classes

    # -- the API's questions ----------------------------------------------------------------------------------------
    def info(self) -> dict:
        info = self.index.info
        return {
            "index": {key: info.get(key) for key in ("n", "dim", "kind", "compression", "split")},
            "checkpoint": self.checkpoint_name,
            "checkpoint_fingerprint": self.embedder.fingerprint(),
            "input": "volume" if self.is_volume else "image",
            "prompts": self.prompt_name,
            "findings": list(self.prompt_set),
            "zero_shot_mode": self.mode,
            "grounding": self.grounder.method,
            "max_k": MAX_K,
            **self._facets,
        }

    def search(self, query: str, *, k: int = 10, modality: str | None = None, label: str | None = None) -> dict:
        """Cases for a description: the same call (and ranking) as ``medclip index query``."""
        query = (query or "").strip()
        if not query:
            raise InputError("the query is empty: type a description")
        k = _check_k(k)
        with self._lock:
            answer = query_case_index(
                self.index, query, k=k, embedder=self.embedder, modality=modality, label=label, text_only=True
            )
        return {**answer, "results": [public_row(r) for r in answer["results"]]}

    def similar(self, case_id: str, *, k: int = 10, modality: str | None = None, label: str | None = None) -> dict:
        """Cases like an indexed one ("more like this"): its images' mean vector, the case itself left out."""
        k = _check_k(k)
        try:
            vec = self.index.study_vector(case_id)
        except KeyError:
            raise LookupError(f"no case '{case_id}' in this index") from None
        where = self.index.filter_mask(modality=modality, label=label)
        results = self.index.search(vec[None], k, where=where, exclude_studies=[case_id])[0]
        return {
            "case_id": case_id,
            "query_type": "case",
            "k": k,
            "filters": {"modality": modality, "label": label},
            "results": [public_row(r) for r in results],
        }

    def screen(self, path: str | Path, *, k: int = 10, modality: str | None = None, label: str | None = None) -> dict:
        """An uploaded study: the most similar cases and the zero-shot screening table of the checkpoint's prompts."""
        k = _check_k(k)
        with self._lock:
            try:
                vec = self.embedder.encode_images([str(path)])  # [1, D], the checkpoint's preprocessing
            except Exception as exc:  # a file that passed the type check but does not decode
                raise InputError(f"the upload could not be read as an image: {_root_cause(exc)}") from exc
            classes = self._class_embeddings()
            scores = scores_for_mode(vec, classes, self.embedder.logit_scale, mode=self.mode)
        where = self.index.filter_mask(modality=modality, label=label)
        results = self.index.search(vec.numpy(), k, where=where)[0]
        table = [
            {
                "finding": finding,
                "score": round(float(scores[finding][0]), 4),
                "positive_prompts": self.prompt_set[finding]["positive"],
                "negative_prompts": self.prompt_set[finding]["negative"],
            }
            for finding in self.prompt_set
        ]
        table.sort(key=lambda row: -row["score"])
        return {
            "query_type": "upload",
            "k": k,
            "prompts": self.prompt_name,
            "zero_shot_mode": self.mode,
            "screening": table,
            **self._screen_maps(path, table[:SCREEN_MAPS]),
            "results": [public_row(r) for r in results],
        }

    def _screen_maps(self, path: str | Path, top: list[dict]) -> dict:
        """Heat maps of the top findings' first positive prompts on the upload, as PNG data URLs (nothing kept)."""
        top = [row for row in top if row["positive_prompts"]]
        if not top:
            return {"heatmaps": []}
        try:
            with self._lock:
                maps = self.grounder.ground(path, [row["positive_prompts"][0] for row in top])
        except Exception as exc:  # no map of this kind for the tower, or a bug: the screening table still answers
            logger.warning("screening heat maps could not be computed: %s", type(exc).__name__)
            reason = str(exc) if isinstance(exc, InputError) else f"the heat maps failed ({type(exc).__name__})"
            return {"heatmaps": [], "heatmaps_unavailable": reason}
        return {
            "heatmaps": [
                {
                    "finding": row["finding"],
                    "phrase": g.phrase,
                    "score": row["score"],
                    "method": g.method,
                    "overlay": "data:image/png;base64," + base64.b64encode(self.heatmap_png(g)).decode("ascii"),
                }
                for row, g in zip(top, maps, strict=True)
            ]
        }

    # -- thumbnails -------------------------------------------------------------------------------------------------
    def thumbnail(self, entry: int) -> bytes:
        """PNG of an indexed image through the checkpoint's preprocessing (a volume: its middle axial slice)."""
        if not 0 <= entry < len(self.index.entries):
            raise LookupError(f"no entry {entry} in this index")
        png = self._thumbs.get(entry)
        if png is None:
            png = self._thumbs.put(entry, self.render(self.index.entry(entry)["image_path"]))
        return png

    def render(self, image_path: str) -> bytes:
        if self._render is None:
            from medclip.config import PreprocessCfg

            self._render = deterministic_transforms(PreprocessCfg(**self.preprocess))
        data = {"image": image_path}
        for step in self._render:
            data = step(data)
        return to_png(data["image"], volume=self.is_volume, invert=bool(self.preprocess.get("invert")))

    # -- heat maps --------------------------------------------------------------------------------------------------
    def heatmap(self, entry: int, phrase: str) -> bytes:
        """PNG of where ``phrase`` lands on an indexed image (a volume: the axial slice through the map's peak); the
        most recent maps are cached in memory, so a page shown again does not recompute them."""
        if not 0 <= entry < len(self.index.entries):
            raise LookupError(f"no entry {entry} in this index")
        phrase = (phrase or "").strip()
        if not phrase:
            raise InputError("the phrase is empty: give ?q=PHRASE, e.g. left pleural effusion")
        png = self._heats.get((entry, phrase))
        if png is None:
            with self._lock:
                g = self.grounder.ground(self.index.entry(entry)["image_path"], [phrase])[0]
            png = self._heats.put((entry, phrase), self.heatmap_png(g))
        return png

    def heatmap_png(self, g: Grounding) -> bytes:
        return grounding_png(g, invert=bool(self.preprocess.get("invert")))


class PngCache:
    """The ``size`` most recently used PNGs in memory, safe across the server's threads (a quick lock around each
    dictionary update; the PNG itself is made outside it)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> bytes | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, png: bytes) -> bytes:
        with self._lock:
            self._items[key] = png
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return png


def _root_cause(exc: BaseException) -> str:
    """The innermost error's message (MONAI wraps a decoder's error in "applying transform ...")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def _check_k(k: int) -> int:
    if not 1 <= int(k) <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}")
    return int(k)


def to_png(image, *, volume: bool = False, invert: bool = False, size: int = THUMB_PX) -> bytes:
    """A preprocessed image [C, H, W] (or volume [C, D, H, W]: its middle axial slice) -> PNG bytes, contrast
    stretched; the first channel (the first HU window) unless there are three (colour)."""
    from PIL import Image

    x = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    x = x.astype(np.float32)
    if volume:
        x = x[:, x.shape[1] // 2]  # [C, H, W]: the middle slice
    x = x if x.shape[0] == 3 else x[:1]
    lo, hi = np.percentile(x, [0.5, 99.5]) if x.size else (0.0, 1.0)
    x = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
    if invert:  # the model sees ink bright on black; people read dark ink on paper
        x = 1 - x
    pixels = (x * 255).round().astype(np.uint8)
    img = Image.fromarray(pixels.transpose(1, 2, 0) if pixels.shape[0] == 3 else pixels[0])
    scale = size / max(img.size)
    if scale > 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def grounding_png(g: Grounding, *, invert: bool = False, size: int = HEAT_PX) -> bytes:
    """A :class:`~medclip.eval.grounding.Grounding` as an overlay PNG; a 3-D map on its peak's axial slice.
    ``invert``: the checkpoint inverts its input (sketches), so show the image as drawn."""
    image, heat = g.image, g.heatmap
    if heat.ndim == 3:
        k = g.peak[0] if np.ptp(heat) > 0 else heat.shape[0] // 2  # a flat map: the middle slice, as the thumbnail
        image, heat = image[k], heat[k]
    return overlay_to_png(1 - image if invert else image, heat, size=size)


def overlay_to_png(image, heatmap, *, alpha: float = HEAT_ALPHA, size: int = HEAT_PX) -> bytes:
    """A gray image [H, W] under a jet-coloured heat map [H, W] (min-max normalised: the map's own range) -> PNG
    bytes of longest side ``size``; the image contrast stretched as thumbnails are. A flat map adds no colour."""
    import matplotlib
    from PIL import Image

    gray, heat = np.asarray(image, dtype=np.float32), np.asarray(heatmap, dtype=np.float32)
    if gray.shape != heat.shape or gray.ndim != 2:
        raise InputError(f"overlay needs a 2-D image and a heat map of its shape, got {gray.shape} and {heat.shape}")
    rows, cols = gray.shape
    scale = size / max(rows, cols)
    shape = (max(1, round(cols * scale)), max(1, round(rows * scale)))  # PIL: (width, height)
    # Resize first: a full-size radiograph is millions of pixels, the overlay a hundred thousand.
    gray, heat = (np.asarray(Image.fromarray(x).resize(shape, Image.Resampling.BILINEAR)) for x in (gray, heat))
    lo, hi = np.percentile(gray, [0.5, 99.5])
    gray = np.clip((gray - lo) / max(hi - lo, 1e-6), 0, 1)
    spread = float(np.ptp(heat))
    if spread <= 1e-6 * max(float(np.abs(heat).max()), 1e-12):  # a flat map (a one-cell grid) points nowhere: no colour
        alpha = 0.0
    heat = (heat - heat.min()) / max(spread, 1e-12)
    colour = matplotlib.colormaps["jet"](heat)[..., :3]  # [h, w, 3] in [0, 1]
    blend = (1 - alpha) * gray[..., None] + alpha * colour
    buf = io.BytesIO()
    Image.fromarray((np.clip(blend, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()
