"""Tests for the synthetic body-map sketch archive (medclip.synth.sketch.archive) and its descriptions."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclip.errors import InputError
from medclip.ingest.manifest import build_manifest
from medclip.synth.sketch.archive import MARK_STYLES, REGIONS, render_sketch, synth_sketch
from medclip.synth.sketch.text import BILATERAL, NEGATIONS, PHRASES, describe

N = 24
SIZE = 256

# An independent reading of the text: region -> what a clinician would take as naming it (side included).
_SIDED = {
    "chest": r"{s} (side of the )?(upper |lower |anterior )?chest",
    "arm": r"{s} (arm|upper arm|forearm|elbow|shoulder)",
    "hand": r"{s} (hand|wrist|palm)",
    "leg": r"{s} (leg|thigh|knee|calf|shin)",
    "foot": r"{s} (foot|ankle|heel)",
}
_MENTIONS = {
    "head": r"head|forehead|temples",
    "neck": r"neck|cervical",
    "chest_centre": r"central chest|centre of the chest|mid-chest|substernal|retrosternal",
    "upper_back": r"upper back|between the shoulder blades|upper thoracic",
    "lower_back": r"lower back|low back|lumbar|lumbosacral",
    **{f"{part}_{s}": pattern.format(s=s) for part, pattern in _SIDED.items() for s in ("left", "right")},
    **{f"abdomen_{q}": rf"{s} {h} (quadrant|abdomen)|{q.upper()}|{s} {word}"
       for q, s, h, word in (("ruq", "right", "upper", "hypochondrium"), ("luq", "left", "upper", "hypochondrium"),
                             ("rlq", "right", "lower", "iliac fossa"), ("llq", "left", "lower", "iliac fossa"))},
}  # fmt: skip
_BOTH = {
    ("chest_left", "chest_right"): r"both sides of the chest|chest bilaterally",
    ("abdomen_luq", "abdomen_ruq"): r"both upper quadrants|upper abdomen bilaterally",
    ("abdomen_llq", "abdomen_rlq"): r"both lower quadrants|lower abdomen bilaterally",
    ("arm_left", "arm_right"): r"both (arms|forearms|shoulders)|arms bilaterally",
    ("hand_left", "hand_right"): r"both (hands|wrists)|hands bilaterally",
    ("leg_left", "leg_right"): r"both (legs|knees|thighs|calves)|legs bilaterally",
    ("foot_left", "foot_right"): r"both (feet|ankles)|feet bilaterally",
}
_NEGATED = {
    r"head": ("head",),
    r"neck": ("neck",),
    r"chest": ("chest_left", "chest_right", "chest_centre"),
    r"abdominal": ("abdomen_ruq", "abdomen_luq", "abdomen_rlq", "abdomen_llq"),
    r"back": ("upper_back", "lower_back"),
    r"arm": ("arm_left", "arm_right"),
    r"hands?": ("hand_left", "hand_right"),
    r"leg": ("leg_left", "leg_right"),
    r"foot": ("foot_left", "foot_right"),
}


def _said(pattern: str, text: str) -> bool:
    return re.search(rf"\b({pattern})\b", text, flags=re.IGNORECASE) is not None


def _sentences(text: str) -> tuple[list[str], list[str]]:
    """(positive sentences, negation sentences)."""
    parts = [s for s in re.split(r"(?<=\.)\s+", text) if s]
    negative = [s for s in parts if s.startswith(("No ", "Denies "))]
    return [s for s in parts if s not in negative], negative


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sketch")
    return out, synth_sketch(out, n=N, seed=0)


def test_summary_files_and_columns(archive: tuple[Path, dict]) -> None:
    out, summary = archive
    assert summary["sketches"] == N and 1 <= summary["patients"] < N  # some patients have several sketches
    assert set(summary["prevalence"]) == set(REGIONS) and summary["out_dir"] == str(out)
    rows, labels = _read(out / "sketches.csv"), _read(out / "labels.csv")
    assert list(rows[0]) == ["study_id", "patient_id", "date", "image_path", "text"]
    assert list(labels[0]) == ["study_id", *REGIONS]
    assert [r["study_id"] for r in rows] == [r["study_id"] for r in labels]
    assert len({r["study_id"] for r in rows}) == N
    for row, lab in zip(rows, labels, strict=True):
        marked = sum(int(lab[r]) for r in REGIONS)
        assert 1 <= marked <= 4 and set(lab.values()) - {lab["study_id"]} <= {"0", "1"}
        with Image.open(out / row["image_path"]) as img:
            assert img.mode == "L" and img.size == (SIZE, SIZE)
            pixels = np.asarray(img)
        assert pixels.min() < 80 and np.median(pixels) > 230  # dark ink on white paper
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert "SYNTHETIC" in readme and "seed 0" in readme


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    synth_sketch(tmp_path / "a", n=8, seed=3)
    synth_sketch(tmp_path / "b", n=8, seed=3)
    synth_sketch(tmp_path / "c", n=8, seed=4)
    a, b, c = (_tree_bytes(tmp_path / k) for k in "abc")
    assert a == b
    assert a["sketches.csv"] != c["sketches.csv"] and a["images/SK000001.png"] != c["images/SK000001.png"]


def test_rerun_replaces_archive_and_refuses_foreign_images(tmp_path: Path) -> None:
    synth_sketch(tmp_path, n=6, seed=0)
    synth_sketch(tmp_path, n=3, seed=0)
    assert len(list((tmp_path / "images").iterdir())) == 3
    foreign = tmp_path / "other"
    (foreign / "images").mkdir(parents=True)
    (foreign / "images" / "x.png").write_bytes(b"x")
    with pytest.raises(InputError, match="fresh directory"):
        synth_sketch(foreign, n=2)


def test_descriptions_agree_with_labels(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    labels = {r["study_id"]: r for r in _read(out / "labels.csv")}
    for row in _read(out / "sketches.csv"):
        marked = {r for r in REGIONS if labels[row["study_id"]][r] == "1"}
        positive, negative = _sentences(row["text"])
        said = " ".join(positive)
        for region in REGIONS:
            pairs = [p for p in _BOTH if region in p]
            named = _said(_MENTIONS[region], said) or any(_said(_BOTH[p], said) for p in pairs)
            assert named == (region in marked), (row["study_id"], region, row["text"])
        for sentence in negative:
            for word, regions in _NEGATED.items():
                if _said(word, sentence):
                    assert not marked & set(regions), (row["study_id"], sentence)


def test_phrase_tables_carry_sides() -> None:
    for region, phrases in PHRASES.items():
        side = next((s for s in ("left", "right") if region.endswith((f"_{s}", f"_{s[0]}uq", f"_{s[0]}lq"))), "")
        for phrase in phrases:
            if side:  # the side word, or an abbreviation such as LUQ that starts with it
                assert side in phrase or phrase.startswith(side[0].upper()), phrase
            assert "left" not in phrase.replace(side, "") and "right" not in phrase.replace(side, ""), phrase
    assert all(set(pair) <= set(REGIONS) for pair in BILATERAL)
    assert {r for regions, _ in NEGATIONS for r in regions} == set(REGIONS) == set(PHRASES)


@pytest.mark.parametrize("marked", [("arm_left", "chest_left"), ("leg_left", "leg_right"), ("head",)])
def test_describe_marked_only(marked: tuple[str, ...]) -> None:
    for seed in range(20):
        text = describe(marked, np.random.default_rng(seed), age=54, sex="F")
        positive, _ = _sentences(text)
        for region in set(REGIONS) - set(marked):
            assert not _said(_MENTIONS[region], " ".join(positive)), (region, text)


def _added_ink(region: str, spec: dict, seed: int) -> np.ndarray:
    """Columns of ink the mark adds, against an unmarked render from the same generator state."""
    blank = render_sketch({}, np.random.default_rng(seed), size=SIZE)
    marked = render_sketch({region: spec}, np.random.default_rng(seed), size=SIZE)
    assert (marked <= blank).all()  # marks only add ink
    return np.nonzero((marked != blank).any(0))[0]


@pytest.mark.parametrize("style", MARK_STYLES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_left_arm_is_viewer_right_in_front_and_viewer_left_in_back(style: str, seed: int) -> None:
    cols = _added_ink("arm_left", {"style": style, "views": ("front", "back")}, seed)
    front, back = cols[cols < SIZE // 2], cols[cols >= SIZE // 2]
    assert front.size and back.size
    assert front.min() >= SIZE // 4  # front panel: the patient's left is on the viewer's right
    assert back.max() < 3 * SIZE // 4  # back panel: the patient's left is on the viewer's left


@pytest.mark.parametrize(
    ("region", "left", "views"),
    [
        ("arm_right", False, ("front", "back")),
        ("hand_left", True, ("front", "back")),
        ("leg_right", False, ("front", "back")),
        ("foot_left", True, ("front", "back")),
        ("chest_left", True, ("front",)),
        ("chest_right", False, ("front",)),
        ("abdomen_ruq", False, ("front",)),
        ("abdomen_llq", True, ("front",)),
    ],
)
def test_sides_follow_anatomical_convention(region: str, left: bool, views: tuple[str, ...]) -> None:
    for seed, style in enumerate(MARK_STYLES):
        blank = render_sketch({}, np.random.default_rng(seed))
        ink = (render_sketch({region: {"style": style}}, np.random.default_rng(seed)) != blank).astype(float)
        for view, panel in (("front", slice(0, SIZE // 2)), ("back", slice(SIZE // 2, SIZE))):
            cols = ink[:, panel].sum(0)
            if view not in views:
                assert cols.sum() == 0, (region, view)  # chest and abdomen are drawn on the front view only
                continue
            centre = (cols * np.arange(SIZE // 2)).sum() / cols.sum()  # ink's centre of mass in the panel
            viewer_right = centre > SIZE // 4
            assert viewer_right == (left if view == "front" else not left), (region, view, style, centre)


def test_back_regions_on_back_view_only() -> None:
    cols = _added_ink("lower_back", {"style": "fill"}, 0)
    assert cols.size and cols.min() >= SIZE // 2


def test_render_validates_regions() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="Did you mean 'arm_left'"):
        render_sketch({"arm_lft": {}}, rng)
    with pytest.raises(ValueError, match="can be drawn on"):
        render_sketch({"chest_left": {"views": ("back",)}}, rng)
    with pytest.raises(ValueError, match="style"):
        render_sketch({"head": {"style": "paint"}}, rng)
    with pytest.raises(ValueError, match="unknown mark keys"):
        render_sketch({"head": {"colour": 1}}, rng)
    with pytest.raises(ValueError, match="size"):
        render_sketch({}, rng, size=32)
    assert render_sketch({}, rng, size=128).shape == (128, 128)


def test_csv_layout_keeps_every_sketch(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    # the folder holds sketches.csv and labels.csv, so the csv layout is given the table itself
    result = build_manifest(out / "sketches.csv", layout="csv", salt="test", show_progress=False)
    counts = result.meta["counts"]
    assert counts["inputs"] == counts["kept"] == N and counts["rejected"] == 0 and counts["reports_rejected"] == 0
    assert len(result.rejects) == 0
    rows = {r["study_id"]: r for r in _read(out / "sketches.csv")}
    assert set(result.manifest["study_id"]) == set(rows)
    for rec in result.manifest.itertuples(index=False):
        assert Path(rec.image_path) == out / rows[rec.study_id]["image_path"]
        assert " ".join(rec.text.split()) == rows[rec.study_id]["text"]  # the whole description, unmangled
