"""Tests for the lesion masks of the chest X-ray phantom and the grounding.csv boxes of the synthetic archive."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medclip.synth.cxr import phantom
from medclip.synth.cxr.archive import GROUNDING_HEADER, _plan, synth_cxr
from medclip.synth.cxr.geometry import Frame
from medclip.synth.cxr.reports import GROUNDING_CATEGORIES

F = phantom.Finding
ROWS, COLS, SPACING = 384, 320, 1.1
N_STUDIES, SEED = 24, 0
LESIONS = {
    "pleural_effusion": F("pleural_effusion", "left", 0.6),
    "pneumothorax": F("pneumothorax", "right", 0.6),
    "consolidation": F("consolidation", "right", 0.7, u=0.6, v=0.3),
    "edema": F("edema", severity=0.7),
    "nodule": F("nodule", "left", size_mm=20, u=0.6, v=0.3),
    "atelectasis": F("atelectasis", "left", 0.6, u=0.6, v=0.75),
}


def _setup() -> tuple[phantom.Anatomy, phantom.Acquisition]:
    rng = np.random.default_rng(11)
    return phantom.sample_anatomy(rng), phantom.sample_acquisition(rng)


def _render(findings: list[phantom.Finding], *, view: str = "PA", masks: bool = False):
    anatomy, acq = _setup()
    kw = {"view": view, "anatomy": anatomy, "findings": findings, "acquisition": acq, "seed": 5}
    return (
        phantom.render(ROWS, COLS, SPACING, masks=masks, **kw) if masks else phantom.render(ROWS, COLS, SPACING, **kw)
    )


# ---------------------------------------------------------------------------------------------- phantom
@pytest.mark.parametrize("view", ["PA", "AP", "LL"])
def test_masks_leave_the_pixels_unchanged(view: str) -> None:
    findings = [*LESIONS.values(), F("cardiomegaly", severity=0.6), F("support_device", "left", kind="pacemaker")]
    img, masks = _render(findings, view=view, masks=True)
    assert np.array_equal(img, _render(findings, view=view))
    assert len(masks) == len(findings)
    assert masks[-2] is None and masks[-1] is None  # heart size and devices are not lesions
    for f, mask in zip(findings[:-2], masks[:-2], strict=True):
        assert mask.shape == (ROWS, COLS) and mask.dtype == bool and mask.any(), f.name


@pytest.mark.parametrize("name", sorted(LESIONS))
def test_mask_hugs_the_lesion_inside_its_lung(name: str) -> None:
    f = LESIONS[name]
    img, (mask,) = _render([f], masks=True)
    anatomy, _ = _setup()
    lung = phantom.lung_mask(ROWS, COLS, SPACING, anatomy=anatomy, side=f.side or None)
    assert (mask & lung).sum() > 0.9 * mask.sum()
    diff = np.abs(img - _render([]))  # same seed: only the finding differs
    assert mask.flat[np.argmax(diff)]
    if name != "atelectasis":  # its volume loss lifts the diaphragm, which is not part of the plate-like lesion
        assert diff[mask].sum() > 0.7 * diff.sum()
    cols = np.nonzero(mask)[1]
    if f.side == "left":  # patient left is on the image right of a frontal film
        assert cols.min() > COLS // 2
    elif f.side == "right":
        assert cols.max() < COLS // 2


def test_nodule_mask_is_centred_where_the_nodule_was_placed() -> None:
    _, (mask,) = _render([LESIONS["nodule"]], masks=True)
    anatomy, _ = _setup()
    fr = Frame(ROWS, COLS, (SPACING, SPACING), anatomy)
    r, c = (round(float(v.mean())) for v in np.nonzero(mask))
    # the site for u=0.6, v=0.3 in the left upper zone: 24 + 112 u mm lateral, -115 + 215 v mm down
    assert fr.x[r, c] == pytest.approx(24 + 112 * 0.6, abs=3)
    assert fr.y[r, c] == pytest.approx(-115 + 215 * 0.3, abs=3)
    radius_px = 10 * anatomy.scale / SPACING
    assert 0.6 < mask.sum() / (np.pi * radius_px**2) < 1.5


def test_bilateral_effusion_mask_has_one_region_per_side() -> None:
    _, (mask,) = _render([F("pleural_effusion", "bilateral", 0.5)], masks=True)
    assert mask[:, : COLS // 2].any() and mask[:, COLS // 2 :].any()
    assert not mask[:, COLS // 2 - 2 : COLS // 2 + 2].any()  # the mediastinum separates them


# ---------------------------------------------------------------------------------------------- archive
@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("cxr_grounding")
    summary = synth_cxr(out, studies=N_STUDIES, seed=SEED)
    with open(out / "grounding.csv", newline="", encoding="utf-8") as fh:
        return out, summary, list(csv.DictReader(fh))


def test_grounding_csv_layout_and_bounds(archive: tuple[Path, dict, list[dict[str, str]]]) -> None:
    out, summary, rows = archive
    with open(out / "grounding.csv", newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == list(GROUNDING_HEADER)
    assert rows and summary["grounding_boxes"] == len(rows)
    assert {r["category_name"] for r in rows} <= set(GROUNDING_CATEGORIES.values())
    for row in rows:
        ds = pydicom.dcmread(out / row["path"], stop_before_pixels=True)
        assert ds.ViewPosition in ("PA", "AP")  # frontal views only
        assert row["dicom_id"] == ds.SOPInstanceUID and row["study_id"] == ds.StudyInstanceUID
        assert row["accession"] == ds.AccessionNumber
        x, y, w, h, width, height = (int(row[k]) for k in ("x", "y", "w", "h", "image_width", "image_height"))
        assert (width, height) == (ds.Columns, ds.Rows)
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height


def test_boxes_match_labels_and_sides(archive: tuple[Path, dict, list[dict[str, str]]]) -> None:
    out, _, rows = archive
    with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
        labels = {r["accession"]: r for r in csv.DictReader(fh)}
    plan = {st.accession: st for st in _plan(N_STUDIES, SEED)}
    name_of = {v: k for k, v in GROUNDING_CATEGORIES.items()}
    boxed = {(r["accession"], name_of[r["category_name"]]) for r in rows}
    for acc, label in labels.items():  # every positive lesion on the frontal film gets at least one box
        assert {(acc, n) for n in GROUNDING_CATEGORIES if label[n] == "1"} == {b for b in boxed if b[0] == acc}
    x_of = {}
    for row in rows:
        name, st = name_of[row["category_name"]], plan[row["accession"]]
        x_mm = phantom.patient_x(st.size[0], st.size[1], st.spacing, anatomy=st.anatomy)
        r, c = int(row["y"]) + int(row["h"]) // 2, int(row["x"]) + int(row["w"]) // 2
        if name == "edema":  # bilateral, no side in any report: one phrase, at most a box per lung
            assert row["label_text"] == "pulmonary edema"
            x_of.setdefault(row["accession"], []).append(x_mm[r, c] > 0)
            continue
        side = row["label_text"].split()[0]
        if name != "consolidation" or side != "lingular":
            assert side in ("left", "right"), row["label_text"]
            assert labels[row["accession"]].get(f"{name}_side", "bilateral") in (side, "bilateral")
        assert (x_mm[r, c] > 0) == ("left" in row["label_text"] or "lingular" in row["label_text"]), row
    assert x_of and all(len(sides) == len(set(sides)) <= 2 for sides in x_of.values())  # one box per lung


def test_lateral_images_get_no_rows(archive: tuple[Path, dict, list[dict[str, str]]]) -> None:
    out, _, rows = archive
    boxed = {r["path"] for r in rows}
    lateral = [
        p.relative_to(out).as_posix()
        for p in sorted((out / "dicom").rglob("*.dcm"))
        if pydicom.dcmread(p, stop_before_pixels=True).ViewPosition not in ("PA", "AP")
    ]
    assert lateral and not boxed & set(lateral)


def test_grounding_is_the_same_for_any_number_of_workers(tmp_path: Path) -> None:
    one = synth_cxr(tmp_path / "one", studies=34, seed=2, workers=1)  # >= 32 studies: really uses the pool
    two = synth_cxr(tmp_path / "two", studies=34, seed=2, workers=2)
    assert one["grounding_boxes"] == two["grounding_boxes"] > 0
    assert (tmp_path / "one" / "grounding.csv").read_bytes() == (tmp_path / "two" / "grounding.csv").read_bytes()
