"""Tests for the 3-D CT pipeline (medclip.data.volume_transforms): geometry, HU windows, DICOM == NIfTI."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medclip.config import PreprocessCfg
from medclip.data.volume_transforms import AXCODES, HUWindowsd, read_volume, volume_is_input, volume_transforms
from medclip.io.dicom import ReadError
from medclip.synth.ct.archive import synth_ct

LUNG, MEDIASTINUM = (-600.0, 1500.0), (40.0, 400.0)


def _cfg(**kwargs) -> PreprocessCfg:
    base = {"spatial_dims": 3, "channels": 2, "volume_shape": [32, 64, 64], "target_spacing": [5.0, 5.5, 5.5]}
    return PreprocessCfg(**(base | kwargs))


def _run(path: str | Path, cfg: PreprocessCfg | None = None) -> np.ndarray:
    out = Compose(volume_transforms(cfg or _cfg()))({"image": str(path)})["image"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    return out.numpy()


@pytest.fixture(scope="module")
def same_studies(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path, str]]:
    """Two studies written once as DICOM series and once as NIfTI (one L-P-S, one R-A-S voxel order)."""
    root = tmp_path_factory.mktemp("ctvol")
    synth_ct(root / "d", studies=2, seed=0, nifti_fraction=0.0)
    synth_ct(root / "n", studies=2, seed=0, nifti_fraction=1.0)
    with open(root / "n" / "nifti" / "index.csv", newline="", encoding="utf-8") as fh:
        index = {r["accession"]: r for r in csv.DictReader(fh)}
    pairs = []
    for folder in sorted(p for p in (root / "d" / "dicom").glob("*/*/*") if p.is_dir()):
        entry = index[folder.parts[-2].split("-")[1]]
        pairs.append((folder, root / "n" / entry["file"], entry["axcodes"]))
    assert {a for _, _, a in pairs} == {"LPS", "RAS"}
    return pairs


@pytest.fixture(scope="module")
def outputs(same_studies: list[tuple[Path, Path, str]]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(_run(folder), _run(nifti)) for folder, nifti, _ in same_studies]


def test_dicom_series_and_nifti_give_the_same_array(outputs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for from_dicom, from_nifti in outputs:
        np.testing.assert_allclose(from_dicom, from_nifti, atol=1e-5)


def test_shape_dtype_and_range(outputs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for out, _ in outputs:
        assert out.shape == (2, 32, 64, 64) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0 and np.isfinite(out).all()
        assert out[0].std() > 0.1 and out[1].std() > 0.05  # both windows show structure


def test_lung_is_mid_gray_in_the_lung_window_and_black_in_the_mediastinal_window(
    outputs: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    lo, hi = LUNG[0] - LUNG[1] / 2, LUNG[0] + LUNG[1] / 2
    for out, _ in outputs:
        hu = lo + out[0] * (hi - lo)  # channel 0 inverted: exact HU inside the lung window
        lung = (hu > -950) & (hu < -650)
        assert lung.mean() > 0.03
        assert 0.2 < out[0][lung].mean() < 0.5
        assert out[1][lung].max() == 0.0
        assert out[1][(hu > -50) & (hu < 100)].mean() > 0.3  # soft tissue is mid-gray in the mediastinal window


def test_crop_and_pad_to_volume_shape(same_studies: list[tuple[Path, Path, str]]) -> None:
    # 240 mm of scan at 10 mm -> 24 slices padded to 40; 96 x 3.4+ mm at 2 mm -> 163+ px cropped to 100.
    out = _run(same_studies[0][1], _cfg(volume_shape=[40, 100, 120], target_spacing=[10.0, 2.0, 2.0]))
    assert out.shape == (2, 40, 100, 120)
    assert (out[:, :8] == 0).all() and (out[:, -8:] == 0).all() and out[:, 8:-8].max() == 1.0


def test_one_channel_per_window_in_order(same_studies: list[tuple[Path, Path, str]]) -> None:
    windows = [list(MEDIASTINUM), [400.0, 1800.0], list(LUNG)]
    out = _run(same_studies[0][1], _cfg(channels=3, hu_windows=windows))
    ref = _run(same_studies[0][1])
    assert out.shape[0] == 3
    np.testing.assert_allclose(out[0], ref[1], atol=1e-6)
    np.testing.assert_allclose(out[2], ref[0], atol=1e-6)


def test_hu_windows_values() -> None:
    hu = torch.tensor([-2000.0, -160.0, 40.0, 240.0, 3000.0]).reshape(1, 5)
    out = HUWindowsd("x", [MEDIASTINUM])({"x": hu})["x"]
    np.testing.assert_allclose(out.numpy(), [[0.0, 0.0, 0.5, 1.0, 1.0]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 1}, "channels=2"),
        ({"spatial_dims": 2}, "spatial_dims=3"),
        ({"volume_shape": [32, 64]}, "volume_shape"),
        ({"target_spacing": [5.0, 0.0, 5.5]}, "target_spacing"),
        ({"hu_windows": [[40.0, 0.0], [1.0, 2.0]]}, "width > 0"),
    ],
)
def test_bad_config_is_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        volume_transforms(_cfg(**kwargs))


def test_broken_series_raises_the_reader_reason(tmp_path: Path, same_studies: list[tuple[Path, Path, str]]) -> None:
    files = sorted(same_studies[0][0].iterdir())
    broken = tmp_path / "series"
    broken.mkdir()
    for f in files[:20] + files[21:]:
        (broken / f.name).write_bytes(f.read_bytes())
    # Files are named by InstanceNumber, not position; removing one may drop an end slice, so compare with the loader.
    try:
        read_volume(broken)
    except ReadError as exc:
        with pytest.raises(RuntimeError) as info:  # MONAI's Compose names the failing transform, the cause says why
            _run(broken)
        assert isinstance(info.value.__cause__, ReadError) and info.value.__cause__.reason == exc.reason
    else:
        assert _run(broken).shape == (2, 32, 64, 64)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a/b.nii.gz", True), ("a/b.NII", True), ("a/b.dcm", False), ("a/b.png", False), ("a/3#series=1.2.3", True)],
)
def test_volume_is_input(name: str, expected: bool) -> None:
    assert volume_is_input(name) is expected


def test_volume_is_input_folder(tmp_path: Path) -> None:
    assert volume_is_input(tmp_path)


# ---------------------------------------------------------------------------------------------- left / right
N, STEP = 40, 4.0  # a 156 mm cube of 4 mm voxels centred on the world origin
HALF = (N - 1) / 2 * STEP
MARKER_LPS = np.array([40.0, -30.0, 25.0])  # patient's left, anterior, superior


def _phantom(lps: np.ndarray) -> np.ndarray:
    """HU at LPS points [..., 3]: air, a soft-tissue box, a bone-bright ball at MARKER_LPS."""
    hu = np.full(lps.shape[:-1], -1000.0)
    hu[(np.abs(lps) < [70.0, 60.0, 70.0]).all(-1)] = 0.0
    hu[np.linalg.norm(lps - MARKER_LPS, axis=-1) < 12.0] = 1000.0
    return hu


def _write_nifti(path: Path, affine: np.ndarray) -> Path:
    ijk = np.stack(np.meshgrid(*(np.arange(N),) * 3, indexing="ij"), -1).astype(np.float64)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    img = nib.Nifti1Image(_phantom(ras * [-1, -1, 1]).astype(np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


def _write_series(folder: Path, row_dir: list[float], col_dir: list[float]) -> Path:
    """One CT series over the cube; ``row_dir``/``col_dir`` are the LPS directions of increasing column/row index."""
    folder.mkdir()
    r, c = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(r, c)
    series, study = generate_uid(), generate_uid()
    ii, jj = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    for k in range(N):
        corner = -HALF * (r + c + normal) + k * STEP * normal
        lps = corner + (jj[..., None] * r + ii[..., None] * c) * STEP
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", "LR", study, series
        ds.ImageOrientationPatient = [f"{v:g}" for v in (*r, *c)]
        ds.ImagePositionPatient = [f"{v:.3f}" for v in corner]
        ds.PixelSpacing = [f"{STEP:g}", f"{STEP:g}"]
        ds.Rows = ds.Columns = N
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        ds.PixelData = _phantom(lps).astype("<i2").tobytes()
        ds.save_as(folder / f"{N - k:04d}.dcm", enforce_file_format=True)
    return folder


def _affine(axes: list[list[int]], origin: list[float]) -> np.ndarray:
    """RAS affine whose voxel axes i, j, k point along ``axes`` (RAS unit vectors), voxel [0, 0, 0] at ``origin``."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(axes, dtype=float).T * STEP
    affine[:3, 3] = origin
    return affine


_ORIENTATIONS = {
    "nifti_ras_order": lambda p: _write_nifti(p / "v.nii.gz", _affine([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [-HALF] * 3)),
    "nifti_lps_order": lambda p: _write_nifti(
        p / "v.nii", _affine([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], [HALF, HALF, -HALF])
    ),
    # stored [S, R, A]: the first array axis runs up the body
    "nifti_permuted": lambda p: _write_nifti(p / "v.nii.gz", _affine([[0, 0, 1], [1, 0, 0], [0, 1, 0]], [-HALF] * 3)),
    "dicom_axial": lambda p: _write_series(p / "axial", [1, 0, 0], [0, 1, 0]),
    "dicom_axial_flipped": lambda p: _write_series(p / "flipped", [-1, 0, 0], [0, -1, 0]),
    "dicom_coronal": lambda p: _write_series(p / "coronal", [1, 0, 0], [0, 0, -1]),
    "dicom_sagittal": lambda p: _write_series(p / "sagittal", [0, 1, 0], [0, 0, -1]),
}


@pytest.fixture(scope="module")
def marker_reference(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _run(_ORIENTATIONS["nifti_lps_order"](tmp_path_factory.mktemp("ref")))


@pytest.mark.parametrize("storage", sorted(_ORIENTATIONS))
def test_marker_on_the_patients_left_ends_at_high_w(tmp_path: Path, storage: str, marker_reference) -> None:
    """Whatever the storage order, output axes are D up the body, H front to back, W patient right -> left."""
    assert AXCODES == "SPL"
    out = _run(_ORIENTATIONS[storage](tmp_path))
    marker = out[1] == 1.0  # only the ball is above 240 HU
    d, h, w = (np.nonzero(marker)[a].mean() for a in range(3))
    centre = (np.array(out.shape[1:]) - 1) / 2
    assert w > centre[2] + 4, "marker on the patient's left must be at high W"
    assert h < centre[1] - 3, "anterior marker must be at low H"
    assert d > centre[0] + 2, "superior marker must be at high D"
    np.testing.assert_allclose(out, marker_reference, atol=2e-3)


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.realdata
@pytest.mark.parametrize(
    "rel",
    [
        "dicom/ct_series_totalsegmentator",
        "volumes/chest_ct_crop_1p5mm.nii.gz",
        "volumes/abdomen_ct_3mm_small.nii.gz",
    ],
)
def test_real_ct_passes_through(shared_data: Path, rel: str) -> None:
    path = shared_data / rel
    assert volume_is_input(path)
    out = _run(path)
    assert out.shape == (2, 32, 64, 64) and np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    body = out[1] > 0.3  # soft tissue or denser in the mediastinal window
    assert 0.05 < body.mean() < 0.9 and out[0][body].mean() > 0.7
