"""Image/series/volume readers: real pydicom-data files, synthetic DICOM/NIfTI, and every ReadError reason."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from medclip.io.dicom import CXR_MODALITIES, REASONS, ReadError, load_image, read_header
from medclip.io.volumes import load_series, load_volume

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def write_dicom(path: Path, arr: np.ndarray | None, **attrs) -> Path:
    """A minimal valid DICOM; ``arr`` is uint16 [H, W] (or [F, H, W]); attrs override/extend the header."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CR", "P1", "1.2.3", "1.2.3.4"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if arr is not None:
        ds.Rows, ds.Columns = arr.shape[-2:]
        if arr.ndim == 3:
            ds.NumberOfFrames = arr.shape[0]
        ds.PixelData = arr.astype(np.uint16).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(h: int = 64, w: int = 48) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 4000 + 50).astype(np.uint16)


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed (pip install pydicom-data)")
    return path


# ---------------------------------------------------------------- real chest CR in four encodings (pydicom-data)


@pytest.fixture(scope="module")
def rg1() -> dict[str, np.ndarray]:
    return {enc: load_image(pydicom_file(f"RG1_{enc}.dcm"))[0] for enc in ("UNCR", "J2KR", "UNCI", "J2KI")}


def test_rg1_encodings_agree(rg1):
    # "R" = reversible original, "I" = the irreversibly compressed version; each has a J2K and an uncompressed twin.
    np.testing.assert_array_equal(rg1["UNCR"], rg1["J2KR"])
    np.testing.assert_array_equal(rg1["UNCI"], rg1["J2KI"])
    assert np.abs(rg1["UNCR"] - rg1["J2KI"]).mean() < 0.005
    assert rg1["UNCR"].shape == (1955, 1841) and rg1["UNCR"].dtype == np.float32


def test_rg1_monochrome1_lungs_dark(rg1):
    img = rg1["J2KR"]
    h, w = img.shape
    band = slice(h // 2 - 100, h // 2 + 100)
    centre = img[band, w // 2 - 50 : w // 2 + 50].mean()
    lungs = [img[band, w // 4 - 50 : w // 4 + 50].mean(), img[band, 3 * w // 4 - 50 : 3 * w // 4 + 50].mean()]
    assert centre > max(lungs) + 0.1
    assert img.min() >= 0.0 and img.max() <= 1.0


def test_read_header_rg1():
    meta = read_header(pydicom_file("RG1_J2KI.dcm"))
    assert meta["modality"] == "CR" and meta["view"] == "PA" and meta["photometric"] == "MONOCHROME1"
    assert (meta["rows"], meta["columns"], meta["bits_stored"], meta["number_of_frames"]) == (1955, 1841, 15, 1)
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.4.91"


@pytest.mark.parametrize(
    "family",
    [
        ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm"]
        + ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
        ["emri_small.dcm", "emri_small_big_endian.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm"]
        + ["emri_small_jpeg_2k_lossless.dcm"],
    ],
)
def test_lossless_syntaxes_identical(family):
    ref = load_image(pydicom_file(family[0]), frame=1 if "emri" in family[0] else 0)[0]
    for name in family[1:]:
        np.testing.assert_array_equal(load_image(pydicom_file(name), frame=1 if "emri" in name else 0)[0], ref, name)


@pytest.mark.parametrize(
    "name",
    ["JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "JPGExtended.dcm", "image_dfl.dcm", "SC_rgb_jpeg_dcmtk.dcm"],
)
def test_other_syntaxes_decode(name):
    img, meta = load_image(pydicom_file(name))
    assert img.ndim == 2 and img.dtype == np.float32 and img.max() > img.min()


def test_voi_lut_sequence_file():
    img, meta = load_image(pydicom_file("vlut_04.dcm"))
    assert meta["normalisation"] == "voi_lut" and 0.0 <= img.min() < img.max() <= 1.0


# ---------------------------------------------------------------- synthetic windowing / photometric / padding


def test_window_after_rescale(tmp_path):
    raw = ramp()
    path = write_dicom(
        tmp_path / "w.dcm", raw, RescaleSlope=2, RescaleIntercept=-4000, WindowCenter=[40, 400], WindowWidth=[400, 2000]
    )
    hu = raw * 2.0 - 4000
    for index, (c, w) in enumerate([(40, 400), (400, 2000)]):
        img, meta = load_image(path, window_index=index)
        # DICOM PS3.3 C.11.2.1.2 linear window, which is what pydicom applies; checked independently here.
        expected = np.clip((hu - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
        np.testing.assert_allclose(img, expected, atol=1e-5)
        assert meta["normalisation"] == "window"


def test_minmax_without_window(tmp_path):
    raw = ramp()
    img, meta = load_image(write_dicom(tmp_path / "m.dcm", raw, RescaleSlope=3, RescaleIntercept=-10))
    np.testing.assert_allclose(img, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    assert meta["normalisation"] == "minmax"


def test_monochrome1_equals_monochrome2(tmp_path):
    raw = ramp()
    mono2 = load_image(write_dicom(tmp_path / "m2.dcm", raw))[0]
    mono1 = load_image(write_dicom(tmp_path / "m1.dcm", 4095 - raw, PhotometricInterpretation="MONOCHROME1"))[0]
    np.testing.assert_allclose(mono1, mono2, atol=1e-6)
    win2 = load_image(write_dicom(tmp_path / "w2.dcm", raw, WindowCenter=1500, WindowWidth=2000))[0]
    # The mirrored window on the inverted values shows the same picture (up to the window's half-step asymmetry).
    win1 = write_dicom(
        tmp_path / "w1.dcm", 4095 - raw, PhotometricInterpretation="MONOCHROME1", WindowCenter=2595, WindowWidth=2000
    )
    np.testing.assert_allclose(load_image(win1)[0], win2, atol=2e-3)


def test_padding_excluded_and_zeroed(tmp_path):
    raw = ramp()
    raw[:8] = 4095  # padding rows with a value far outside the anatomy
    img, _ = load_image(write_dicom(tmp_path / "p.dcm", raw, PixelPaddingValue=4095))
    assert (img[:8] == 0).all()
    body = raw[8:].astype(float)
    np.testing.assert_allclose(img[8:], (body - body.min()) / (body.max() - body.min()), atol=1e-6)


def test_multiframe_and_spacing(tmp_path):
    frames = np.stack([ramp() + 10 * k for k in range(3)])
    frames[2, 0, 0] = 4095
    path = write_dicom(tmp_path / "mf.dcm", frames, PixelSpacing=[0.5, 0.25], ViewPosition="LL")
    img, meta = load_image(path, frame=2)
    assert img[0, 0] == 1.0 and meta["pixel_spacing"] == (0.5, 0.25) and meta["view"] == "LATERAL"
    assert meta["number_of_frames"] == 3 and meta["source_shape"] == (64, 48)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian])
def test_written_syntaxes_roundtrip(tmp_path, syntax):
    raw = ramp()
    ref = load_image(write_dicom(tmp_path / "ref.dcm", raw))[0]
    ds = pydicom.dcmread(tmp_path / "ref.dcm")
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        ds.compress(syntax)
    ds.save_as(tmp_path / "enc.dcm")
    img, meta = load_image(tmp_path / "enc.dcm")
    np.testing.assert_array_equal(img, ref)
    assert meta["transfer_syntax"] == syntax


def test_rgb_dicom_to_gray(tmp_path):
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0], rgb[:20, :, 1] = 200, 100
    path = write_dicom(
        tmp_path / "rgb.dcm",
        None,
        Rows=40,
        Columns=40,
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelData=rgb.tobytes(),
    )
    img, meta = load_image(path)
    np.testing.assert_allclose(img[0, 0], (0.299 * 200 + 0.587 * 100) / 255, atol=1e-6)
    assert meta["normalisation"] == "luminance" and img.shape == (40, 40)


def test_png_and_jpeg(tmp_path):
    gray8 = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    Image.fromarray(gray8).save(tmp_path / "g.png")
    np.testing.assert_allclose(load_image(tmp_path / "g.png")[0], gray8 / 255.0, atol=1e-6)
    gray16 = (np.arange(64 * 64).reshape(64, 64) * 3).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    img16, meta = load_image(tmp_path / "g16.png")
    np.testing.assert_allclose(img16, gray16 / gray16.max(), atol=1e-6)
    assert meta["bits_stored"] == 16 and meta["modality"] is None
    Image.fromarray(np.stack([gray8] * 3, -1)).save(tmp_path / "c.jpg", quality=95)
    np.testing.assert_allclose(load_image(tmp_path / "c.jpg")[0], gray8 / 255.0, atol=0.05)


# ---------------------------------------------------------------- every ReadError reason, provoked


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, dict]]:
    good = write_dicom(tmp / "good.dcm", ramp())
    cases: dict[str, tuple[Path, dict]] = {"missing_file": (tmp / "nope.dcm", {}), "unreadable": (tmp, {})}
    (tmp / "text.dcm").write_text("this is a plain text note, not an image\n" * 20)
    cases["not_dicom"] = (tmp / "text.dcm", {})
    (tmp / "cut.dcm").write_bytes(good.read_bytes()[:-500])
    cases["truncated"] = (tmp / "cut.dcm", {})
    cases["no_pixel_data"] = (write_dicom(tmp / "sr.dcm", None, SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11"), {})
    jpeg = write_dicom(tmp / "jpg.dcm", None, Rows=64, Columns=64, PixelData=encapsulate([b"\xff\xd8 garbage" * 9]))
    ds = pydicom.dcmread(jpeg)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds["PixelData"].VR = "OB"
    ds.save_as(jpeg)
    cases["undecodable"] = (jpeg, {})
    cases["empty_image"] = (write_dicom(tmp / "e.dcm", None, Rows=0, Columns=0, PixelData=b""), {})
    cases["tiny_image"] = (write_dicom(tmp / "t.dcm", np.array([[7]])), {})
    cases["constant_image"] = (write_dicom(tmp / "k.dcm", np.full((64, 64), 300)), {})
    nan = ramp().astype(np.float32)
    nan[5, 5] = np.nan
    cases["nonfinite"] = (
        write_dicom(tmp / "n.dcm", None, Rows=64, Columns=48, BitsAllocated=32, FloatPixelData=nan.tobytes()),
        {},
    )
    cases["modality"] = (write_dicom(tmp / "us.dcm", ramp(), Modality="US"), {"modalities": CXR_MODALITIES})
    pal = write_dicom(tmp / "pal.dcm", ramp(), PhotometricInterpretation="PALETTE COLOR")
    cases["rgb"] = (pal, {})
    cases["bad_frame"] = (good, {"frame": 1})
    return cases


def test_every_image_reason(tmp_path):
    cases = _bad_inputs(tmp_path)
    for reason, (path, kwargs) in cases.items():
        assert reason in REASONS
        with pytest.raises(ReadError) as info:
            load_image(path, **kwargs)
        assert info.value.reason == reason, (reason, str(info.value))
        assert str(Path(path).name) in info.value.detail


def test_not_image_png(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png at all" * 10)
    with pytest.raises(ReadError, match="unreadable"):
        load_image(tmp_path / "x.png")
    Image.fromarray(np.zeros((64, 64), np.uint8) + np.arange(64, dtype=np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(ReadError) as info:
        load_image(tmp_path / "cut.png")
    assert info.value.reason in ("truncated", "undecodable")


def test_read_error_pickles():
    err = pickle.loads(pickle.dumps(ReadError("truncated", "x.dcm: cut")))
    assert (err.reason, err.detail) == ("truncated", "x.dcm: cut") and "truncated" in str(err)


def test_read_header_errors(tmp_path):
    with pytest.raises(ReadError, match="missing_file"):
        read_header(tmp_path / "nope.dcm")
    (tmp_path / "junk.dcm").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ReadError) as info:
        read_header(tmp_path / "junk.dcm")
    assert info.value.reason == "not_dicom"


# ---------------------------------------------------------------- CT series


def write_series(folder: Path, n: int = 10, dz: float = 2.5, skip: int | None = None, **per_slice) -> list[Path]:
    """An axial CT series in shuffled file order with shuffled InstanceNumbers; slice k holds value 100 + k."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    numbers = list(range(1, n + 1))
    rng.shuffle(numbers)
    paths = []
    for k in range(n):
        if k == skip:
            continue
        arr = np.full((40, 36), 1124 + k, np.uint16)
        arr[0, 0] = 0  # air corner, so no slice is constant
        attrs = {
            "Modality": "CT",
            "RescaleSlope": 1,
            "RescaleIntercept": -1024,
            "InstanceNumber": numbers[k],
            "ImagePositionPatient": [-20.0, -30.0, 100.0 + k * dz],
            "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
            "PixelSpacing": [0.7, 0.8],
        }
        for key, fn in per_slice.items():
            attrs[key] = fn(k, attrs.get(key))
        paths.append(write_dicom(folder / f"slice_{numbers[k]:03d}.dcm", arr, **attrs))
    rng.shuffle(paths)
    return paths


def test_series_sorted_by_position(tmp_path):
    paths = write_series(tmp_path / "s")
    vol, meta = load_series(paths)
    assert vol.shape == (10, 40, 36) and vol.dtype == np.float32
    np.testing.assert_array_equal(vol[:, 5, 5], 100 + np.arange(10))  # HU = stored - 1024
    assert meta["spacing"] == pytest.approx((2.5, 0.7, 0.8))
    assert meta["origin"] == pytest.approx((-20.0, -30.0, 100.0))
    np.testing.assert_allclose(meta["direction"], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert meta["series_uid"] == "1.2.3.4" and meta["modality"] == "CT"
    np.testing.assert_array_equal(load_series(tmp_path / "s")[0], vol)  # a directory works too


def test_series_tilted_normal(tmp_path):
    # Sagittal slices: normal = row x col = (0,1,0) x (0,0,-1) = (-1,0,0), so order follows decreasing x.
    tilt = {
        "ImageOrientationPatient": lambda k, _: [0, 1, 0, 0, 0, -1],
        "ImagePositionPatient": lambda k, _: [50.0 - 3.0 * k, 0.0, 0.0],
    }
    vol, meta = load_series(write_series(tmp_path / "sag", **tilt))
    np.testing.assert_array_equal(vol[:, 5, 5], 100 + np.arange(10))
    assert meta["spacing"][0] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("reason", "kwargs"),
    [
        ("series_gap", {"skip": 4}),
        ("series_duplicate", {"ImagePositionPatient": lambda k, p: [-20.0, -30.0, 100.0 + 2.5 * min(k, 8)]}),
        ("series_orientation", {"ImageOrientationPatient": lambda k, o: [1, 0, 0, 0, 0.96, 0.28] if k == 3 else o}),
        ("series_shape", {"PixelSpacing": lambda k, s: [0.9, 0.9] if k == 6 else s}),
        ("series_mixed", {"SeriesInstanceUID": lambda k, _: "1.2.3.5" if k == 2 else "1.2.3.4"}),
    ],
)
def test_series_rejects(tmp_path, reason, kwargs):
    with pytest.raises(ReadError) as info:
        load_series(write_series(tmp_path / "s", **kwargs))
    assert info.value.reason == reason


def test_series_shape_and_geometry_rejects(tmp_path):
    paths = write_series(tmp_path / "s")
    odd = write_dicom(tmp_path / "odd.dcm", np.ones((20, 20), np.uint16), Modality="CT", SeriesInstanceUID="1.2.3.4")
    with pytest.raises(ReadError, match="series_shape"):
        load_series([*paths, odd])
    bare = write_dicom(tmp_path / "bare.dcm", ramp(40, 36), SeriesInstanceUID="1.2.3.4", PixelSpacing=[0.7, 0.8])
    with pytest.raises(ReadError, match="series_geometry"):
        load_series([*paths, bare])
    with pytest.raises(ReadError, match="missing_file"):
        load_series([])


# ---------------------------------------------------------------- NIfTI


def _nifti_from(vol: np.ndarray, meta: dict) -> nib.Nifti1Image:
    """The NIfTI of a [D, H, W] volume + load_series meta (the inverse of load_volume's convention)."""
    dz, dy, dx = meta["spacing"]
    axes_lps = np.stack(
        [np.asarray(meta["direction"][2]) * dx, meta["direction"][1] * dy, meta["direction"][0] * dz], 1
    )
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = LPS_TO_RAS @ axes_lps, LPS_TO_RAS @ np.asarray(meta["origin"])
    return nib.Nifti1Image(vol.transpose(2, 1, 0).astype(np.int16), affine)


def test_nifti_roundtrip_matches_series(tmp_path):
    vol, meta = load_series(write_series(tmp_path / "s"))
    img = _nifti_from(vol, meta)
    # Store the same physical volume twice more in other voxel orders (RAS-flipped, axes permuted).
    flipped = img.as_reoriented(np.array([[0, -1], [1, -1], [2, 1]]))
    permuted = img.as_reoriented(np.array([[2, 1], [0, 1], [1, 1]]))
    for k, candidate in enumerate((img, flipped, permuted)):
        nib.save(candidate, tmp_path / f"v{k}.nii.gz")
        got, got_meta = load_volume(tmp_path / f"v{k}.nii.gz")
        np.testing.assert_array_equal(got, vol)
        assert got_meta["spacing"] == pytest.approx(meta["spacing"])
        assert got_meta["origin"] == pytest.approx(meta["origin"])
        np.testing.assert_allclose(got_meta["direction"], meta["direction"], atol=1e-6)


def test_nifti_errors(tmp_path):
    with pytest.raises(ReadError, match="missing_file"):
        load_volume(tmp_path / "none.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"junk" * 100)
    with pytest.raises(ReadError, match="unreadable"):
        load_volume(tmp_path / "junk.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), tmp_path / "z.nii.gz")
    with pytest.raises(ReadError, match="constant_image"):
        load_volume(tmp_path / "z.nii.gz")
    ramp3d = np.arange(4096.0).reshape(16, 16, 16)
    nib.save(nib.Nifti1Image(ramp3d, np.eye(4)), tmp_path / "ok.nii.gz")
    nib.save(nib.Nifti1Image(ramp3d, np.eye(4)), tmp_path / "ok.nii")
    for name in ("ok.nii.gz", "ok.nii"):
        (tmp_path / f"cut_{name}").write_bytes((tmp_path / name).read_bytes()[:-400])
        with pytest.raises(ReadError, match="truncated"):
            load_volume(tmp_path / f"cut_{name}")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 2)), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(ReadError, match="series_shape"):
        load_volume(tmp_path / "4d.nii.gz")


# ---------------------------------------------------------------- real files beside the repo (skipped when absent)


@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    return SHARED


@pytest.mark.realdata
def test_real_ct_series(shared):
    files = sorted((shared / "dicom" / "ct_series_totalsegmentator").iterdir())
    random.Random(1).shuffle(files)
    vol, meta = load_series(files)
    assert vol.shape == (20, 512, 512) and meta["spacing"][0] == pytest.approx(2.0)
    assert vol.min() == pytest.approx(-1024) and vol.max() > 500  # air and bone in HU
    assert meta["modality"] == "CT" and np.all(
        np.diff([pydicom.dcmread(f).ImagePositionPatient[2] for f in meta["files"]]) > 0
    )


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "shape", "spacing"),
    [("chest_ct_crop_1p5mm.nii.gz", (112, 102, 122), 1.5), ("abdomen_ct_3mm_small.nii.gz", (30, 101, 122), 3.0)],
)
def test_real_nifti(shared, name, shape, spacing):
    vol, meta = load_volume(shared / "volumes" / name)
    assert vol.shape == shape and meta["spacing"] == pytest.approx((spacing,) * 3)
    assert vol.min() < -900 and vol.max() > 300


@pytest.mark.realdata
def test_real_edge_cases(shared):
    edge = shared / "dicom" / "edge_cases"
    for name, shape in [
        ("CT_Explicit_Big_Endian.dcm", (512, 512)),
        ("CT_Implicit_Little_Headless_Retired.dcm", (512, 512)),
        ("OT_Implicit_Little_Headless.dcm", (512, 512)),
        ("CT_JPEG70.dcm", (400, 512)),
    ]:
        img, _ = load_image(edge / name)
        assert img.shape == shape and img.max() > img.min(), name
    frames = [load_image(edge / "MR_Explicit_Little_MultiFrame.dcm", frame=k)[0] for k in (0, 15)]
    assert not np.array_equal(*frames)
    with pytest.raises(ReadError, match="bad_frame"):
        load_image(edge / "MR_Explicit_Little_MultiFrame.dcm", frame=16)
    with pytest.raises(ReadError) as info:
        load_image(edge / "US_Explicit_Big_RGB.dcm", modalities=CXR_MODALITIES)
    assert info.value.reason == "modality"
    assert load_image(edge / "US_Explicit_Big_RGB.dcm")[0].shape == (480, 640)
    assert read_header(edge / "MR_UnspecifiedLength.dcm")["number_of_frames"] == 27
    dx, meta = load_image(shared / "dicom" / "dx_highdicom" / "dx_image.dcm", modalities=CXR_MODALITIES)
    assert meta["photometric"] == "MONOCHROME1" and meta["body_part"] == "THORAX" and dx.shape == (169, 211)
