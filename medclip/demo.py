"""``medclip demo``: synthetic archive -> manifest -> train -> zero-shot + retrieval on held-out patients."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medclip.config import DemoCfg, EvalCfg, load_config
from medclip.eval.pipeline import evaluate
from medclip.eval.report import write_results
from medclip.ingest.manifest import build_manifest, write_manifest
from medclip.registry import Registry
from medclip.synth.ct.archive import synth_ct
from medclip.synth.cxr.archive import synth_cxr
from medclip.synth.sketch.archive import synth_sketch
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
    modalities: tuple[str, ...] = ()  # () -> the layout's default (build_manifest)
    layout_options: dict = field(default_factory=dict)


# modality -> its demo; `medclip demo --modality` and `medclip synth` offer these names.
DEMOS: Registry[DemoSpec] = Registry("demo modality")
DEMOS.register("cxr")(
    DemoSpec(
        lambda out, n, seed: synth_cxr(out, studies=n, seed=seed),
        "demo_cxr",
        "dicom",
        "synthetic chest X-ray archive",
        2000,
    )
)
DEMOS.register("ct")(
    DemoSpec(
        lambda out, n, seed: synth_ct(out, studies=n, seed=seed),
        "ct_demo",
        "dicom-ct",
        "synthetic chest CT archive",
        1500,
    )
)
DEMOS.register("sketch")(
    DemoSpec(
        lambda out, n, seed: synth_sketch(out, n=n, seed=seed),
        "sketch",
        "csv",
        "synthetic body-map sketches",
        1000,
        modalities=("SKETCH",),
        layout_options={"modality": "SKETCH"},
    )
)


def demo_out_dir(cfg: DemoCfg) -> Path:
    """``cfg.out_dir``, else runs/demo (cxr) or runs/demo_<modality>."""
    if cfg.out_dir:
        return Path(cfg.out_dir)
    return Path("runs/demo" if cfg.modality == "cxr" else f"runs/demo_{cfg.modality}")


def split_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``demo.*`` overrides (for :class:`DemoCfg`, prefix dropped) apart from the training config's."""
    demo = [o.removeprefix("demo.") for o in overrides if o.startswith("demo.")]
    return demo, [o for o in overrides if not o.startswith("demo.")]


def held_out_boxes(archive: Path, out: Path, *, split: str) -> Path | None:
    """The archive's lesion boxes (``grounding.csv``, MS-CXR layout) on images of ``split``, written to
    ``out/grounding_<split>.csv`` with absolute image paths; None when the archive has no boxes."""
    import pandas as pd

    from medclip.ingest.manifest import read_manifest

    source = archive / "grounding.csv"
    if not source.is_file():
        return None
    boxes = pd.read_csv(source, dtype=str, keep_default_na=False)
    rows, _ = read_manifest(out / "manifest", columns=["image_path", "split"])
    held = {str(Path(p).resolve()) for p in rows.loc[rows["split"] == split, "image_path"]} if split != "all" else None
    boxes["path"] = [str((archive / p).resolve()) for p in boxes["path"]]
    if held is not None:
        boxes = boxes[boxes["path"].isin(held)]
    if boxes.empty:
        return None
    target = out / f"grounding_{split}.csv"
    boxes.to_csv(target, index=False)
    return target


def run_demo(cfg: DemoCfg, *, overrides: list[str] | tuple[str, ...] = (), show_progress: bool = True) -> dict:
    """Run the whole flow for ``cfg.modality``; writes ``results.json`` / ``results.md`` and PNG plots.

    ``overrides`` are dotted keys of the modality's training config (``train.epochs=3``).
    """
    spec = DEMOS.get(cfg.modality)
    out = demo_out_dir(cfg)
    seed = cfg.seed
    # The training config first: a mistyped override fails before minutes of synthesis, not after.
    run_cfg = load_config(
        spec.config,
        [f"data.manifest={out / 'manifest'}", f"train.out_dir={out / 'train'}", f"train.seed={seed}", *overrides],
    )
    timings: dict[str, float] = {}
    t = time.perf_counter()
    archive = out / "archive"
    summary = spec.synth(archive, cfg.studies or spec.default_studies, seed)
    timings["synth_s"] = time.perf_counter() - t
    logger.info("[1/4] %s: %s -> %s", spec.title, {k: v for k, v in summary.items() if isinstance(v, int)}, archive)

    t = time.perf_counter()
    result = build_manifest(
        archive,
        layout=spec.layout,
        salt=DEMO_SALT,
        modalities=spec.modalities,
        layout_options=spec.layout_options,
        show_progress=show_progress,
    )
    write_manifest(result, out / "manifest")
    c = result.meta["counts"]
    timings["manifest_s"] = time.perf_counter() - t
    logger.info(
        "[2/4] manifest: inputs %d = kept %d + rejected %d; splits %s",
        c["inputs"],
        c["kept"],
        c["rejected"],
        c["splits"],
    )

    t = time.perf_counter()
    logger.info(
        "[3/4] training %s + %s for %d epochs", run_cfg.model.image.name, run_cfg.model.text.name, run_cfg.train.epochs
    )
    final = train(run_cfg, show_progress=show_progress)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    # out_dir: cache embeddings there and draw the ROC, retrieval-grid and training-curve PNGs next to results.md
    options = asdict(run_cfg.eval) | {"labels": str(archive / "labels.csv")}
    boxes = held_out_boxes(archive, out, split=run_cfg.eval.split)
    if boxes is not None:  # the phantoms know where every lesion is: grounding on the held-out patients' images
        options |= {"grounding_csv": str(boxes), "tasks": [*options["tasks"], "grounding"]}
    eval_cfg = EvalCfg(**options, checkpoint=str(final), manifest=str(out / "manifest"), out_dir=str(out))
    results = evaluate(eval_cfg, show_progress=show_progress)
    timings["eval_s"] = time.perf_counter() - t
    results["timings"] = {k: round(v, 1) for k, v in timings.items()}
    results["archive"] = summary
    results["modality"] = cfg.modality
    write_results(results, out, title=f"medclip demo ({spec.title})")
    logger.info("[4/4] evaluated on held-out patients; timings (s): %s", json.dumps(results["timings"]))
    results["checkpoint"] = str(final)
    return results
