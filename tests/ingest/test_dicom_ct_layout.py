"""Tests for the ``dicom-ct`` archive layout (medclip.ingest.layouts.dicom_ct): one input per CT series or NIfTI volume."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

import medclip.ingest.layouts.dicom_ct  # noqa: F401  (registers "dicom-ct")
from medclip.ingest.archive import LAYOUTS
from medclip.ingest.layouts.dicom_ct import _nifti_shape
from medclip.ingest.manifest import build_manifest
from medclip.io.volumes import SERIES_TAG, load_series, load_volume, series_files, split_series_path
from medclip.synth.ct.archive import SHAPE, synth_ct

N_STUDIES = 6


@pytest.fixture(scope="module")
def synth_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ctarchive")
    return out, synth_ct(out, studies=N_STUDIES, seed=0)


@pytest.fixture
def archive(synth_archive: tuple[Path, dict], tmp_path: Path) -> Path:
    """A private copy of the synthetic archive that a test may break."""
    return Path(shutil.copytree(synth_archive[0], tmp_path / "archive"))


def _manifest(root: Path, **kwargs):
    kwargs = {"layout": "dicom-ct", "modalities": ("CT",), "salt": "x", "show_progress": False} | kwargs
    return build_manifest(root, **kwargs)


def _series_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "dicom").glob("*/*/*") if p.is_dir())


def _labels(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _image_rejects(result) -> dict[str, str]:
    rejects = result.rejects[result.rejects["kind"] == "image"]
    return dict(zip(rejects["path"], rejects["reason"], strict=True))


def _write_cr(path: Path, *, patient: str = "CR1", series: str | None = None) -> Path:
    """A small chest CR DICOM file (a modality the CT layout must reject)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.AccessionNumber = "CR", patient, "CR0001"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series or generate_uid()
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(64 * 64, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_registered() -> None:
    assert "dicom-ct" in LAYOUTS.list()


def test_every_study_kept_with_its_report(synth_archive: tuple[Path, dict]) -> None:
    root, summary = synth_archive
    result = _manifest(root)
    counts, df = result.meta["counts"], result.manifest
    assert counts["inputs"] == counts["kept"] == N_STUDIES and counts["rejected"] == 0
    assert counts["reports_found"] == N_STUDIES and result.rejects.empty
    assert set(df["study_id"]) == {r["study_id"] for r in _labels(root)}
    assert counts["patients"] == summary["patients"]
    assert df["text"].str.len().min() > 20 and df["findings"].notna().all()
    assert (df["modality"] == "CT").all() and df["view"].isna().all() and df["sop_uid"].is_unique
    nifti = df["image_path"].str.endswith(".nii.gz")
    assert nifti.sum() == summary["nifti"] >= 1 and (~nifti).sum() == summary["series"] >= 1
    assert sorted(df.loc[~nifti, "image_path"]) == [str(p) for p in _series_dirs(root)]
    assert (df["rows"] == SHAPE[1]).all() and (df["columns"] == SHAPE[2]).all()


def test_broken_series_stray_file_and_cr_are_rejected(archive: Path) -> None:
    folders = _series_dirs(archive)
    broken, shared, crowded = folders[0], folders[1], folders[2]
    vol, meta = load_series(broken)
    Path(meta["files"][SHAPE[0] // 2]).unlink()  # a middle slice by position
    (shared / "notes.bin").write_bytes(b"not a dicom file" * 20)
    cr = _write_cr(crowded / "9999.dcm")
    result = _manifest(archive)
    counts, rejects = result.meta["counts"], _image_rejects(result)
    assert counts["inputs"] == N_STUDIES + 2  # + notes.bin + the CR file (a series of its own)
    assert counts["kept"] == N_STUDIES - 1 and counts["rejected"] == 3
    assert rejects == {str(broken): "series_gap", str(shared / "notes.bin"): "not_dicom", str(cr): "modality"}
    assert result.meta["counts"]["reject_reasons"]["orphan_report"] == 1  # the broken study's report
    # Folders holding other files name their series explicitly; the path resolves to exactly its slices.
    paths = set(result.manifest["image_path"])
    for folder in (shared, crowded):
        (kept,) = [p for p in paths if p.startswith(f"{folder}{SERIES_TAG}")]
        assert split_series_path(kept)[0] == folder
        files = series_files(kept)
        assert len(files) == SHAPE[0] and load_series(files)[0].shape == SHAPE


def test_without_verify_pixels_the_gap_is_not_seen(archive: Path) -> None:
    broken = _series_dirs(archive)[0]
    Path(load_series(broken)[1]["files"][10]).unlink()
    result = _manifest(archive, verify_pixels=False)
    assert result.meta["counts"]["kept"] == N_STUDIES
    assert set(result.manifest["rows"]) == {SHAPE[1]} and set(result.manifest["columns"]) == {SHAPE[2]}


def test_mixed_folder_keeps_the_largest_series(archive: Path) -> None:
    target, donor = _series_dirs(archive)[:2]
    scout = generate_uid()
    for f in sorted(donor.iterdir())[:3]:  # three slices of another series, re-labelled as a scout series
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = scout
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(target / f"scout-{f.name}")
    result = _manifest(archive)
    uid = pydicom.dcmread(next(target.glob("0*.dcm")), stop_before_pixels=True).SeriesInstanceUID
    assert f"{target}{SERIES_TAG}{uid}" in set(result.manifest["image_path"])
    assert _image_rejects(result) == {f"{target}{SERIES_TAG}{scout}": "series_mixed"}
    counts = result.meta["counts"]
    assert counts["inputs"] == N_STUDIES + 1 and counts["kept"] == N_STUDIES


def test_series_split_over_two_folders_is_rejected(archive: Path) -> None:
    folder = _series_dirs(archive)[0]
    other = folder.parent / "split"
    other.mkdir()
    for f in sorted(folder.iterdir())[::2]:
        shutil.move(f, other / f.name)
    result = _manifest(archive)
    assert _image_rejects(result) == {str(folder): "series_split", str(other): "series_split"}
    assert result.meta["counts"]["inputs"] == N_STUDIES + 1


def test_copied_series_is_a_duplicate(archive: Path) -> None:
    folder = _series_dirs(archive)[0]
    shutil.copytree(folder, folder.parent / "copy")
    result = _manifest(archive)
    assert list(_image_rejects(result).values()) == ["duplicate_sop"]
    assert result.meta["counts"]["kept"] == N_STUDIES


def test_nifti_index_rules(archive: Path) -> None:
    """Without index.csv the stem is patient/study/accession; with one, an unlisted NIfTI is rejected."""
    nifti = sorted((archive / "nifti").glob("*.nii.gz"))
    assert nifti
    extra = archive / "nifti" / "unlisted.nii.gz"
    shutil.copy(nifti[0], extra)
    result = _manifest(archive)
    assert _image_rejects(result) == {str(extra): "no_metadata"}
    (archive / "nifti" / "index.csv").unlink()
    extra.unlink()
    result = _manifest(archive)
    rows = result.manifest[result.manifest["image_path"].str.endswith(".nii.gz")]
    assert len(rows) == len(nifti)
    assert list(rows["study_id"]) == list(rows["accession"]) and all(
        Path(p).name == f"{a}.nii.gz" for p, a in zip(rows["image_path"], rows["accession"], strict=True)
    )  # reports are still found: they are named by accession


def test_unreadable_nifti_and_other_modality(archive: Path) -> None:
    bad = archive / "nifti" / "cut.nii.gz"
    whole = next((archive / "nifti").glob("*.nii.gz")).read_bytes()
    bad.write_bytes(whole[: len(whole) // 2])
    with open(archive / "nifti" / "index.csv", "a", encoding="utf-8") as fh:
        fh.write("nifti/cut.nii.gz,99999999,P9,1.2.3,20200101,F,050Y,CT CHEST,LPS\n")
    result = _manifest(archive)
    assert _image_rejects(result) == {str(bad): "truncated"}
    result = _manifest(archive, modalities=("MR",))
    assert result.meta["counts"]["kept"] == 0
    assert set(_image_rejects(result).values()) == {"modality"}  # filtered before any file is read


@pytest.mark.parametrize("axes", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_nifti_header_shape_matches_the_loader(tmp_path: Path, axes: tuple[int, int, int]) -> None:
    """Without verify_pixels rows/columns come from the header; they must agree with load_volume's [D, H, W]."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, 2.0, 3.0])[:, list(axes)]
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32), affine), path)
    assert _nifti_shape(path) == load_volume(path)[0].shape


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        LAYOUTS.get("dicom-ct")(tmp_path / "missing")


def test_verification_in_worker_processes_gives_the_same_manifest(archive: Path) -> None:
    Path(load_series(_series_dirs(archive)[0])[1]["files"][3]).unlink()  # a reject found only by loading pixels
    bad = archive / "nifti" / "cut.nii.gz"
    whole = next((archive / "nifti").glob("*.nii.gz")).read_bytes()
    bad.write_bytes(whole[: len(whole) // 2])
    with open(archive / "nifti" / "index.csv", "a", encoding="utf-8") as fh:
        fh.write("nifti/cut.nii.gz,99999999,P9,1.2.3,20200101,F,050Y,CT CHEST,LPS\n")
    serial = _manifest(archive, layout_options={"workers": 1})
    pooled = _manifest(archive, layout_options={"workers": 3})
    assert sorted(_image_rejects(pooled).values()) == ["series_gap", "truncated"]
    pd.testing.assert_frame_equal(serial.manifest, pooled.manifest)
    pd.testing.assert_frame_equal(serial.rejects, pooled.rejects)
    assert serial.meta == pooled.meta
