"""Synthetic body-map symptom sketches paired with free-text symptom descriptions.

``synth_sketch(out_dir)`` writes::

    OUT/images/<study_id>.png   8-bit grayscale body map: FRONT view in the left half, BACK view in the right half
    OUT/sketches.csv            study_id, patient_id, date, image_path (relative to OUT), text
    OUT/labels.csv              study_id + one 0/1 column per region in REGIONS: ground truth for evaluation only
    OUT/README.txt

The drawings follow the anatomical convention of clinical pain diagrams: the front view faces the viewer, so the
patient's left is on the viewer's RIGHT; the back view shows the patient from behind, so the patient's left is on
the viewer's LEFT. Faces (eyes, mouth) are drawn on the front view only. ``sketches.csv`` is read by the ``csv``
archive layout (``medclip manifest OUT --layout csv``; the layout skips labels.csv, the ground truth). Everything is
driven by one seed, so reruns are byte-identical.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medclip.errors import InputError
from medclip.synth.common import prepare_archive, write_csv
from medclip.synth.sketch.render import MARK_STYLES, REGION_VIEWS, REGIONS, VIEWS, render_sketch
from medclip.synth.sketch.text import describe

logger = logging.getLogger(__name__)

__all__ = ["MARK_STYLES", "REGIONS", "VIEWS", "render_sketch", "synth_sketch"]


# ---------------------------------------------------------------------------------------------- planning
# relative chance of each region being marked; chest, abdomen and back complaints dominate intake forms
_WEIGHT = {"head": 1.0, "neck": 0.9, "chest_centre": 1.1, "upper_back": 1.0, "lower_back": 1.3}
_WEIGHT |= {r: 0.9 for r in REGIONS if r.startswith(("chest_l", "chest_r", "abdomen", "arm", "leg"))}
_WEIGHT |= {r: 0.6 for r in REGIONS if r.startswith(("hand", "foot"))}
# regions that tend to be marked together (angina, sciatica, radiculopathy, biliary colic, tension headache)
_COMBOS = (
    ("chest_left", "arm_left"),
    ("chest_centre", "arm_left"),
    ("chest_centre", "neck"),
    ("lower_back", "leg_left"),
    ("lower_back", "leg_right"),
    ("neck", "arm_right"),
    ("neck", "arm_left"),
    ("head", "neck"),
    ("abdomen_ruq", "upper_back"),
    ("leg_left", "leg_right"),
    ("hand_left", "hand_right"),
    ("foot_left", "foot_right"),
    ("abdomen_rlq", "abdomen_llq"),
    ("upper_back", "lower_back"),
)


@dataclass(frozen=True)
class _Sketch:
    idx: int
    study_id: str
    patient_id: str
    date: dt.date
    age: int
    sex: str
    regions: dict[str, dict]  # region -> mark spec for render_sketch


def _partner(region: str) -> str | None:
    for a, b in (
        ("_left", "_right"),
        ("_right", "_left"),
        ("_ruq", "_luq"),
        ("_luq", "_ruq"),
        ("_rlq", "_llq"),
        ("_llq", "_rlq"),
    ):
        if region.endswith(a):
            return region[: -len(a)] + b
    return None


def _sample_regions(rng: np.random.Generator, prior: list[str]) -> list[str]:
    """1-3 (sometimes 4) regions; some follow typical combinations, bilateral pairs, or persist from the last visit."""
    k = int(rng.choice([1, 2, 3, 4], p=[0.32, 0.36, 0.24, 0.08]))
    chosen: list[str] = []
    if prior and rng.random() < 0.5:
        chosen.append(str(rng.choice(prior)))
    if rng.random() < 0.35:
        chosen += [r for r in _COMBOS[int(rng.integers(len(_COMBOS)))] if r not in chosen]
    elif chosen and (mate := _partner(chosen[0])) and rng.random() < 0.25:
        chosen.append(mate)
    weights = np.array([_WEIGHT[r] for r in REGIONS])
    while len(chosen) < k:
        p = np.where([r in chosen for r in REGIONS], 0.0, weights)
        chosen.append(REGIONS[int(rng.choice(len(REGIONS), p=p / p.sum()))])
        if len(chosen) < k and (mate := _partner(chosen[-1])) and mate not in chosen and rng.random() < 0.2:
            chosen.append(mate)
    return [r for r in REGIONS if r in chosen[:4]]


def _sample_specs(regions: list[str], rng: np.random.Generator) -> dict[str, dict]:
    """Mark style (often one per sketch: one person drew it), stroke width and the views each mark is drawn on."""
    style, width = str(rng.choice(MARK_STYLES)), float(rng.uniform(1, 3.5))
    specs = {}
    for region in regions:
        views = REGION_VIEWS[region]
        if len(views) > 1:
            views = (("front",), ("back",), VIEWS)[int(rng.choice(3, p=[0.5, 0.2, 0.3]))]
        own = rng.random() < 0.4
        specs[region] = {"style": str(rng.choice(MARK_STYLES)) if own else style, "views": views, "width": width}
    return specs


def _plan(n: int, seed: int) -> list[_Sketch]:
    """Patients with 1-3 sketches each; a smaller ``n`` gives a prefix of a larger plan."""
    rng = np.random.default_rng([seed, 1])
    plan: list[_Sketch] = []
    patient_no = 0
    while len(plan) < n:
        patient_no += 1
        sex, age = "M" if rng.random() < 0.5 else "F", int(rng.integers(18, 90))
        date, prior = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3000))), []
        for k in range(int(rng.choice([1, 2, 3], p=[0.6, 0.28, 0.12]))):
            if len(plan) >= n:
                break
            days = 0 if k == 0 else int(rng.integers(1, 300))
            date += dt.timedelta(days=days)
            age += days // 365
            regions = _sample_regions(rng, prior)
            plan.append(
                _Sketch(
                    len(plan),
                    f"SK{len(plan) + 1:06d}",
                    f"SKP{patient_no:05d}",
                    date,
                    age,
                    sex,
                    _sample_specs(regions, rng),
                )
            )
            prior = regions
    return plan


# ---------------------------------------------------------------------------------------------- archive
_README_MARK = "SYNTHETIC body-map symptom sketch archive written by medclip.synth.sketch.archive"
_README = """ ({n} sketches, seed {seed}).

Nothing here comes from a real patient. Each image is a procedural drawing of a front (left half) and back
(right half) body outline with symptom areas marked by shading, hatching, scribbles, circles or dots. Anatomical
convention: in the FRONT view the patient's left is on the viewer's right; in the BACK view it is on the viewer's
left. Each sketch is paired with a generated clinical-intake style symptom description consistent with the marks.

images/<study_id>.png   8-bit grayscale, one sketch per study; patients may have 2-3 sketches over time
sketches.csv            study_id, patient_id, date, image_path (relative to this folder), text
labels.csv              ground truth for evaluation only (never train on it): one 0/1 column per body region

Build a manifest (the csv layout reads sketches.csv; labels.csv is never an input):
    medclip manifest <this folder> --layout csv --out MANIFEST_DIR
"""


def synth_sketch(out_dir: str | Path, *, n: int = 1000, seed: int = 0) -> dict:
    """Write the synthetic body-map sketch archive (PNG sketches + descriptions + labels) to ``out_dir``.

    Args:
        out_dir: Target directory; created if missing. A previous synthetic sketch archive there is replaced.
        n: Number of sketches (one study each).
        seed: Controls everything; the same seed gives byte-identical PNGs and CSVs.

    Returns:
        {"sketches", "patients", "prevalence": {region: fraction of sketches}, "out_dir", "seconds"}.
    """
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    prepare_archive(out, _README_MARK, ("images",))
    plan = _plan(n, seed)
    rows, labels = [], []
    for sk in plan:
        img = render_sketch(sk.regions, np.random.default_rng([seed, 2, sk.idx]))
        Image.fromarray(img).save(out / "images" / f"{sk.study_id}.png")
        text = describe(list(sk.regions), np.random.default_rng([seed, 3, sk.idx]), age=sk.age, sex=sk.sex)
        rows.append([sk.study_id, sk.patient_id, sk.date.isoformat(), f"images/{sk.study_id}.png", text])
        labels.append([sk.study_id, *(int(r in sk.regions) for r in REGIONS)])
    write_csv(out / "sketches.csv", ["study_id", "patient_id", "date", "image_path", "text"], rows)
    write_csv(out / "labels.csv", ["study_id", *REGIONS], labels)
    readme = _README_MARK + _README.format(n=n, seed=seed)
    (out / "README.txt").write_text(readme, encoding="utf-8", newline="\n")
    summary = {
        "sketches": len(plan),
        "patients": len({sk.patient_id for sk in plan}),
        "prevalence": {r: sum(r in sk.regions for sk in plan) / len(plan) for r in REGIONS},
        "out_dir": str(out),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    logger.info(
        "synthetic sketch archive: %d patients, %d sketches in %.1fs -> %s",
        summary["patients"],
        n,
        summary["seconds"],
        out,
    )
    return summary
