"""Tests for the synthetic chest X-ray archive (medclip.synth.cxr.archive) and its phantom renderer."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

from medclip.errors import InputError
from medclip.synth.cxr import phantom
from medclip.synth.cxr.archive import CXR_FINDINGS, SIDED_FINDINGS, synth_cxr

N_STUDIES = 24


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cxr")
    return out, synth_cxr(out, studies=N_STUDIES, seed=0)


def _labels(out: Path) -> list[dict[str, str]]:
    with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_summary_and_layout(archive: tuple[Path, dict]) -> None:
    out, summary = archive
    assert summary["studies"] == N_STUDIES
    assert 1 <= summary["patients"] < N_STUDIES  # patients have several studies
    assert set(summary["prevalence"]) == set(CXR_FINDINGS)
    assert summary["out_dir"] == str(out)
    dicoms = list((out / "dicom").rglob("*.dcm"))
    assert len(dicoms) == summary["images"] > N_STUDIES  # some studies have a lateral view
    assert len(list((out / "reports").glob("*.txt"))) == N_STUDIES
    assert "synthetic" in (out / "README.txt").read_text().lower()
    for path in dicoms:  # dicom/<PatientID>/<study folder>/<SeriesNumber>/<InstanceNumber>.dcm
        assert len(path.relative_to(out / "dicom").parts) == 4


def test_dicom_headers_and_uids(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    labels = {row["accession"]: row for row in _labels(out)}
    study_uids, patient_of_study, photometric, views = defaultdict(set), {}, set(), set()
    for path in sorted((out / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID in (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation)
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.Modality == ("CR" if ds.SOPClassUID == ComputedRadiographyImageStorage else "DX")
        assert ds.BitsAllocated == 16 and ds.BitsStored in (12, 14, 16) and ds.HighBit == ds.BitsStored - 1
        assert ds.PixelRepresentation == 0 and ds.SamplesPerPixel == 1 and ds.BodyPartExamined == "CHEST"
        arr = ds.pixel_array
        assert arr.shape == (ds.Rows, ds.Columns) and max(ds.Rows, ds.Columns) <= 600
        assert int(arr.max()) <= 2**ds.BitsStored - 1 and arr.std() > 0
        assert path.parts[-4] == ds.PatientID and path.parts[-2] == str(ds.SeriesNumber)
        assert ds.PatientName.family_name == "SYNTH"
        row = labels[ds.AccessionNumber]
        assert ds.StudyInstanceUID == row["study_id"] and ds.PatientID == row["patient_id"]
        study_uids[ds.AccessionNumber].add(ds.StudyInstanceUID)
        patient_of_study[ds.StudyInstanceUID] = ds.PatientID
        photometric.add(ds.PhotometricInterpretation)
        views.add(ds.ViewPosition)
    assert all(len(uids) == 1 for uids in study_uids.values())
    assert len(set(patient_of_study.values())) < len(patient_of_study)  # a patient with several studies
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    assert "PA" in views and views & {"LL", "LATERAL"}


def test_monochrome1_is_inverted(archive: tuple[Path, dict]) -> None:
    """After inverting MONOCHROME1 the dense mediastinum is brighter than the lungs, as for MONOCHROME2."""
    out, _ = archive
    for path in sorted((out / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.ViewPosition not in ("PA", "AP"):
            continue
        arr = ds.pixel_array.astype(float)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = 2**ds.BitsStored - 1 - arr
        r, c = arr.shape
        centre = arr[int(0.3 * r) : int(0.5 * r), int(0.47 * c) : int(0.53 * c)].mean()
        lung = arr[int(0.3 * r) : int(0.45 * r), int(0.22 * c) : int(0.28 * c)].mean()
        assert centre > lung, path


def test_labels(archive: tuple[Path, dict]) -> None:
    out, summary = archive
    rows = _labels(out)
    assert len(rows) == N_STUDIES
    expected = ["study_id", "accession", "patient_id", *CXR_FINDINGS, "no_finding"]
    assert list(rows[0])[: len(expected)] == expected
    assert {"pleural_effusion_side", "pneumothorax_side"} <= set(rows[0])
    assert len({row["study_id"] for row in rows}) == N_STUDIES
    for row in rows:
        flags = [int(row[name]) for name in CXR_FINDINGS]
        assert set(flags) <= {0, 1}
        assert int(row["no_finding"]) == int(not any(flags))
        for name in SIDED_FINDINGS:
            side = row[f"{name}_side"]
            assert side in ({"left", "right", "bilateral"} if row[name] == "1" else {""})
    for name in CXR_FINDINGS:
        assert summary["prevalence"][name] == pytest.approx(np.mean([int(r[name]) for r in rows]))


def test_reports_match_labels(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    sided_checked = 0
    for row in _labels(out):
        text = (out / "reports" / f"{row['accession']}.txt").read_text(encoding="utf-8")
        low = text.lower()
        assert "findings" in low and "impression" in low
        for name in ("pleural_effusion", "pneumothorax", "nodule"):
            if row[name] == "1":
                assert row[f"{name}_side"] in low, (name, text)
                sided_checked += 1
        if row["no_finding"] == "1":
            assert "effusion" not in low.replace("no pleural effusion", "").replace("no effusion", "")
    assert sided_checked > 0


def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path: Path) -> None:
    a, b, c = (synth_cxr(tmp_path / name, studies=12, seed=seed) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    assert a["images"] == b["images"]
    tree_a, tree_b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert tree_a == tree_b
    assert _labels(tmp_path / "a") != _labels(tmp_path / "c")
    assert not {r["study_id"] for r in _labels(tmp_path / "a")} & {r["study_id"] for r in _labels(tmp_path / "c")}
    assert c["studies"] == 12
    prefix = synth_cxr(tmp_path / "d", studies=7, seed=3)  # fewer studies: the same first studies
    assert _labels(tmp_path / "d") == _labels(tmp_path / "a")[:7]
    assert prefix["images"] < a["images"]


def test_rerun_replaces_previous_archive(tmp_path: Path) -> None:
    synth_cxr(tmp_path, studies=14, seed=1)
    summary = synth_cxr(tmp_path, studies=6, seed=2)
    assert len(list((tmp_path / "dicom").rglob("*.dcm"))) == summary["images"]
    assert len(list((tmp_path / "reports").glob("*.txt"))) == 6


def test_rerun_replaces_an_archive_written_by_an_earlier_version(tmp_path: Path) -> None:
    """Archives from before the synth/ package (README mark naming medclip.data.synthetic) are still ours."""
    synth_cxr(tmp_path, studies=4, seed=1)
    readme = tmp_path / "README.txt"
    text = readme.read_text(encoding="utf-8")
    readme.write_text(text.replace("medclip.synth.cxr.archive", "medclip.data.synthetic", 1), encoding="utf-8")
    assert synth_cxr(tmp_path, studies=3, seed=2)["studies"] == 3


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "dicom" / "someone").mkdir(parents=True)
    with pytest.raises(InputError):
        synth_cxr(tmp_path, studies=2)


# ---------------------------------------------------------------------------------------------- phantom
ROWS, COLS, SPACING = 384, 320, 1.1


def _render(findings: list[phantom.Finding], view: str = "PA", seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(11)
    anatomy, acq = phantom.sample_anatomy(rng), phantom.sample_acquisition(rng)
    return phantom.render(
        ROWS, COLS, SPACING, view=view, anatomy=anatomy, findings=findings, acquisition=acq, seed=seed
    )


def _lung_base(side: str) -> np.ndarray:
    """Lower third of one lung field for the same anatomy ``_render`` uses."""
    mask = phantom.lung_mask(ROWS, COLS, SPACING, anatomy=phantom.sample_anatomy(np.random.default_rng(11)), side=side)
    rows = np.nonzero(mask.any(axis=1))[0]
    base = mask.copy()
    base[: rows[0] + 2 * (rows[-1] - rows[0]) // 3] = False
    return base


def test_render_range_dtype_and_determinism() -> None:
    img = _render([])
    assert img.shape == (ROWS, COLS) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.std() > 0.05
    assert np.array_equal(img, _render([]))
    assert not np.array_equal(img, _render([], seed=6))
    assert _render([], view="LL").shape == (ROWS, COLS)


def test_effusion_whitens_lung_base_on_the_right_side_of_the_image() -> None:
    """A LEFT effusion brightens the left lung base, which is on the image RIGHT of a PA film."""
    clear = _render([])
    wet = _render([phantom.Finding("pleural_effusion", "left", 0.6)])
    left_base, right_base = _lung_base("left"), _lung_base("right")
    assert left_base[:, COLS // 2 :].sum() > 0.9 * left_base.sum()  # patient left = image right
    assert wet[left_base].mean() > clear[left_base].mean() + 0.05
    assert abs(wet[right_base].mean() - clear[right_base].mean()) < 0.01


def test_every_finding_changes_the_image() -> None:
    specs = {
        "cardiomegaly": phantom.Finding("cardiomegaly", severity=0.8),
        "pleural_effusion": phantom.Finding("pleural_effusion", "bilateral", 0.5),
        "pneumothorax": phantom.Finding("pneumothorax", "right", 0.6),
        "consolidation": phantom.Finding("consolidation", "right", 0.7, u=0.6, v=0.3),
        "edema": phantom.Finding("edema", severity=0.7),
        "nodule": phantom.Finding("nodule", "left", size_mm=20, u=0.6, v=0.3),
        "atelectasis": phantom.Finding("atelectasis", "left", 0.6, u=0.6, v=0.75),
        "support_device": phantom.Finding("support_device", "left", kind="pacemaker"),
    }
    assert set(specs) == set(CXR_FINDINGS)
    for name, spec in specs.items():
        for view in ("PA", "LL"):
            diff = np.abs(_render([spec], view=view) - _render([], view=view))
            assert diff.max() > 0.1 and (diff > 0.02).sum() > 50, (name, view)


def test_pneumothorax_darkens_its_side() -> None:
    clear = _render([])
    ptx = _render([phantom.Finding("pneumothorax", "right", 0.8)])
    right = phantom.lung_mask(
        ROWS, COLS, SPACING, anatomy=phantom.sample_anatomy(np.random.default_rng(11)), side="right"
    )
    assert ptx[right].mean() < clear[right].mean()


def test_visibility_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phantom, "VISIBILITY", 0.0)
    assert np.array_equal(_render([phantom.Finding("pleural_effusion", "left", 0.8)]), _render([]))


def test_parallel_rendering_writes_the_same_bytes(tmp_path: Path) -> None:
    one = synth_cxr(tmp_path / "one", studies=40, seed=5, workers=1)
    two = synth_cxr(tmp_path / "two", studies=40, seed=5, workers=2)
    assert one["images"] == two["images"]
    assert _tree_bytes(tmp_path / "one") == _tree_bytes(tmp_path / "two")
