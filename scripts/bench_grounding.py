"""Grounding on the demo, side by side in one run: the CXR demo trained with and without the local word-region loss.

Both runs use the same synthetic archive (same seed), the same split and the same recipe except ``loss.local_weight``;
each is evaluated on the held-out patients' lesion boxes (``grounding.csv`` of the archive): pointing game, CNR and
mIoU with bootstrap CIs, next to random maps (the floor), and the global zero-shot macro AUROC of each. Prints JSON.

The local run uses 128-wide local heads on the image tower's stride-8 stage (a 16 x 16 region grid at the demo's
128 px; ``--local-overrides`` changes that). The global run's maps come from the global head on each cell.

    python scripts/bench_grounding.py --out runs/bench_grounding            # about 26 minutes on 2 CPU cores
    python scripts/bench_grounding.py --studies 600 train.epochs=8          # a quicker, noisier look
    python scripts/bench_grounding.py train.epochs=8 --local-overrides model.local_dim=128   # overrides first
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from medclip.cli import configure_logging
from medclip.config import DemoCfg
from medclip.demo import run_demo

KEYS = ("pointing_game", "cnr", "miou")


def figures(results: dict) -> dict:
    gr = results.get("grounding") or {}
    out = {
        "macro_auroc": results["zero_shot"]["macro_auroc"],
        "grounding_method": gr.get("method"),
        "n_boxes": gr.get("n"),
        **{k: {"value": gr[k]["value"], "ci": gr[k]["ci"]} for k in KEYS if k in gr},
        "random_floor": {k: gr["random_floor"][k]["value"] for k in KEYS if k in gr.get("random_floor", {})},
        "by_category": {c: {k: part[k]["value"] for k in KEYS} for c, part in gr.get("by_category", {}).items()},
        "train_s": results["timings"]["train_s"],
    }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/bench_grounding"))
    p.add_argument("--studies", type=int, default=0, help="archive size (0: the demo's 2,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--local-weight", type=float, default=1.0, help="loss.local_weight of the local run")
    p.add_argument(
        "--local-overrides",
        nargs="*",
        default=["model.local_dim=128", "model.image.local_stride=8"],
        help="overrides of the local run only (default: 128-wide local heads on the stride-8 stage, 16 x 16 at 128 px)",
    )
    p.add_argument("overrides", nargs="*", default=[], help="training-config overrides for both runs")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging(quiet=True)  # as `medclip -q demo`: the JSON is the output
    runs = {
        "without_local_loss": ["loss.local_weight=0"],
        "with_local_loss": [f"loss.local_weight={args.local_weight}", *args.local_overrides],
    }
    result: dict = {
        "cpu": platform.processor() or platform.machine(),
        "studies": args.studies or "demo default",
        "overrides": {name: [*args.overrides, *extra] for name, extra in runs.items()},
    }
    t0 = time.perf_counter()
    for name, extra in runs.items():
        cfg = DemoCfg(modality="cxr", out_dir=str(args.out / name), studies=args.studies, seed=args.seed)
        result[name] = figures(run_demo(cfg, overrides=[*args.overrides, *extra], show_progress=False))
    base, local = result["without_local_loss"], result["with_local_loss"]
    result["macro_auroc_change"] = round(local["macro_auroc"] - base["macro_auroc"], 4)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    (args.out / "bench_grounding.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
