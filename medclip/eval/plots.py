"""PNG plots for evaluation reports: ROC curves with bootstrap bands, a retrieval grid, training and probe curves,
phrase-grounding heat maps.

Figures are drawn with ``matplotlib.figure.Figure`` (no pyplot state, no backend switch), so calling these from a
notebook or a server leaves the caller's matplotlib setup alone.
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from medclip.eval.metrics import auroc_auprc, labelled, roc_band

logger = logging.getLogger(__name__)

TRAINING_KEYS = ("loss", "lr", "temperature", "grad_norm")


def _grid(n: int, *, ncols: int = 4, size: float = 3.0) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


def plot_roc_curves(
    scores: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    out_path: str | Path,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    title: str = "ROC curves (95% bootstrap band)",
) -> Path | None:
    """One ROC panel per finding that has both classes, with AUROC, its CI band and the chance line."""
    findings = [f for f in scores if f in labels and len(np.unique(labelled(labels[f], scores[f])[0])) == 2]
    if not findings:
        logger.info("no finding has both classes labelled: ROC plot skipped")
        return None
    fig, axes = _grid(len(findings))
    for ax, f in zip(axes, findings, strict=True):
        y, s = labelled(labels[f], scores[f])
        band = roc_band(y, s, n_resamples=n_bootstrap, seed=seed)
        auroc = auroc_auprc(y, s)[0]
        ax.fill_between(band["fpr"], band["lo"], band["hi"], alpha=0.25, color="tab:blue", linewidth=0)
        ax.plot(band["fpr"], band["tpr"], color="tab:blue", label=f"AUROC {auroc:.3f}")
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set(
            title=f"{f} (n={len(y)}, +{int(y.sum())})",
            xlabel="false positive rate",
            ylabel="true positive rate",
            xlim=(0, 1),
            ylim=(0, 1.01),
            aspect="equal",
        )
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    return _save(fig, out_path)


def load_thumbnail(path: str | Path, size: int = 96) -> np.ndarray:
    """A [size, size] grey thumbnail in [0, 1] of a DICOM / PNG / JPEG file, or of the middle axial slice (lung
    window) of a CT series folder or NIfTI volume; black where it cannot be read."""
    from PIL import Image

    from medclip.data.volume_transforms import read_volume, volume_is_input
    from medclip.io.dicom import load_image

    try:
        if volume_is_input(path):
            hu, _ = read_volume(path)  # [D, H, W] in HU
            pixels = np.clip((hu[hu.shape[0] // 2] + 1350.0) / 1500.0, 0, 1)  # window centre -600, width 1500
        else:
            pixels, _ = load_image(path)
    except Exception as exc:  # a plot must not fail on one unreadable file; say which one
        logger.warning("thumbnail of %s failed: %s", path, exc)
        return np.zeros((size, size))
    img = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    img.thumbnail((size, size))
    canvas = np.zeros((size, size))
    h, w = img.size[1], img.size[0]
    canvas[(size - h) // 2 : (size - h) // 2 + h, (size - w) // 2 : (size - w) // 2 + w] = np.asarray(img) / 255.0
    return canvas


def plot_retrieval_grid(
    queries: list[str],
    results: list[list[str]],
    out_path: str | Path,
    *,
    relevant: list[list[bool]] | None = None,
    thumb: int = 96,
) -> Path | None:
    """Rows of ``query text -> top images``; a green / red frame marks images with / without the queried finding."""
    if not queries:
        return None
    k = max(len(r) for r in results)
    fig = Figure(figsize=(1.6 * (k + 2), 1.7 * len(queries)), layout="constrained")
    axes = fig.subplots(len(queries), k + 1, squeeze=False, width_ratios=[2.5] + [1] * k)
    for i, (query, paths) in enumerate(zip(queries, results, strict=True)):
        axes[i][0].set_axis_off()
        axes[i][0].text(0.0, 0.5, query, wrap=True, va="center", fontsize=9)
        for j in range(k):
            ax = axes[i][j + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(paths):
                ax.set_axis_off()
                continue
            ax.imshow(load_thumbnail(paths[j], thumb), cmap="gray", vmin=0, vmax=1)
            if relevant is not None:
                color = "tab:green" if relevant[i][j] else "tab:red"
                for spine in ax.spines.values():
                    spine.set(color=color, linewidth=3)
            if i == 0:
                ax.set_title(f"#{j + 1}", fontsize=9)
    fig.suptitle("text -> image retrieval (green: image labelled with the finding)")
    return _save(fig, out_path)


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a ``metrics.jsonl`` file (bad lines skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict) and "step" in r]


def plot_training_curves(metrics_jsonl: str | Path, out_path: str | Path) -> Path | None:
    """Loss, learning rate, temperature (and grad norm) against step from a run's ``metrics.jsonl``."""
    path = Path(metrics_jsonl)
    records = read_metrics(path) if path.is_file() else []
    keys = [k for k in TRAINING_KEYS if any(isinstance(r.get(k), int | float) for r in records)]
    if not keys:
        logger.info("no training metrics in %s: training-curve plot skipped", path)
        return None
    fig, axes = _grid(len(keys), ncols=len(keys))
    for ax, key in zip(axes, keys, strict=True):
        pts = np.array([(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)], dtype=float)
        ax.plot(pts[:, 0], pts[:, 1], marker="." if len(pts) < 30 else None)
        ax.set(title=key, xlabel="step")
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    fig.suptitle(f"training curves ({path.parent.name}/{path.name})")
    return _save(fig, out_path)


def plot_probe(probe: dict, out_path: str | Path, *, zero_shot_macro: float | None = None) -> Path | None:
    """Macro AUROC per probe setting (label fractions, k-shot), with the zero-shot macro AUROC as a line."""
    names = [n for n, s in probe["settings"].items() if s["macro_auroc"] is not None]
    if not names:
        return None
    fig = Figure(figsize=(1.0 * len(names) + 3, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.bar(names, [probe["settings"][n]["macro_auroc"] for n in names], color="tab:blue", label="linear probe")
    if zero_shot_macro is not None:
        ax.axhline(zero_shot_macro, color="tab:orange", ls="--", label=f"zero-shot {zero_shot_macro:.3f}")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set(ylim=(0, 1), ylabel="macro AUROC", title="linear probe vs zero-shot (same split)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out_path)


def _draw_overlay(ax, image: np.ndarray, heatmap: np.ndarray, boxes: Sequence[Sequence[float]], *, alpha: float):
    """Image in grey, heat map stretched over it in jet, boxes (x, y, w, h in image pixels) as rectangles."""
    image = np.asarray(image, dtype=float)
    h, w = image.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # pixel j spans [j - 0.5, j + 0.5] in imshow's coordinates
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, extent=extent)
    heat = ax.imshow(np.asarray(heatmap, dtype=float), cmap="jet", alpha=alpha, extent=extent, interpolation="bilinear")
    for x, y, bw, bh in boxes:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, edgecolor="white", linewidth=1.5))
    ax.set(xlim=(-0.5, w - 0.5), ylim=(h - 0.5, -0.5), xticks=[], yticks=[])
    return heat


def plot_grounding_grid(items: list[dict], out_path: str | Path, *, ncols: int = 4) -> Path | None:
    """Panels of phrase grounding: each item dict has "image" (2-D in [0, 1]), "heatmap" (2-D; stretched over the
    image when its shape differs), "boxes" ((x, y, w, h) in the image's pixels) and "title" (phrase, hit / miss)."""
    if not items:
        return None
    fig, axes = _grid(len(items), ncols=ncols)
    for ax, item in zip(axes, items, strict=True):
        _draw_overlay(ax, item["image"], item["heatmap"], item.get("boxes", ()), alpha=0.45)
        ax.set_title(textwrap.fill(str(item.get("title", "")), 40), fontsize=8)
    fig.suptitle("phrase grounding (boxes: ground truth)")
    return _save(fig, out_path)


def overlay_png(
    image: np.ndarray,
    heatmap: np.ndarray,
    out_path: str | Path,
    *,
    boxes: Sequence[Sequence[float]] = (),
    title: str = "",
    colorbar: bool = True,
) -> Path:
    """One PNG of the heat map (jet, alpha 0.45) over the grey image, about the image's size (3 to 10 inches at
    100 dpi), with optional boxes ((x, y, w, h) in image pixels), title and colour bar."""
    h, w = np.asarray(image).shape[:2]
    scale = min(max(max(h, w) / 100.0, 3.0), 10.0) / max(h, w)
    fig = Figure(
        figsize=(w * scale + (1.0 if colorbar else 0.0), h * scale + (0.4 if title else 0.0)), layout="constrained"
    )
    ax = fig.subplots()
    heat = _draw_overlay(ax, image, heatmap, boxes, alpha=0.45)
    if title:
        ax.set_title(textwrap.fill(title, 60), fontsize=9)
    if colorbar:
        fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.02)
    return _save(fig, out_path)


def _save(fig: Figure, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
