"""3-D readers: a DICOM CT/MR series or a NIfTI file -> float32 [D, H, W] plus geometry meta.

Geometry convention (shared by :func:`load_series` and :func:`load_volume`), in DICOM patient coordinates (LPS, mm)::

    world(k, i, j) = origin + k * dz * direction[0] + i * dy * direction[1] + j * dx * direction[2]

so ``direction`` rows are the unit vectors of the D, H and W axes and ``spacing`` is (dz, dy, dx).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from medclip.io.dicom import ReadError, header_facts, read_dataset, read_header

logger = logging.getLogger(__name__)

__all__ = ["load_series", "load_volume"]

SERIES_TAG = "#series="  # "<folder>#series=<SeriesInstanceUID>": one series of a folder holding several
GAP_FACTOR = 1.5  # a step this much above the median means slices are missing
DUPLICATE_MM = 1e-2  # positions closer than this along the normal are the same slice
ORIENTATION_ATOL = 1e-3  # direction cosines are written with ~6 decimals; allow rounding noise
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def is_nifti(path: str | PathLike[str]) -> bool:
    """``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return str(path).lower().endswith((".nii", ".nii.gz"))


def split_series_path(path: str | PathLike[str]) -> tuple[Path, str | None]:
    """``"<folder>#series=<uid>"`` -> (folder, uid); any other path -> (path, None)."""
    text = str(path)
    head, tag, uid = text.rpartition(SERIES_TAG)
    return (Path(head), uid) if tag else (Path(text), None)


def series_files(path: str | PathLike[str]) -> Path | list[Path]:
    """What :func:`medclip.io.volumes.load_series` should read for an ``image_path`` of the ``dicom-ct`` layout.

    A folder or a file is returned as is; for ``<folder>#series=<uid>`` the folder's readable DICOM files whose
    SeriesInstanceUID is ``uid`` (headers only; unreadable files are skipped, the layout rejected them already).

    Raises:
        ReadError: ``missing_file`` when the folder holds no file of that series.
    """
    folder, uid = split_series_path(path)
    if uid is None:
        return folder
    names = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []
    files = []
    for f in names:
        try:
            if (read_header(f).get("series_uid") or "") == uid:
                files.append(f)
        except ReadError:
            continue
    if not files:
        raise ReadError("missing_file", f"{path}: no file of series {uid} in {folder}; re-run the manifest.")
    return files


def _file_list(paths: str | PathLike[str] | Iterable[str | PathLike[str]]) -> list[Path]:
    """A list of files from an iterable of paths or from one directory (its non-hidden files)."""
    if isinstance(paths, (str, PathLike)):
        folder = Path(paths)
        if not folder.is_dir():
            return [folder]
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    else:
        files = [Path(p) for p in paths]
    if not files:
        raise ReadError("missing_file", f"{paths}: no files given for the series; point at the slice files.")
    return files


def _geometry(ds: Dataset, p: Path) -> tuple[np.ndarray, np.ndarray]:
    """(IOP as 6 floats, IPP as 3 floats) of one slice."""
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ReadError(
            "series_geometry", f"{p}: no usable ImagePositionPatient/ImageOrientationPatient; cannot place the slice."
        ) from exc
    if iop.shape != (6,) or ipp.shape != (3,) or not np.isfinite(np.r_[iop, ipp]).all():
        raise ReadError("series_geometry", f"{p}: malformed ImagePositionPatient/ImageOrientationPatient.")
    return iop, ipp


def _spacing(ds: Dataset) -> tuple[float, float]:
    """(dy, dx) from PixelSpacing; NaN when absent or malformed, so comparisons with it fail."""
    try:
        dy, dx = (float(v) for v in ds.PixelSpacing)
        return dy, dx
    except (AttributeError, TypeError, ValueError):
        return np.nan, np.nan


def _check_consistent(headers: list[Dataset], files: list[Path]) -> None:
    """Same series, shape, spacing and orientation on every slice."""
    first, f0 = headers[0], files[0]
    for ds, f in zip(headers[1:], files[1:], strict=True):
        if ds.get("SeriesInstanceUID") != first.get("SeriesInstanceUID"):
            raise ReadError("series_mixed", f"{f}: SeriesInstanceUID differs from {f0}; load each series separately.")
        if (ds.get("Rows"), ds.get("Columns")) != (first.get("Rows"), first.get("Columns")):
            raise ReadError(
                "series_shape",
                f"{f}: {ds.get('Rows')}x{ds.get('Columns')} differs from {first.get('Rows')}x{first.get('Columns')} "
                f"in {f0}; the files are not one series.",
            )
        if not np.allclose(_spacing(ds), _spacing(first), atol=1e-4):
            raise ReadError("series_shape", f"{f}: PixelSpacing differs from {f0}; the files are not one series.")
    if int(first.get("NumberOfFrames") or 1) > 1:
        raise ReadError("series_shape", f"{f0}: multi-frame file in a slice series; use load_image(frame=...).")


def _sort_by_position(headers: list[Dataset], files: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order along the slice normal; returns (order, sorted positions along the normal, IOP)."""
    geometry = [_geometry(ds, f) for ds, f in zip(headers, files, strict=True)]
    iop0 = geometry[0][0]
    for (iop, _), f in zip(geometry, files, strict=True):
        if not np.allclose(iop, iop0, atol=ORIENTATION_ATOL):
            raise ReadError(
                "series_orientation",
                f"{f}: ImageOrientationPatient {np.round(iop, 4).tolist()} differs from {np.round(iop0, 4).tolist()} "
                f"in {files[0]}; split the series by orientation.",
            )
    normal = np.cross(iop0[:3], iop0[3:])
    along = np.array([float(ipp @ normal) for _, ipp in geometry])
    order = np.argsort(along, kind="stable")
    return order, along[order], iop0


def _slice_step(along: np.ndarray, files: list[Path], headers: list[Dataset]) -> float:
    """dz from the sorted positions, rejecting duplicates and gaps."""
    if along.size == 1:
        # One slice has no neighbour to measure against; the nominal thickness is the best remaining guess.
        ds = headers[0]
        return float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    steps = np.diff(along)
    dup = np.flatnonzero(steps < DUPLICATE_MM)
    if dup.size:
        i = int(dup[0])
        raise ReadError(
            "series_duplicate",
            f"{files[i]} and {files[i + 1]}: same slice position {along[i]:.3f} mm; remove duplicate files or "
            "split overlapping acquisitions.",
        )
    median = float(np.median(steps))
    gap = np.flatnonzero(steps > GAP_FACTOR * median)
    if gap.size:
        i = int(gap[0])
        raise ReadError(
            "series_gap",
            f"{files[i]} -> {files[i + 1]}: step {steps[i]:.3f} mm vs median {median:.3f} mm; slices are missing, "
            "re-export the complete series.",
        )
    if not np.allclose(steps, median, rtol=0.05):
        logger.warning(
            "%s: uneven slice steps %.3f..%.3f mm; using the median", files[0].parent, steps.min(), steps.max()
        )
    return median


def _read_slice(ds: Dataset, p: Path) -> np.ndarray:
    if "PixelData" not in ds:
        raise ReadError("no_pixel_data", f"{p}: slice has no PixelData; remove it from the series.")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # decoder plugins raise many exception types
        raise ReadError("undecodable", f"{p}: cannot decode pixel data ({type(exc).__name__}: {exc}).") from exc
    if raw.ndim != 2:
        raise ReadError("series_shape", f"{p}: slice decodes to shape {raw.shape}, expected a 2-D grayscale image.")
    return apply_modality_lut(raw, ds).astype(np.float32)  # per slice: rescale may differ between slices


def _check_volume(volume: np.ndarray, where: str) -> None:
    if volume.size == 0 or min(volume.shape) == 0:
        raise ReadError("empty_image", f"{where}: volume has shape {volume.shape}; nothing to load.")
    if not np.isfinite(volume).all():
        raise ReadError("nonfinite", f"{where}: volume contains NaN/inf voxels; the source data are corrupt.")
    if volume.min() == volume.max():
        raise ReadError("constant_image", f"{where}: every voxel has the same value; the volume is blank.")


def load_series(
    paths: str | PathLike[str] | Iterable[str | PathLike[str]],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Load one DICOM slice series as float32 [D, H, W] in modality units (HU for CT).

    Slices are ordered by ImagePositionPatient projected on the slice normal (never by file name or
    InstanceNumber); dz is the median step between those positions.

    Args:
        paths: the slice files, or one directory whose non-hidden files are the slices.

    Returns:
        (volume, meta): meta has "spacing" (dz, dy, dx) mm, "origin" (first slice IPP, LPS mm), "direction" (3x3, see
        module docstring), "series_uid", "modality", "study_uid", "patient_id", "source_shape", "files" (sorted).

    Raises:
        ReadError: series_mixed/series_shape/series_orientation/series_geometry/series_duplicate/series_gap, plus
            the per-file reasons of read_dataset.
    """
    files = _file_list(paths)
    headers = [read_dataset(f, stop_before_pixels=True) for f in files]
    _check_consistent(headers, files)
    order, along, iop = _sort_by_position(headers, files)
    files, headers = [files[i] for i in order], [headers[i] for i in order]
    dz = _slice_step(along, files, headers)
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    volume = np.empty((len(files), rows, cols), dtype=np.float32)
    for k, f in enumerate(files):
        ds = read_dataset(f)
        volume[k] = _read_slice(ds, f)
    _check_volume(volume, str(files[0].parent))
    spacing = _spacing(headers[0])
    if not np.isfinite(spacing).all():
        logger.warning("%s: no usable PixelSpacing; assuming 1 mm", files[0])
        spacing = (1.0, 1.0)
    normal = np.cross(iop[:3], iop[3:])
    facts = header_facts(headers[0])
    meta = {
        "spacing": (float(dz), spacing[0], spacing[1]),
        "origin": tuple(float(v) for v in _geometry(headers[0], files[0])[1]),
        "direction": np.stack([normal, iop[3:], iop[:3]]),
        "series_uid": facts["series_uid"],
        "modality": facts["modality"],
        "study_uid": facts["study_uid"],
        "patient_id": facts["patient_id"],
        "source_shape": tuple(volume.shape),
        "files": [str(f) for f in files],
    }
    logger.debug("loaded series %s: %s, spacing %s", meta["series_uid"], volume.shape, meta["spacing"])
    return volume, meta


def load_volume(path: str | PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Load a NIfTI (.nii/.nii.gz, or anything nibabel reads) as float32 [D, H, W] with load_series geometry.

    The voxel axes are first reoriented to the closest of L-P-S (what an axial DICOM series gives), so D runs
    inferior -> superior, H anterior -> posterior and W patient right -> left, whatever the file's storage order.

    Returns:
        (volume, meta): "spacing" (dz, dy, dx), "origin" (LPS mm of voxel [0, 0, 0]), "direction" (3x3 rows for D, H,
        W in LPS), "affine" (the reoriented 4x4 RAS affine of the [i, j, k] = [W, H, D] array), "series_uid" and
        "modality" (None), "source_shape" (stored shape).

    Raises:
        ReadError: missing_file, unreadable, truncated, series_shape (not 3-D), empty_image, nonfinite, constant_image.
    """
    p = Path(path)
    if not p.exists():
        raise ReadError("missing_file", f"{p}: no such file; check the path.")
    try:
        img = nib.load(p)
        source_shape = tuple(int(s) for s in img.shape)
        img = nib.squeeze_image(img)
        if len(img.shape) != 3:
            raise ReadError("series_shape", f"{p}: image has shape {source_shape}; load_volume needs a 3-D volume.")
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(("L", "P", "S"))
        )
        img = img.as_reoriented(ornt)
        data = img.get_fdata(dtype=np.float32)
    except ReadError:
        raise
    except (EOFError, OSError) as exc:
        # gzip raises EOFError on a cut .nii.gz; nibabel an OSError "Expected N bytes, got M" on a cut .nii.
        if isinstance(exc, EOFError) or "Expected" in str(exc):
            raise ReadError("truncated", f"{p}: file ends early ({exc}); re-copy it.") from exc
        raise ReadError("unreadable", f"{p}: cannot be read as NIfTI ({exc}).") from exc
    except Exception as exc:  # nibabel/gzip raise ImageFileError, OSError, ValueError... on bad files
        raise ReadError("unreadable", f"{p}: not a readable NIfTI volume ({type(exc).__name__}: {exc}).") from exc
    volume = np.ascontiguousarray(data.transpose(2, 1, 0))  # [i, j, k] -> [k, j, i] = [D, H, W]
    _check_volume(volume, str(p))
    affine = np.asarray(img.affine, dtype=np.float64)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)  # voxel size along i, j, k
    axes_lps = _RAS_TO_LPS @ (affine[:3, :3] / zooms)  # columns: unit vectors of i, j, k in LPS
    meta = {
        "spacing": (float(zooms[2]), float(zooms[1]), float(zooms[0])),
        "origin": tuple(float(v) for v in _RAS_TO_LPS @ affine[:3, 3]),
        "direction": np.stack([axes_lps[:, 2], axes_lps[:, 1], axes_lps[:, 0]]),
        "affine": affine,
        "series_uid": None,
        "modality": None,
        "source_shape": source_shape,
        "path": str(p),
    }
    return volume, meta
