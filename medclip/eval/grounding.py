"""Phrase grounding: where in an image a phrase lands, as a heat map, for any medclip checkpoint.

Two kinds of map, chosen by what the checkpoint has (``method="auto"``):

- ``local`` (models trained with the local word-region loss, ``loss.local_weight > 0``): the phrase's words, through
  the local text head, against the image regions through the local image head (GLoRIA's word-region space); the map
  is each region's cosine similarity averaged over the phrase's words.
- ``global`` (any model whose image tower pools per-cell features): the global projection head applied to every
  cell of the tower's last feature map, scored against the phrase's global text embedding (BioViL's patch-level
  similarity). The sketch encoder pools a flattened grid, so it has only the local kind.

A map is computed on the tower's grid, upsampled bicubically (trilinearly in 3-D) to the model's input, cropped to
the image (the preprocessing pads the short side) and resized to the decoded image's own pixels, so boxes given in
the image's coordinates (MS-CXR) fall where they should. 3-D (CT) maps stay in the model's input voxels.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medclip.errors import InputError
from medclip.eval.embeddings import Embedder
from medclip.models.image_tower import cells
from medclip.models.medclip import MedClip, word_mask
from medclip.text.tokenizer import tokenize

logger = logging.getLogger(__name__)

METHODS = ("auto", "local", "global")


@dataclass
class Grounding:
    """One phrase on one image. ``heatmap``: the map on the decoded image's pixels (2-D; [D, H, W] model input voxels
    for 3-D); ``grid``: the map on the tower's grid; ``image``: the decoded image in [0, 1] (the model input's first
    channel for 3-D), for overlays."""

    phrase: str
    heatmap: np.ndarray
    grid: np.ndarray
    method: str
    image: np.ndarray = field(repr=False)

    @property
    def peak(self) -> tuple[int, ...]:
        """Index of the map's maximum (row, column; slice, row, column in 3-D)."""
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape))

    def to_json(self) -> dict:
        return {
            "phrase": self.phrase,
            "method": self.method,
            "grid_shape": list(self.grid.shape),
            "grid": np.round(self.grid, 5).tolist(),
            "image_shape": list(self.heatmap.shape),
            "peak": list(self.peak),
            "min": float(self.heatmap.min()),
            "max": float(self.heatmap.max()),
        }


def resolve_method(model: MedClip, method: str = "auto") -> str:
    """``auto`` -> ``local`` when the model has local word-region heads, else ``global``; checks the choice fits."""
    if method not in METHODS:
        raise InputError(f"grounding method '{method}' is not one of {METHODS}")
    if method == "auto":
        return "local" if model.has_local_heads else "global"
    if method == "local" and not model.has_local_heads:
        raise InputError(
            "this checkpoint has no local word-region heads (trained without loss.local_weight); use method global"
        )
    return method


def token_weights(keep: torch.Tensor, word_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[P, L] weights of each phrase's tokens in its map, summing to 1 per phrase: every word counts the same, its
    word pieces sharing its weight (GLoRIA merges pieces into words), so "right" weighs as much as "effusion" even
    though the tokenizer cut the latter into four pieces. ``word_ids`` [P, L]: the word each token belongs to (-1:
    none); without them every kept token counts as a word."""
    keep = keep.float()
    if word_ids is None:
        return keep / keep.sum(1, keepdim=True).clamp(min=1.0)
    n = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    member = (word_ids[..., None] == torch.arange(max(n, 1), device=keep.device)).float() * keep[..., None]  # [P, L, W]
    pieces = member.sum(1)  # [P, W]: kept tokens of each word
    words = (pieces > 0).sum(1, keepdim=True).clamp(min=1)  # [P, 1]
    weights = (member / pieces.clamp(min=1.0)[:, None, :]).sum(2) / words
    no_words = weights.sum(1, keepdim=True) == 0  # word ids missing for kept tokens: fall back to tokens
    return torch.where(no_words, keep / keep.sum(1, keepdim=True).clamp(min=1.0), weights)


@torch.no_grad()
def grid_maps(
    model: MedClip, image: torch.Tensor, input_ids, attention_mask, *, method: str, word_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Similarity maps of one image ([1, C, *S] model input) with P phrases -> [P, *grid]. ``word_ids`` (local maps):
    see :func:`token_weights`."""
    model.eval()
    maps = model.image.forward_maps(image)
    if method == "local":
        regions = F.normalize(model.image_local_proj(cells(maps.local)), dim=-1)[0]  # [N, Dl]
        states = model.text.token_states(input_ids, attention_mask)
        words = F.normalize(model.text_local_proj(states), dim=-1)  # [P, L, Dl]
        keep = word_mask(attention_mask)
        keep = torch.where(keep.any(1, keepdim=True), keep, attention_mask.bool())  # a one-token phrase keeps it
        sim = torch.einsum("pld,nd->pln", words, regions)  # [P, L, N]
        weights = token_weights(keep, word_ids).to(sim.dtype)
        grid = (sim * weights[..., None]).sum(1)  # [P, N]: mean over the phrase's words
        shape = maps.local.shape[2:]
    else:
        if maps.last is None:
            raise InputError(
                f"image tower '{model.cfg.image.name}' does not pool per-cell features, so it has no global similarity "
                "map; train with loss.local_weight > 0 for local word-region maps"
            )
        patch = F.normalize(model.image_proj(cells(maps.last)), dim=-1)[0]  # [M, D]
        text = model.encode_text(input_ids, attention_mask)  # [P, D]
        grid = text @ patch.t()  # [P, M]
        shape = maps.last.shape[2:]
    return grid.float().reshape(grid.shape[0], *shape)


def to_image(grid: torch.Tensor, input_size: tuple[int, ...], image_shape: tuple[int, int] | None) -> np.ndarray:
    """[P, *grid] -> [P, *image]: upsampled to the model input (bicubic in 2-D, trilinear in 3-D); for 2-D also
    cropped to the image inside the padding (the short side was padded symmetrically after scaling the long side to
    the input size) and resized to ``image_shape`` (rows, cols) of the decoded image."""
    # 2-D maps upsample bicubically: a bilinear map's maximum always sits on a cell centre, so a lesion smaller than
    # a cell is pointed at only when it covers one; bicubic lets the neighbouring cells move the peak within its cell
    mode = "bicubic" if grid.ndim == 3 else "trilinear"
    full = F.interpolate(grid[:, None], size=input_size, mode=mode, align_corners=False)[:, 0]
    if grid.ndim != 3 or image_shape is None:
        return full.numpy()
    rows, cols = image_shape
    size = input_size[0]
    scale = size / max(rows, cols)
    h, w = max(1, round(rows * scale)), max(1, round(cols * scale))
    top, left = (size - h) // 2, (size - w) // 2
    crop = full[:, top : top + h, left : left + w]
    return F.interpolate(crop[:, None], size=(rows, cols), mode="bicubic", align_corners=False)[:, 0].numpy()


class Grounder:
    """Heat maps of phrases on images for one checkpoint (loaded once): ``ground(image, phrases)``."""

    def __init__(self, embedder: Embedder | str | Path, *, method: str = "auto", device: str = "cpu") -> None:
        self.embedder = embedder if isinstance(embedder, Embedder) else Embedder(embedder, device=device)
        self.method = resolve_method(self.embedder.model, method)
        self._transforms = None

    @property
    def model(self) -> MedClip:
        return self.embedder.model

    def _input(self, image: str | Path) -> tuple[torch.Tensor, np.ndarray]:
        """(model input [1, C, *S], decoded image for display: [H, W] in [0, 1], or the input's first channel)."""
        from medclip.data.transforms import build_transforms

        recipe = self.model.preprocess
        if self._transforms is None:
            self._transforms = build_transforms(recipe, train=False)
        path = str(image)
        tensor = torch.as_tensor(np.asarray(self._transforms({"image": path})["image"]))[None]
        if recipe.spatial_dims == 3:
            shown = tensor[0, 0].numpy()
            return tensor, (shown - shown.min()) / max(float(np.ptp(shown)), 1e-6)
        from medclip.io.dicom import load_image

        pixels, _ = load_image(path, window_index=recipe.window_index)
        return tensor, 1.0 - pixels if recipe.invert else pixels

    def ground(self, image: str | Path, phrases: str | list[str]) -> list[Grounding]:
        """One image, one or more phrases -> a :class:`Grounding` per phrase, in order."""
        phrases = [phrases] if isinstance(phrases, str) else list(phrases)
        if not phrases or any(not p.strip() for p in phrases):
            raise InputError('grounding needs a non-empty phrase (e.g. "left pleural effusion")')
        tensor, shown = self._input(image)
        device = self.embedder.device
        enc = tokenize(self.embedder.tokenizer, phrases, max_length=self.embedder.max_length)
        word_ids = _word_ids(self.embedder.tokenizer, phrases, enc["input_ids"].shape[1], self.embedder.max_length)
        grid = grid_maps(
            self.model,
            tensor.to(device),
            enc["input_ids"].to(device),
            enc["attention_mask"].to(device),
            method=self.method,
            word_ids=None if word_ids is None else word_ids.to(device),
        ).cpu()
        heat = to_image(grid, tuple(tensor.shape[2:]), shown.shape if shown.ndim == 2 else None)
        return [Grounding(p, heat[i], grid[i].numpy(), self.method, shown) for i, p in enumerate(phrases)]


def _word_ids(tokenizer, phrases: list[str], length: int, max_length: int) -> torch.Tensor | None:
    """[P, L] word index of each token (-1 for special and padding tokens), from a fast tokenizer; None otherwise."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    enc = tokenizer(phrases, padding="max_length", truncation=True, max_length=length if length else max_length)
    rows = [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(phrases))]
    return torch.tensor(rows, dtype=torch.long)


def _slug(text: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:48] or "phrase"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def ground_to_files(cfg) -> dict:
    """``medclip ground``: one overlay PNG per phrase and ``grounding.json`` (the grids and peaks) in ``cfg.out_dir``.

    The image's path is not written anywhere (hospital paths carry patient identifiers).
    """
    from medclip.eval.plots import overlay_png

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grounder = Grounder(cfg.checkpoint, method=cfg.method, device=cfg.device)
    results, taken = [], set()
    for g in grounder.ground(cfg.image, list(cfg.phrases)):
        name = f"ground_{_slug(g.phrase, taken)}.png"
        image, heat = (g.image, g.heatmap) if g.heatmap.ndim == 2 else _peak_slice(g)
        overlay_png(image, heat, out / name, title=f"{g.phrase} ({g.method} map)")
        results.append({**g.to_json(), "overlay": name})
    payload = {"method": grounder.method, "phrases": results}
    (out / "grounding.json").write_text(json.dumps(payload, indent=2))
    return {
        **payload,
        "json": str(out / "grounding.json"),
        "phrases": [{**r, "overlay": str(out / r["overlay"])} for r in results],
    }


def _peak_slice(g: Grounding) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D map shown on its peak's axial slice."""
    k = g.peak[0]
    return g.image[k], g.heatmap[k]


def evaluate_grounding(
    embedder: Embedder,
    csv_path: str | Path,
    *,
    method: str = "auto",
    n_bootstrap: int = 1000,
    seed: int = 0,
    plot_path: Path | None = None,
    examples: int = 12,
    image_root: str | Path | None = None,
    show_progress: bool = False,
) -> dict:
    """Pointing game, CNR and mIoU (best threshold) with bootstrap CIs on (image, phrase, box) rows, MS-CXR style,
    next to the same figures for random maps (the floor); ``plot_path``: a PNG grid of the first ``examples`` rows;
    ``image_root``: where the CSV's relative image paths start (default: the CSV's folder)."""
    from tqdm import tqdm

    from medclip.eval.grounding_metrics import box_mask, grounding_scores, random_floor, read_grounding_csv

    items = read_grounding_csv(csv_path, image_root=image_root)
    if not items:
        raise InputError(f"{csv_path}: no (image, phrase, box) rows")
    missing = [item for item in items if "://" not in item.image and not Path(item.image).exists()]
    if missing:  # checked before any map: a figure over part of the rows is not the benchmark's figure
        rows = ", ".join(str(item.rows[0]) for item in missing[:5]) + (", ..." if len(missing) > 5 else "")
        where = Path(image_root) if image_root is not None else Path(csv_path).parent
        raise InputError(
            f"{csv_path}: {len(missing)} of {len(items)} items name an image that does not exist (rows {rows}); "
            f"relative paths start from {where} (set it with --image-root)"
        )
    grounder = Grounder(embedder, method=method)
    by_image: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_image.setdefault(item.image, []).append(i)
    maps: list[np.ndarray | None] = [None] * len(items)
    shown: dict[int, np.ndarray] = {}
    for image, rows in tqdm(by_image.items(), desc="grounding", unit="image", disable=not show_progress):
        for i, g in zip(rows, grounder.ground(image, [items[i].phrase for i in rows]), strict=True):
            maps[i] = g.heatmap
            if i < examples:
                shown[i] = g.image
    masks = [box_mask(item.boxes, m.shape, box_image_size=item.image_size) for item, m in zip(items, maps, strict=True)]
    categories = [item.category or "all" for item in items]
    out = {
        "method": grounder.method,
        "csv": Path(csv_path).name,
        **grounding_scores(maps, masks, categories=categories, n_resamples=n_bootstrap, seed=seed),
        # i.i.d. noise maps score the same at any resolution: the floor is drawn on masks of at most ~128 px a side
        "random_floor": random_floor([_coarse(m) for m in masks], seed=seed, n_maps=3, n_resamples=n_bootstrap),
    }
    plots = {}
    if plot_path is not None and shown:
        from medclip.eval.grounding_metrics import pointing_hit
        from medclip.eval.plots import plot_grounding_grid

        grid = []
        for i in sorted(shown):
            hit = pointing_hit(maps[i], masks[i])
            scale = _box_scale(items[i].image_size, maps[i].shape)
            boxes = [tuple(v * s for v, s in zip(b, scale * 2, strict=False)) for b in items[i].boxes]
            title = f"{items[i].phrase} ({'hit' if hit else 'miss'})"
            grid.append({"image": shown[i], "heatmap": maps[i], "boxes": boxes, "title": title})
        if plot_grounding_grid(grid, plot_path):
            plots["grounding_examples"] = plot_path.name
    out["_plots"] = plots
    return out


def _coarse(mask: np.ndarray, side: int = 128) -> np.ndarray:
    step = max(1, max(mask.shape) // side)
    coarse = mask[tuple(slice(None, None, step) for _ in mask.shape)]
    return coarse if coarse.any() else mask


def _box_scale(box_image_size: tuple[int, int] | None, shape: tuple[int, ...]) -> tuple[float, float]:
    """(x, y) factors from the boxes' image size (width, height) to a map of ``shape`` (rows, cols)."""
    if box_image_size is None or len(shape) != 2:
        return (1.0, 1.0)
    return (shape[1] / box_image_size[0], shape[0] / box_image_size[1])
