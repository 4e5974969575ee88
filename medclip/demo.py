"""``medclip demo``: synthetic archive -> manifest -> train -> zero-shot + retrieval on held-out patients."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from medclip.config import load_config
from medclip.data.manifest import build_manifest, write_manifest
from medclip.data.synthetic import synth_cxr
from medclip.eval.pipeline import evaluate
from medclip.eval.report import write_results
from medclip.train.trainer import train

logger = logging.getLogger(__name__)

DEMO_SALT = "medclip-demo"  # the demo's patients are synthetic; a fixed salt keeps its splits reproducible


def run_demo(
    out_dir: str | Path,
    *,
    studies: int = 1000,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    show_progress: bool = True,
) -> dict:
    """Run the whole flow; writes ``results.json`` / ``results.md`` and PNG plots into ``out_dir``."""
    out = Path(out_dir)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    archive = out / "archive"
    summary = synth_cxr(archive, studies=studies, seed=seed)
    timings["synth_s"] = time.perf_counter() - t
    logger.info("[1/4] synthetic archive: %d patients, %d studies, %d DICOM images -> %s",
                summary["patients"], summary["studies"], summary["images"], archive)  # fmt: skip

    t = time.perf_counter()
    result = build_manifest(archive, salt=DEMO_SALT, show_progress=show_progress)
    write_manifest(result, out / "manifest")
    c = result.meta["counts"]
    timings["manifest_s"] = time.perf_counter() - t
    logger.info("[2/4] manifest: inputs %d = kept %d + rejected %d; splits %s", c["inputs"], c["kept"], c["rejected"],
                c["splits"])  # fmt: skip

    t = time.perf_counter()
    cfg = load_config("demo_cxr", [f"data.manifest={out / 'manifest'}", f"train.out_dir={out / 'train'}",
                                   f"train.seed={seed}", *overrides])  # fmt: skip
    logger.info("[3/4] training %s + %s for %d epochs", cfg.model.image.name, cfg.model.text.name, cfg.train.epochs)
    final = train(cfg, show_progress=show_progress)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    # out_dir: cache embeddings there and draw the ROC, retrieval-grid and training-curve PNGs next to results.md
    results = evaluate(final, out / "manifest", split=cfg.eval.split, labels_csv=archive / "labels.csv",
                       prompts=cfg.eval.prompts, show_progress=show_progress, out_dir=out)  # fmt: skip
    timings["eval_s"] = time.perf_counter() - t
    results["timings"] = {k: round(v, 1) for k, v in timings.items()}
    results["archive"] = summary
    write_results(results, out, title="medclip demo (synthetic chest X-ray archive)")
    logger.info("[4/4] evaluated on held-out patients; timings (s): %s", json.dumps(results["timings"]))
    results["checkpoint"] = str(final)
    return results
