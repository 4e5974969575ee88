"""ct-rate: a tiny CT-RATE download (dataset/valid_fixed + the three official CSVs) run end to end with a tiny CT
checkpoint; first-release volumes (blank headers, raw values) refused."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medclip.bench.base import PRESETS, subset_hash
from medclip.bench.presets.ct_rate import (
    ABNORMALITIES,
    VolumeHeader,
    header_problem,
    parse_spacing,
    report_text,
    volume_file,
)
from medclip.errors import InputError
from tests.bench.conftest import run_bench

# (patient, scan, reconstructions): 4 patients, 5 scans, 7 volumes; valid_9_a_1 is labelled but has no report
SCANS = ((1, "a", 2), (2, "a", 1), (2, "b", 1), (3, "a", 1), (4, "a", 2))
NO_REPORT = "valid_9_a_1"
SHAPE = (32, 32, 16)  # stored x, y, z
XY, Z = 6.0, 5.0  # mm; coarse, so the tiny checkpoint's 10 x 11 x 11 mm resampling keeps some structure
METADATA_LINE = (  # the first line of the release's validation_metadata.csv
    "VolumeName,Manufacturer,SeriesDescription,ManufacturerModelName,PatientSex,PatientAge,ReconstructionDiameter,"
    "DistanceSourceToDetector,DistanceSourceToPatient,GantryDetectorTilt,TableHeight,RotationDirection,ExposureTime,"
    "XRayTubeCurrent,Exposure,FilterType,GeneratorPower,FocalSpots,ConvolutionKernel,PatientPosition,RevolutionTime,"
    "SingleCollimationWidth,TotalCollimationWidth,TableSpeed,TableFeedPerRotation,SpiralPitchFactor,"
    "DataCollectionCenterPatient,ReconstructionTargetCenterPatient,ExposureModulationType,CTDIvol,"
    "ImagePositionPatient,ImageOrientationPatient,SliceLocation,SamplesPerPixel,PhotometricInterpretation,Rows,"
    "Columns,XYSpacing,RescaleIntercept,RescaleSlope,RescaleType,NumberofSlices,ZSpacing,StudyDate"
)
METADATA_HEADER = tuple(METADATA_LINE.split(","))
MANUFACTURERS = ("Philips", "SIEMENS", "PNMS")


def _volume_names() -> list[str]:
    return [f"valid_{p}_{s}_{r}" for p, s, n in SCANS for r in range(1, n + 1)]


def _hu(seed: int) -> np.ndarray:
    """[x, y, z] HU: air padding, a soft-tissue body, two lungs and a seeded nodule."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    hu = np.full(SHAPE, -1024.0)
    hu[(x / 0.9) ** 2 + (y / 0.7) ** 2 < 1] = 40.0
    for side in (-0.45, 0.45):
        hu[((x - side) / 0.3) ** 2 + (y / 0.5) ** 2 < 1] = -850.0
    cx, cy, cz = rng.uniform(-0.5, 0.5, 3)
    hu[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < rng.uniform(0.02, 0.08)] = 60.0
    return hu + rng.normal(0, 15, SHAPE)


def write_nifti(path: Path, stored: np.ndarray, affine: np.ndarray | None, *, slope=None, inter=None) -> Path:
    """A .nii.gz with the stored values as given and, when set, scl_slope / scl_inter written into the header (as a
    DICOM converter does; nibabel would otherwise rescale the array itself)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(stored, affine)
    if affine is not None:
        img.set_qform(affine, code=1)
    blob = img.to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(blob))
    if slope is not None:
        header["scl_slope"], header["scl_inter"] = slope, inter
    path.write_bytes(gzip.compress(header.binaryblock + blob[len(header.binaryblock) :]))
    return path


def _labels(names: list[str]) -> pd.DataFrame:
    """0 / 1 per abnormality, both classes in every column among the volumes with a report."""
    rows = []
    for name in names:
        scan = int(name.split("_")[1])  # reconstructions of a scan share their labels, as in the release
        rows.append([name + ".nii.gz", *[int((scan + j + (name.split("_")[2] == "b")) % 2) for j in range(18)]])
    return pd.DataFrame(rows, columns=["VolumeName", *ABNORMALITIES])


def write_ct_rate(root: Path, *, release: str = "fixed") -> Path:
    """The official tree: fixed (``valid_fixed/``, stored raw + scl_inter, or HU for one manufacturer) or first
    (``valid/``, float raw values, identity affine and no scaling) or raw (``valid_fixed/`` with a proper affine but
    unscaled raw values)."""
    names = _volume_names() + [NO_REPORT]
    folder = root / "dataset" / ("valid" if release == "first" else "valid_fixed")
    affine = np.diag([-XY, -XY, Z, 1.0])
    meta = []
    for i, name in enumerate(names):
        hu = _hu(i)
        path = volume_file(folder, name)
        if release == "first":
            write_nifti(path, (hu + 1024).astype(np.float32), np.eye(4))
        elif release == "raw":
            write_nifti(path, np.round(hu + 1024).astype(np.int16), affine)
        elif i % 3 == 2:  # stored as HU directly: also a valid header
            write_nifti(path, np.round(hu).astype(np.int16), affine)
        else:
            write_nifti(path, np.round(hu + 1024).astype(np.int16), affine, slope=1.0, inter=-1024.0)
        row = dict.fromkeys(METADATA_HEADER, "")
        row.update(
            VolumeName=f"{name}.nii.gz",
            Manufacturer=MANUFACTURERS[i % 3],
            PatientSex="MF"[i % 2],
            PatientAge=f"{30 + 12 * i:03d}Y",
            XYSpacing=f"[{XY}, {XY}]",
            ZSpacing=Z,
            RescaleIntercept=-1024,
            RescaleSlope=1,
            Rows=SHAPE[1],
            Columns=SHAPE[0],
            NumberofSlices=SHAPE[2],
        )
        meta.append(row)
    _write_csv(root / "dataset/metadata/validation_metadata.csv", pd.DataFrame(meta, columns=METADATA_HEADER))
    _write_csv(root / "dataset/multi_abnormality_labels/valid_predicted_labels.csv", _labels(names))
    reports = [
        (
            f"{name}.nii.gz",
            "Not given.",
            "Non-contrast thin-section chest CT.",
            f'Findings of scan {name.rsplit("_", 1)[0]}: "nodule" (right upper lobe).',
            "Not given." if i % 2 else f"Impression {i}.",
        )
        for i, name in enumerate(_volume_names())
    ]
    columns = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
    _write_csv(root / "dataset/radiology_text_reports/validation_reports.csv", pd.DataFrame(reports, columns=columns))
    return root


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)


@pytest.fixture(scope="module")
def ct_checkpoint(ct_demo_run) -> Path:
    """The session's tiny 3-D checkpoint (tests/conftest.py: the CT demo at its smallest)."""
    return ct_demo_run / "train" / "final"


@pytest.fixture(scope="module")
def ct_rate_root(tmp_path_factory) -> Path:
    return write_ct_rate(tmp_path_factory.mktemp("ct_rate"))


def test_ct_rate_end_to_end(ct_rate_root, ct_checkpoint, tmp_path):
    code, results = run_bench("ct-rate", ct_rate_root, ct_checkpoint, tmp_path / "a", "plots=false")
    assert code == 0
    assert results["headline"]["metric"] == "zero-shot macro AUROC"
    assert 0.0 <= results["headline"]["value"] <= 1.0
    protocol = results["protocol"]
    assert protocol["n_images"] == {"train": 0, "val": 0, "test": 7}  # valid_9_a_1 has no report
    assert protocol["findings"] == [re.sub(r"[^a-z0-9]+", "_", f.lower()) for f in ABNORMALITIES]
    assert protocol["retrieval_ks"] == [5, 10, 50, 100] and protocol["prompt_set"] == "ct_rate"
    decisions = protocol["decisions"]
    assert (decisions["n_volumes"], decisions["n_scans"], decisions["n_patients"]) == (7, 5, 4)
    assert decisions["skipped_no_report"] == 1 and "valid_fixed" in decisions["split"]
    assert set(results["retrieval"]["text_to_image"]) >= {"R@5", "R@10", "R@50", "R@100"}
    assert results["retrieval"]["n_texts"] == 5  # one report per scan; a scan's reconstructions are its hits
    assert len(results["zero_shot"]["per_finding"]) == 18

    again = run_bench("ct-rate", ct_rate_root, ct_checkpoint, tmp_path / "b", "plots=false")[1]
    assert again["protocol"]["subset_hash"] == protocol["subset_hash"]


def test_ct_rate_table(ct_rate_root):
    data = PRESETS.get("ct-rate").load(ct_rate_root)
    rows = data.table.rows.set_index(data.table.rows["image_path"].map(lambda p: Path(p).name))
    assert NO_REPORT + ".nii.gz" not in rows.index and len(rows) == 7
    row = rows.loc["valid_2_b_1.nii.gz"]
    assert row["image_path"].endswith("dataset/valid_fixed/valid_2/valid_2_b/valid_2_b_1.nii.gz")
    assert row["study_id"] == "valid_2_b" and row["sex"] == "F" and row["manufacturer"] == "Philips"
    assert row["age_band"] == "60-79"  # "066Y"
    assert row["report"] == "Findings of scan valid_2_b: nodule right upper lobe."  # "Not given." impression dropped
    assert rows.loc["valid_1_a_1.nii.gz", "report"].endswith("lobe. Impression 0.")
    assert sorted(data.table.labels.columns) == sorted(re.sub(r"[^a-z0-9]+", "_", f.lower()) for f in ABNORMALITIES)


def test_ct_rate_subset_hash_follows_the_labels(ct_rate_root, tmp_path):
    preset = PRESETS.get("ct-rate")
    before = subset_hash(preset.load(ct_rate_root).table, ct_rate_root)
    root = write_ct_rate(tmp_path / "copy")
    assert subset_hash(preset.load(root).table, root) == before  # same release elsewhere: same hash
    labels_csv = root / "dataset/multi_abnormality_labels/valid_predicted_labels.csv"
    labels = pd.read_csv(labels_csv)
    labels.loc[0, "Emphysema"] = 1 - labels.loc[0, "Emphysema"]
    labels.to_csv(labels_csv, index=False)
    assert subset_hash(preset.load(root).table, root) != before


@pytest.mark.parametrize(
    ("release", "reason"),
    [("first", "have no geometry in their NIfTI header"), ("raw", "store raw scanner values")],
)
def test_ct_rate_refuses_volumes_that_need_the_metadata(release, reason, ct_checkpoint, tmp_path, capsys):
    root = write_ct_rate(tmp_path / "data", release=release)
    code, _ = run_bench("ct-rate", root, ct_checkpoint, tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2
    assert f"7 of 7 volumes {reason}" in err and "valid_fixed/" in err  # every evaluated volume checked


def test_ct_rate_refuses_one_first_release_file_among_fixed_ones(tmp_path):
    root = write_ct_rate(tmp_path / "data")
    bad = volume_file(root / "dataset/valid_fixed", "valid_4_a_2")
    write_nifti(bad, (_hu(0) + 1024).astype(np.float32), np.eye(4))
    with pytest.raises(
        InputError, match=r"1 of 7 volumes have no geometry .* e\.g\. dataset/valid_fixed/valid_4/valid_4_a/"
    ):
        PRESETS.get("ct-rate").load(root)


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("dataset/radiology_text_reports/validation_reports.csv", "validation_reports.csv"),
        ("dataset/valid_fixed", "dataset/valid_fixed or dataset/valid"),
        ("dataset/valid_fixed/valid_3/valid_3_a/valid_3_a_1.nii.gz", "1 of 7 images listed by the release are missing"),
    ],
)
def test_ct_rate_incomplete_download(remove, named, ct_checkpoint, tmp_path, capsys):
    root = write_ct_rate(tmp_path / "data")
    target = root / remove
    if target.is_dir():
        for f in sorted(target.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        target.rmdir()
    else:
        target.unlink()
    code, _ = run_bench("ct-rate", root, ct_checkpoint, tmp_path / "out")
    assert code == 2 and named in capsys.readouterr().err


def test_ct_rate_wrong_label_header(tmp_path):
    root = write_ct_rate(tmp_path / "data")
    labels_csv = root / "dataset/multi_abnormality_labels/valid_predicted_labels.csv"
    pd.read_csv(labels_csv).rename(columns={"Lung nodule": "Lung Nodule"}).to_csv(labels_csv, index=False)
    with pytest.raises(InputError, match=r"lacks the columns \['Lung nodule'\]"):
        PRESETS.get("ct-rate").load(root)


def test_report_text_follows_ct_clip():
    assert report_text("Heart normal.", "Not given.") == "Heart normal."
    assert report_text(float("nan"), 'No "acute" (chronic) findings.') == "No acute chronic findings."
    assert report_text("Not given.", "Not given.") == ""


def test_parse_spacing_reads_the_metadata_cells():
    assert parse_spacing("[0.341796875, 0.341796875]", 1.5) == (0.341796875, 0.341796875, 1.5)
    assert parse_spacing("[0.75, 0.8]", "2") == (0.75, 0.8, 2.0)
    assert parse_spacing("", 1.5) is None and parse_spacing("[0.7, 0.7]", "n/a") is None


def test_volume_file_accepts_names_with_and_without_suffix():
    folder = Path("/d/valid_fixed")
    expected = folder / "valid_53" / "valid_53_a" / "valid_53_a_1.nii.gz"
    assert volume_file(folder, "valid_53_a_1.nii.gz") == volume_file(folder, "valid_53_a_1") == expected
    with pytest.raises(InputError, match="valid_<patient>_<scan>_<recon>"):
        volume_file(folder, "valid_53.nii.gz")


def _header(*, rotation=None, first_min=-1024.0, codes=(1, 2)) -> VolumeHeader:
    rotation = np.diag([-0.7, -0.7, 1.5]) if rotation is None else rotation
    return VolumeHeader(codes[0], codes[1], rotation, (0.7, 0.7, 1.5), first_min)


@pytest.mark.parametrize(
    ("header", "slope", "intercept", "spacing", "problem"),
    [
        (_header(), 1.0, -1024.0, (0.7, 0.7, 1.5), None),  # HU in the file (header scaling applied)
        (_header(first_min=0.0), 1.0, -1024.0, (0.7, 0.7, 1.5), "raw_values"),
        (_header(first_min=0.0), 1.0, 0.0, (0.7, 0.7, 1.5), None),  # metadata would change nothing: not raw
        (_header(rotation=np.eye(3)), 1.0, -1024.0, (0.7, 0.7, 1.5), "blank_geometry"),
        (_header(rotation=np.eye(3)), 1.0, -1024.0, (1.0, 1.0, 1.0), None),  # a genuine 1 mm volume
        (_header(codes=(0, 0)), 1.0, -1024.0, (0.7, 0.7, 1.5), "blank_geometry"),
    ],
)
def test_header_problem(header, slope, intercept, spacing, problem):
    assert header_problem(header, spacing=spacing, slope=slope, intercept=intercept) == problem
