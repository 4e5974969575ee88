"""Left/right mix-up test: a briefly trained sketch model tells left-sided from right-sided marks by text prompt.

Sketches carry exactly one of ``arm_left`` / ``arm_right`` / ``leg_left`` / ``leg_right``, drawn on the front and
back views (where the patient's left lies on opposite sides of the page), paired with a one-line description. After
a short training run, zero-shot scores for "pain in the left arm" vs "pain in the right arm" (and legs) on
held-out sketches must separate the sides; a model that ignored side (or mirrored the image) would score ~0.5.
"""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from medclip.config import EvalCfg, load_config
from medclip.eval.pipeline import evaluate
from medclip.ingest.manifest import build_manifest, write_manifest
from medclip.synth.sketch.archive import render_sketch
from medclip.train.trainer import train

REGIONS = ("arm_left", "arm_right", "leg_left", "leg_right")
TEXT = {
    "arm_left": "Sharp pain in the left arm.",
    "arm_right": "Sharp pain in the right arm.",
    "leg_left": "Aching pain in the left leg.",
    "leg_right": "Aching pain in the right leg.",
}


def _archive(root, n: int) -> None:
    (root / "images").mkdir(parents=True)
    rows, labels = [], []
    for i in range(n):
        rng = np.random.default_rng([7, i])
        region = REGIONS[i % len(REGIONS)]
        img = render_sketch({region: {"style": "fill", "views": ("front", "back")}}, rng, size=128)
        Image.fromarray(img).save(root / "images" / f"s{i:04d}.png")
        rows.append(
            {
                "study_id": f"S{i:04d}",
                "patient_id": f"P{i:04d}",
                "image_path": f"images/s{i:04d}.png",
                "text": TEXT[region],
            }
        )
        labels.append({"study_id": f"S{i:04d}", **{r: int(r == region) for r in REGIONS}})
    for name, table in (("sketches.csv", rows), ("labels.csv", labels)):
        with open(root / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)


def test_trained_sketch_model_tells_left_from_right(tmp_path):
    _archive(tmp_path / "archive", 240)
    result = build_manifest(
        tmp_path / "archive",
        layout="csv",
        salt="lr",
        modalities=("SKETCH",),
        layout_options={"modality": "SKETCH"},
        show_progress=False,
    )
    write_manifest(result, tmp_path / "manifest")
    cfg = load_config(
        "sketch",
        [
            f"data.manifest={tmp_path / 'manifest'}",
            f"train.out_dir={tmp_path / 'run'}",
            "preprocess.image_size=64",
            "train.epochs=12",
            "train.batch_size=32",
            "model.text.unlocked_layers=0",
        ],
    )
    final = train(cfg, show_progress=False)
    eval_cfg = EvalCfg(
        tasks=["zeroshot"],
        checkpoint=str(final),
        manifest=str(tmp_path / "manifest"),
        split="test",
        labels=str(tmp_path / "archive" / "labels.csv"),
        prompts="sketch",
        bootstrap=0,
    )
    results = evaluate(eval_cfg, show_progress=False)
    sides = results["zero_shot"]["laterality"]["pairs"]
    assert set(sides) == {"arm", "leg"}
    assert sides["arm"]["auroc"] > 0.9 and sides["leg"]["auroc"] > 0.9, sides
