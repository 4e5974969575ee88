"""Tests for the synthetic chest CT archive (medclip.synth.ct.archive), its phantom and its reports."""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medclip.errors import InputError
from medclip.io.volumes import load_series, load_volume
from medclip.synth.ct import phantom as ct_phantom
from medclip.synth.ct.archive import CT_FINDINGS, SHAPE, _plan, render_ct, synth_ct
from medclip.synth.ct.findings import CTFinding, sample_finding
from medclip.synth.ct.reports import ct_report

N_STUDIES = 6
KEYWORDS = {
    "lung_nodule": r"\bnodules?\b",
    "pleural_effusion": r"pleural (?:effusions?|fluid)",
    "pneumothorax": r"pneumothorax",
    "consolidation": r"consolidation|pneumonia",
    "emphysema": r"emphysema",
    "pericardial_effusion": r"pericardial (?:effusion|fluid)",
    "cardiomegaly": r"cardiomegaly|enlarge",
}
NEGATION = re.compile(r"\b(?:no|without|negative for)\b", re.IGNORECASE)
HEDGE = re.compile(r"\b(?:possible|possibly|questionable|cannot exclude|likely)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ct")
    return out, synth_ct(out, studies=N_STUDIES, seed=0)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _series_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "dicom").glob("*/*/*") if p.is_dir())


def _sentences(text: str) -> list[str]:
    """Sentences of a report; wrapped lines are joined first (a sentence may span a line break)."""
    return [s for s in re.split(r"(?<=[.;:])\s+", " ".join(text.split())) if s.strip()]


# ---------------------------------------------------------------------------------------------- archive
def test_summary_and_layout(archive: tuple[Path, dict]) -> None:
    out, summary = archive
    assert summary["studies"] == N_STUDIES == summary["series"] + summary["nifti"]
    assert summary["nifti"] == round(N_STUDIES * 0.2)
    assert 1 <= summary["patients"] < N_STUDIES  # some patients have several studies
    assert set(summary["prevalence"]) == {*CT_FINDINGS, "no_finding"}
    assert len(_series_dirs(out)) == summary["series"]
    for path in (out / "dicom").rglob("*.dcm"):  # dicom/<PatientID>/<date>-<accession>/<SeriesNumber>/<NNNN>.dcm
        assert len(path.relative_to(out / "dicom").parts) == 4 and re.fullmatch(r"\d{4}\.dcm", path.name)
    assert len(list((out / "dicom").rglob("*.dcm"))) == summary["series"] * SHAPE[0]
    index = _csv(out / "nifti" / "index.csv")
    assert len(index) == len(list((out / "nifti").glob("*.nii.gz"))) == summary["nifti"]
    assert len(list((out / "reports").glob("*.txt"))) == N_STUDIES
    assert "synthetic" in (out / "README.txt").read_text().lower()


def test_labels(archive: tuple[Path, dict]) -> None:
    out, summary = archive
    rows = _csv(out / "labels.csv")
    assert list(rows[0])[:11] == ["study_id", "accession", "patient_id", *CT_FINDINGS, "no_finding"]
    assert len({r["study_id"] for r in rows}) == len(rows) == N_STUDIES
    for row in rows:
        flags = [int(row[n]) for n in CT_FINDINGS]
        assert set(flags) <= {0, 1} and int(row["no_finding"]) == int(not any(flags))
    for name in CT_FINDINGS:
        assert summary["prevalence"][name] == pytest.approx(np.mean([int(r[name]) for r in rows]))
    by_acc = {r["accession"]: r for r in rows}
    for entry in _csv(out / "nifti" / "index.csv"):
        assert by_acc[entry["accession"]]["study_id"] == entry["study_id"]
        assert by_acc[entry["accession"]]["format"] == "nifti"


def test_dicom_headers_and_uids(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    labels = {r["accession"]: r for r in _csv(out / "labels.csv")}
    encodings, sops = set(), set()
    for folder in _series_dirs(out):
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]
        first = headers[0]
        row = labels[first.AccessionNumber]
        assert folder.parts[-2] == f"{first.StudyDate}-{first.AccessionNumber}" and folder.parts[-3] == first.PatientID
        assert first.StudyInstanceUID == row["study_id"] and first.PatientID == row["patient_id"]
        assert first.StudyDescription.startswith("CT CHEST") and re.fullmatch(r"\d{3}Y", first.PatientAge)
        for ds in headers:
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == CTImageStorage and ds.Modality == "CT"
            assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientSex"):
                assert ds.get(key) == first.get(key), key
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert ds.BitsAllocated == 16 and ds.BitsStored == 12 and ds.HighBit == 11 and float(ds.RescaleSlope) == 1
            encodings.add((int(ds.PixelRepresentation), float(ds.RescaleIntercept)))
            assert "WindowCenter" in ds and "WindowWidth" in ds and float(ds.SliceThickness) == 5.0
            sops.add(ds.SOPInstanceUID)
    assert encodings == {(0, -1024.0), (1, 0.0)}  # uint16 + intercept and int16 HU both occur
    assert len(sops) == len(_series_dirs(out)) * SHAPE[0]


def test_series_load_sorted_by_position(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    orders = set()
    for folder in _series_dirs(out):
        vol, meta = load_series(folder)
        ds = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
        px = float(ds.PixelSpacing[0])
        assert vol.shape == SHAPE and vol.dtype == np.float32 and meta["modality"] == "CT"
        assert meta["spacing"] == pytest.approx((5.0, px, px)) and 3.3 < px < 3.9
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in meta["files"]]
        z = np.array([float(h.ImagePositionPatient[2]) for h in headers])
        assert np.allclose(np.diff(z), 5.0)  # sorted by position, inferior -> superior
        numbers = np.array([int(h.InstanceNumber) for h in headers])
        assert sorted(numbers) == list(range(1, SHAPE[0] + 1))
        steps = set(np.sign(np.diff(numbers)))
        orders.add("feet_first" if steps == {1} else "head_first" if steps == {-1} else "shuffled")
        _check_hu(vol, str(folder))
    assert {"shuffled", "head_first"} <= orders  # readers must not trust InstanceNumber or file names


def _check_hu(vol: np.ndarray, where: str) -> None:
    corners = np.concatenate([vol[:, :4, :4].ravel(), vol[:, :4, -4:].ravel()])
    assert abs(corners.mean() + 1000) < 15, where  # air outside the body
    assert vol.max() > 300 and vol.min() >= -1024, where  # bone
    lung = (vol > -950) & (vol < -600)
    soft = (vol > -150) & (vol < 100)
    assert lung.mean() > 0.03 and soft.mean() > 0.2, where


def test_nifti_loads_like_the_dicom_series(tmp_path: Path) -> None:
    """The same plan written once as DICOM and once as NIfTI (both voxel orders) loads to identical arrays/geometry."""
    synth_ct(tmp_path / "d", studies=4, seed=5, nifti_fraction=0.0)
    synth_ct(tmp_path / "n", studies=4, seed=5, nifti_fraction=1.0)
    index = {r["accession"]: r for r in _csv(tmp_path / "n" / "nifti" / "index.csv")}
    assert {r["axcodes"] for r in index.values()} == {"LPS", "RAS"}
    for folder in _series_dirs(tmp_path / "d"):
        vol, meta = load_series(folder)
        entry = index[folder.parts[-2].split("-")[1]]
        nvol, nmeta = load_volume(tmp_path / "n" / entry["file"])
        assert nvol.shape == SHAPE and np.array_equal(vol, nvol), entry
        assert nmeta["spacing"] == pytest.approx(meta["spacing"], abs=1e-4)
        assert np.allclose(nmeta["origin"], meta["origin"], atol=1e-3)
        assert np.allclose(nmeta["direction"], meta["direction"])
        assert np.allclose(meta["direction"], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])  # D superior, H posterior, W left
        assert entry["study_id"] == meta["study_uid"] and entry["patient_id"] == meta["patient_id"]


def test_same_seed_is_byte_identical_and_prefix_stable(tmp_path: Path) -> None:
    a, b, c = (synth_ct(tmp_path / n, studies=3, seed=s) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    assert a["studies"] == b["studies"] == c["studies"] == 3
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    assert not {r["study_id"] for r in _csv(tmp_path / "a" / "labels.csv")} & {
        r["study_id"] for r in _csv(tmp_path / "c" / "labels.csv")
    }
    synth_ct(tmp_path / "d", studies=2, seed=3)
    assert _csv(tmp_path / "d" / "labels.csv") == _csv(tmp_path / "a" / "labels.csv")[:2]


def test_rerun_replaces_and_foreign_directory_is_refused(tmp_path: Path) -> None:
    synth_ct(tmp_path / "a", studies=3, seed=1)
    summary = synth_ct(tmp_path / "a", studies=1, seed=2, nifti_fraction=0.0)
    assert len(list((tmp_path / "a" / "dicom").rglob("*.dcm"))) == summary["series"] * SHAPE[0]
    assert not list((tmp_path / "a" / "nifti").glob("*.nii.gz"))
    (tmp_path / "b" / "dicom" / "someone").mkdir(parents=True)
    with pytest.raises(InputError, match="not a synthetic archive"):
        synth_ct(tmp_path / "b", studies=1)


@pytest.mark.parametrize("kwargs", [{"studies": 0}, {"studies": 2, "nifti_fraction": 1.5}])
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        synth_ct(tmp_path, **kwargs)


# ---------------------------------------------------------------------------------------------- reports
def _check_report(text: str, positives: dict[str, CTFinding]) -> dict[str, int]:
    """Assert ``text`` agrees with ``positives``; returns how many positives it confirmed and how many absent
    findings it saw mentioned (each one negated)."""
    low = text.lower()
    assert re.search(r"^\s*findings", low, re.M) and re.search(r"^\s*impression", low, re.M), text
    checked = {"positive": 0, "negated": 0}
    for name, pattern in KEYWORDS.items():
        if name in positives:
            assert re.search(pattern, low), (name, text)
            if positives[name].side:
                assert positives[name].side in low or name in ("lung_nodule", "consolidation"), (name, text)
            checked["positive"] += 1
        else:  # an absent finding is never asserted: every mention is negated
            mentions = [sentence for sentence in _sentences(low) if re.search(pattern, sentence)]
            for sentence in mentions:
                assert NEGATION.search(sentence), (name, sentence)
            checked["negated"] += bool(mentions)
    for sentence in _sentences(low):  # hedges only soften true positives
        if HEDGE.search(sentence):
            assert any(re.search(KEYWORDS[n], sentence) for n in positives), sentence
    return checked


def test_reports_match_labels(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    rows = _csv(out / "labels.csv")
    assert len(rows) == N_STUDIES
    n_positive = n_negated = 0
    for row in rows:
        text = (out / "reports" / f"{row['accession']}.txt").read_text(encoding="utf-8")
        positives = {n: CTFinding(n, side=row.get(f"{n}_side", "")) for n in CT_FINDINGS if row[n] == "1"}
        checked = _check_report(text, positives)
        n_positive += checked["positive"]
        n_negated += checked["negated"]
    # seed 0, 6 studies: 9 labelled positives and 19 mentions of absent findings; the checks must not go vacuous
    assert n_positive >= 5, n_positive
    assert n_negated >= 8, n_negated


def test_reports_over_a_large_plan() -> None:
    """Report text only (no rendering): 300 planned studies keep labels and text consistent, with varied styles."""
    plan = _plan(300, 0, 0.2)
    texts = [ct_report(st, 0) for st in plan]
    for st, text in zip(plan, texts, strict=True):
        _check_report(text, st.pos)
    joined = "\n".join(texts)
    for token in ("XXXX", "___", "cannot exclude", "Possible", "lobe", "FINDINGS:", "findings", "1. "):
        assert token in joined, token
    assert len(set(texts)) == len(texts)
    assert 0.15 < np.mean([not st.pos for st in plan]) < 0.3
    patients = {}
    for st in plan:
        patients.setdefault(st.patient_id, []).append(st)
    carried = [st for sts in patients.values() for st in sts[1:] if st.carried]
    assert carried and all(set(st.carried) <= set(st.pos) for st in carried)


# ---------------------------------------------------------------------------------------------- phantom
@pytest.fixture(scope="module")
def anatomy() -> ct_phantom.CTAnatomy:
    return ct_phantom.sample_anatomy(np.random.default_rng(42))


def test_render_ct_api_and_orientation() -> None:
    vol = render_ct([], np.random.default_rng(1))
    assert vol.shape == SHAPE and vol.dtype == np.float32
    assert np.array_equal(vol, render_ct([], np.random.default_rng(1)))
    assert not np.array_equal(vol, render_ct([], np.random.default_rng(2)))
    assert render_ct(["emphysema"], np.random.default_rng(1), shape=(20, 40, 48), spacing=(10, 8, 7)).shape == (
        20,
        40,
        48,
    )
    with pytest.raises(ValueError, match="Did you mean 'pneumothorax'"):
        render_ct(["pneumothorax_"], np.random.default_rng(1))
    with pytest.raises(ValueError, match="shape"):
        render_ct([], np.random.default_rng(1), shape=(48, 96))


def test_render_hu_plausible(anatomy: ct_phantom.CTAnatomy) -> None:
    vol, masks = ct_phantom.render(anatomy, [], seed=0)
    assert vol[masks["lung"]].mean() < -600
    assert vol[masks["bone"]].max() > 300 and np.median(vol[masks["bone"]]) > 150
    assert abs(vol[:, :3, :].mean() + 1000) < 15  # air above the body
    assert 20 < vol[masks["heart"]].mean() < 60 and 40 < vol[masks["liver"]].mean() < 75
    assert 5 < vol[:, :3, :].std() < 30  # image noise
    lung_per_slice, liver_per_slice = masks["lung"].sum(axis=(1, 2)), masks["liver"].sum(axis=(1, 2))
    # D runs inferior -> superior: the liver is in the first slices, the lung apices taper off at the end
    assert liver_per_slice[:4].min() > 0 and liver_per_slice[-10:].max() == 0
    assert lung_per_slice[-1] < lung_per_slice[SHAPE[0] // 2] and lung_per_slice[0] < lung_per_slice[SHAPE[0] // 2]


def test_render_ct_nodule_differs_inside_the_lung() -> None:
    with_nodule = render_ct(["lung_nodule"], np.random.default_rng(3))
    without = render_ct([], np.random.default_rng(3))
    changed = with_nodule != without
    assert 0 < changed.sum() < 2000  # a local change only
    assert np.median(without[changed]) < -500  # it was aerated lung
    assert (with_nodule - without).max() > 150


@pytest.mark.parametrize("name", CT_FINDINGS)
def test_each_finding_is_visible(anatomy: ct_phantom.CTAnatomy, name: str) -> None:
    f = sample_finding(name, np.random.default_rng(7))
    f = replace(f, size_mm=14.0, kind="solid") if name == "lung_nodule" else replace(f, severity=0.6)
    base, bm = ct_phantom.render(anatomy, [], seed=1)
    vol, m = ct_phantom.render(anatomy, [f], seed=1)
    region = m[name]
    assert region.any() and np.abs(vol - base)[region].mean() > 30
    lung_y = np.nonzero(bm["lung"])[1].mean()
    if name == "lung_nodule":
        assert (vol - base)[region].max() > 300 and bm["lung"][region].mean() > 0.5
    elif name == "pleural_effusion":
        assert -20 < vol[region].mean() < 40 and np.nonzero(region)[1].mean() > lung_y  # dependent: posterior
    elif name == "pneumothorax":
        assert vol[region].mean() < -850 and np.nonzero(region)[1].mean() < lung_y  # non-dependent: anterior
    elif name == "consolidation":
        assert vol[region].mean() > -150 and (vol[region] < -350).sum() > 10  # dense, with air bronchograms
    elif name == "emphysema":
        assert (vol[m["lung"]] < -950).mean() > (base[bm["lung"]] < -950).mean() + 0.05
    elif name == "pericardial_effusion":
        assert -60 < vol[region].mean() < 30 and m["heart"].sum() == bm["heart"].sum()
    elif name == "cardiomegaly":
        assert m["heart"].sum() > 1.2 * bm["heart"].sum()
    else:
        raise AssertionError(f"no visibility check for {name}")
