"""``medclip demo``: synthetic archive -> manifest -> train -> zero-shot + retrieval on held-out patients."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medclip.config import load_config
from medclip.data.manifest import build_manifest, write_manifest
from medclip.eval.pipeline import evaluate
from medclip.eval.report import write_results
from medclip.train.trainer import train

logger = logging.getLogger(__name__)

DEMO_SALT = "medclip-demo"  # the demo's patients are synthetic; a fixed salt keeps its splits reproducible


@dataclass(frozen=True)
class DemoSpec:
    """One modality's demo: how to synthesise its archive, read it into a manifest, and which preset trains it."""

    synth: Callable[..., dict]  # synth(out_dir, count, seed) -> summary
    config: str  # packaged config name
    layout: str
    title: str
    default_studies: int
    modalities: tuple[str, ...] | None = ("CR", "DX", "DR")
    layout_options: dict = field(default_factory=dict)


def _synth_cxr(out: Path, count: int, seed: int) -> dict:
    from medclip.data.synthetic import synth_cxr

    return synth_cxr(out, studies=count, seed=seed)


def _synth_ct(out: Path, count: int, seed: int) -> dict:
    from medclip.data.synth_ct import synth_ct

    return synth_ct(out, studies=count, seed=seed)


def _synth_sketch(out: Path, count: int, seed: int) -> dict:
    from medclip.data.synth_sketch import synth_sketch

    return synth_sketch(out, n=count, seed=seed)


DEMOS: dict[str, DemoSpec] = {
    "cxr": DemoSpec(_synth_cxr, "demo_cxr", "dicom", "synthetic chest X-ray archive", 2000),
    "ct": DemoSpec(_synth_ct, "ct_demo", "dicom-ct", "synthetic chest CT archive", 1500, modalities=("CT",)),
    "sketch": DemoSpec(_synth_sketch, "sketch", "csv", "synthetic body-map sketches", 1000, modalities=("SKETCH",),
                       layout_options={"modality": "SKETCH"}),
}  # fmt: skip


def run_demo(
    out_dir: str | Path,
    *,
    modality: str = "cxr",
    studies: int | None = None,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    show_progress: bool = True,
) -> dict:
    """Run the whole flow for ``modality``; writes ``results.json`` / ``results.md`` and PNG plots into ``out_dir``."""
    if modality not in DEMOS:
        raise ValueError(f"demo modality '{modality}' is not one of {sorted(DEMOS)}")
    spec = DEMOS[modality]
    out = Path(out_dir)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    archive = out / "archive"
    summary = spec.synth(archive, studies or spec.default_studies, seed)
    timings["synth_s"] = time.perf_counter() - t
    logger.info("[1/4] %s: %s -> %s", spec.title, {k: v for k, v in summary.items() if isinstance(v, int)}, archive)

    t = time.perf_counter()
    result = build_manifest(archive, layout=spec.layout, salt=DEMO_SALT, modalities=spec.modalities,
                            layout_options=spec.layout_options, show_progress=show_progress)  # fmt: skip
    write_manifest(result, out / "manifest")
    c = result.meta["counts"]
    timings["manifest_s"] = time.perf_counter() - t
    logger.info("[2/4] manifest: inputs %d = kept %d + rejected %d; splits %s", c["inputs"], c["kept"], c["rejected"],
                c["splits"])  # fmt: skip

    t = time.perf_counter()
    cfg = load_config(spec.config, [f"data.manifest={out / 'manifest'}", f"train.out_dir={out / 'train'}",
                                    f"train.seed={seed}", *overrides])  # fmt: skip
    logger.info("[3/4] training %s + %s for %d epochs", cfg.model.image.name, cfg.model.text.name, cfg.train.epochs)
    final = train(cfg, show_progress=show_progress)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    # out_dir: cache embeddings there and draw the ROC, retrieval-grid and training-curve PNGs next to results.md
    results = evaluate(final, out / "manifest", split=cfg.eval.split, labels_csv=archive / "labels.csv",
                       prompts=cfg.eval.prompts, mode=cfg.eval.mode, show_progress=show_progress,
                       out_dir=out)  # fmt: skip
    timings["eval_s"] = time.perf_counter() - t
    results["timings"] = {k: round(v, 1) for k, v in timings.items()}
    results["archive"] = summary
    results["modality"] = modality
    write_results(results, out, title=f"medclip demo ({spec.title})")
    logger.info("[4/4] evaluated on held-out patients; timings (s): %s", json.dumps(results["timings"]))
    results["checkpoint"] = str(final)
    return results
