"""2-D image readers: DICOM (any syntax pydicom can decode), PNG and JPEG -> float32 [H, W] in [0, 1].

Every rejected input raises :class:`ReadError` with a short machine ``reason`` (a key of :data:`REASONS`) and a
``detail`` sentence naming the file and the fix, so archive indexers can count and report rejects by cause.
CT/MR series and NIfTI volumes live in :mod:`medclip.io.volumes` (``load_series``/``load_volume`` are also
importable from here).
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medclip.errors import MedclipError
from medclip.io.demographics import age_band, age_from_dates, clean_name, normalise_sex

logger = logging.getLogger(__name__)

__all__ = ["CXR_MODALITIES", "MIN_SIDE", "REASONS", "ReadError", "header_facts", "load_image", "read_dataset"]
__all__ += ["read_header", "subgroup_facts"]

MIN_SIDE = 32  # below this a "radiograph" is an icon or a placeholder, not something a model should see
REASONS: dict[str, str] = {
    "missing_file": "the path does not exist (or an empty series/directory was given)",
    "not_dicom": "the bytes are not DICOM (no DICM prefix and no recognisable data elements)",
    "truncated": "the file ends before its declared content (partial copy or download)",
    "no_pixel_data": "the DICOM has no PixelData element (e.g. a structured report or presentation state)",
    "undecodable": "the pixel data cannot be decoded with the installed plugins, or the bytes are corrupt",
    "empty_image": "the image has zero rows or columns",
    "tiny_image": f"the image is smaller than {MIN_SIDE} px on a side (icon, thumbnail or placeholder)",
    "constant_image": "every valid pixel has the same value (blank or fully padded image)",
    "nonfinite": "the pixel values contain NaN or infinity",
    "modality": "the DICOM modality is not among those accepted by the caller",
    "rgb": "a pseudo-colour (palette) image where a grayscale radiograph was expected",
    "bad_frame": "the requested frame index is outside the file's NumberOfFrames",
    "series_mixed": "the files of one series belong to several SeriesInstanceUIDs",
    "series_geometry": "a slice lacks ImagePositionPatient/ImageOrientationPatient, so it cannot be placed",
    "series_gap": "the slice positions jump by more than 1.5x the median step (missing slices)",
    "series_duplicate": "two slices share one position (duplicate files or overlapping acquisitions)",
    "series_shape": "slices differ in rows/columns/pixel spacing, or the volume is not 3-D",
    "series_orientation": "slices differ in ImageOrientationPatient",
    "unreadable": "the path cannot be read as a file in a supported format (directory, permissions, garbage)",
}

CXR_MODALITIES: tuple[str, ...] = ("CR", "DX", "DR")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# A forced read of random bytes "succeeds" with a few nonsense private tags; a real headless DICOM has some of these.
_PLAUSIBLE_TAGS = ("SOPClassUID", "SOPInstanceUID", "Modality", "Rows", "PixelData", "StudyInstanceUID", "PatientID")
VIEW_ALIASES = {"POSTERO_ANTERIOR": "PA", "POSTERO-ANTERIOR": "PA", "ANTERO_POSTERIOR": "AP", "ANTERO-POSTERIOR": "AP"}
VIEW_ALIASES |= {k: "LATERAL" for k in ("LAT", "LL", "RL", "LEFT LATERAL", "RIGHT LATERAL", "LATERAL")}
VIEW_ALIASES |= {"AP SUPINE": "AP", "AP ERECT": "AP", "PA ERECT": "PA"}
_ENCODING_SYNTAX = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


class ReadError(MedclipError):
    """A rejected input. ``.reason`` is a short machine code, ``.detail`` a human sentence naming the file and fix."""

    def __init__(self, reason: str, detail: str):
        # Passing both to Exception keeps the error picklable (DataLoader workers send it across processes).
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"[{self.reason}] {self.detail}"


def check_path(path: str | PathLike[str]) -> Path:
    """``path`` as a Path if it is a non-empty regular file, else :class:`ReadError` (missing_file, unreadable, truncated)."""
    p = Path(path)
    if not p.exists():
        raise ReadError("missing_file", f"{p}: no such file; check the path or re-run the archive index.")
    if not p.is_file():
        raise ReadError("unreadable", f"{p}: is not a regular file (a directory?); pass a file path.")
    if p.stat().st_size == 0:
        raise ReadError("truncated", f"{p}: file is empty (0 bytes); re-copy it from the source archive.")
    return p


def _dcmread(p: Path, *, force: bool, stop_before_pixels: bool) -> Dataset:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(p, force=force, stop_before_pixels=stop_before_pixels)
    # pydicom only warns when an undefined-length item (sequence, encapsulated pixels) runs into the end of file.
    for w in caught:
        if "end of file" in str(w.message).lower():
            raise ReadError("truncated", f"{p}: file ends inside a sequence or pixel data ({w.message}); re-copy it.")
    return ds


def _check_complete(ds: Dataset, p: Path) -> None:
    """Raise ``truncated`` when the last element read is shorter than its declared length."""
    # pydicom silently returns a short value when the file is cut inside a defined-length element; the raw element
    # still carries the declared length, so compare before anything converts it.
    for tag in list(ds.keys())[-2:]:
        raw = ds.get_item(tag)
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if isinstance(value, bytes) and length not in (None, 0xFFFFFFFF) and len(value) < length:
            raise ReadError(
                "truncated",
                f"{p}: element {tag} has {len(value)} of {length} bytes; the file was cut short, re-copy it.",
            )


def _fix_headless(ds: Dataset) -> None:
    """Give a file without a File Meta header the transfer syntax it was actually read with."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        meta.TransferSyntaxUID = _ENCODING_SYNTAX.get((bool(implicit), bool(little)), ExplicitVRLittleEndian)
        logger.debug("headless DICOM: assuming transfer syntax %s", meta.TransferSyntaxUID.name)
    # Old ACR-NEMA style files may omit these; the decoders need them and the defaults are what those files meant.
    if "PixelData" in ds and "SamplesPerPixel" not in ds:
        ds.SamplesPerPixel = 1
    if "PixelData" in ds and "PhotometricInterpretation" not in ds and ds.get("SamplesPerPixel", 1) == 1:
        ds.PhotometricInterpretation = "MONOCHROME2"


def read_dataset(path: str | PathLike[str], *, stop_before_pixels: bool = False) -> Dataset:
    """Read a DICOM file (with or without preamble/File Meta) into a pydicom Dataset; any failure is a ReadError."""
    p = check_path(path)
    try:
        try:
            ds = _dcmread(p, force=False, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            # No 'DICM' prefix: either a headless (ACR-NEMA style) file or not DICOM at all.
            ds = _dcmread(p, force=True, stop_before_pixels=stop_before_pixels)
            if not any(k in ds for k in _PLAUSIBLE_TAGS):
                raise ReadError(
                    "not_dicom", f"{p}: not a DICOM file (no DICM prefix, no known tags); check the file type."
                ) from None
    except ReadError:
        raise
    except OSError as exc:
        if exc.errno is None:  # pydicom's own OSErrors ("No tag to read at file position ...") mean a cut-off file
            raise ReadError("truncated", f"{p}: DICOM data end unexpectedly ({exc}); re-copy the file.") from exc
        raise ReadError("unreadable", f"{p}: cannot be read ({exc}); check permissions and the storage.") from exc
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise ReadError("not_dicom", f"{p}: DICOM header cannot be parsed ({type(exc).__name__}: {exc}).") from exc
    if len(ds) == 0:
        raise ReadError("truncated", f"{p}: DICOM prefix present but no data elements follow; re-copy the file.")
    _check_complete(ds, p)
    _fix_headless(ds)
    return ds


def _get(ds: Dataset, keyword: str, cast: type = str) -> Any:
    """``ds.keyword`` cast to ``cast``, or None when absent, empty or malformed (headers are often dirty)."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        return cast(value)
    except Exception:  # a malformed optional tag must not reject the whole file
        logger.debug("ignoring malformed %s", keyword, exc_info=True)
        return None


def normalise_view(ds: Dataset) -> str | None:
    """ViewPosition as "PA"/"AP"/"LATERAL"/... (falls back to the ViewCodeSequence meaning)."""
    view = (_get(ds, "ViewPosition") or "").strip().upper()
    if not view:
        try:
            meaning = str(ds.ViewCodeSequence[0].CodeMeaning).strip().upper()
        except (AttributeError, IndexError, KeyError):
            meaning = ""
        if "LATERAL" in meaning:
            view = "LATERAL"
        elif meaning.startswith("POSTERO"):
            view = "PA"
        elif meaning.startswith("ANTERO"):
            view = "AP"
    return VIEW_ALIASES.get(view, view) or None


def subgroup_facts(ds: Dataset) -> dict[str, str]:
    """The non-identifying subgroup facts of a header: sex, age band, manufacturer, site ("" where absent).

    The age band comes from PatientAge, else from PatientBirthDate and StudyDate (SeriesDate, AcquisitionDate); the
    birth date and the exact age stay inside this function. ``site`` is the InstitutionName as it is (a manifest
    built with de-identification stores a salted key of it).
    """
    band = age_band(_get(ds, "PatientAge"))
    if not band:
        on = next((d for k in ("StudyDate", "SeriesDate", "AcquisitionDate") if (d := _get(ds, k))), None)
        band = age_band(age_from_dates(_get(ds, "PatientBirthDate"), on))
    return {
        "sex": normalise_sex(_get(ds, "PatientSex")),
        "age_band": band,
        "manufacturer": clean_name(_get(ds, "Manufacturer")),
        "site": clean_name(_get(ds, "InstitutionName")),
    }


def header_facts(ds: Dataset) -> dict[str, Any]:
    """The identifying and geometric header facts of a dataset (None where absent), plus :func:`subgroup_facts`."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    modality = _get(ds, "Modality")
    return {
        "patient_id": _get(ds, "PatientID"),
        "study_uid": _get(ds, "StudyInstanceUID"),
        "series_uid": _get(ds, "SeriesInstanceUID"),
        # Anonymisers sometimes blank SOPInstanceUID but leave the File Meta copy.
        "sop_uid": _get(ds, "SOPInstanceUID") or (_get(meta, "MediaStorageSOPInstanceUID") if meta else None),
        "accession": _get(ds, "AccessionNumber"),
        "modality": modality.strip().upper() if modality else None,
        "view": normalise_view(ds),
        "rows": _get(ds, "Rows", int),
        "columns": _get(ds, "Columns", int),
        "photometric": _get(ds, "PhotometricInterpretation"),
        "bits_stored": _get(ds, "BitsStored", int),
        "study_date": _get(ds, "StudyDate"),
        "body_part": _get(ds, "BodyPartExamined"),
        "transfer_syntax": str(syntax) if syntax else None,
        "number_of_frames": _get(ds, "NumberOfFrames", int) or 1,
        **subgroup_facts(ds),
    }


def read_header(path: str | PathLike[str]) -> dict[str, Any]:
    """Fast header facts (pixels not read): ids, modality, normalised view, size, syntax. Raises ReadError."""
    return header_facts(read_dataset(path, stop_before_pixels=True))


def _check_has_pixels(ds: Dataset, p: Path) -> None:
    if any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return
    sop = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    name = getattr(sop, "name", str(sop or "unknown SOP class"))
    if "Image Storage" in name:
        # An image object must carry pixels; a file cut at an element boundary looks exactly like this.
        raise ReadError(
            "truncated", f"{p}: {name} without PixelData; the file was cut short (or its pixels stripped), re-copy it."
        )
    raise ReadError("no_pixel_data", f"{p}: {name} has no PixelData (not an image object); skip it.")


def check_size(rows: int | None, cols: int | None, p: Path) -> None:
    """:class:`ReadError` ``tiny_image`` when a side is below ``MIN_SIDE`` pixels."""
    if not rows or not cols:
        raise ReadError(
            "empty_image", f"{p}: image has {rows or 0} rows x {cols or 0} columns; the file carries no image."
        )
    if min(rows, cols) < MIN_SIDE:
        raise ReadError("tiny_image", f"{p}: image is {rows}x{cols}, below {MIN_SIDE} px; an icon or placeholder.")


def _check_values(values: np.ndarray, p: Path) -> None:
    """Reject non-finite or constant pixel values (``values`` = the valid pixels only)."""
    if not np.isfinite(values).all():
        raise ReadError("nonfinite", f"{p}: pixel values contain NaN/inf; the source data are corrupt.")
    if values.size == 0 or values.min() == values.max():
        raise ReadError("constant_image", f"{p}: every valid pixel has one value; the image is blank.")


def load_image(
    path: str | PathLike[str],
    *,
    frame: int = 0,
    window_index: int = 0,
    modalities: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Load a 2-D image as float32 [H, W] in [0, 1] with bright = dense, plus header meta.

    DICOM: modality LUT, then the VOI LUT / window (``window_index``-th) or min-max over non-padding pixels;
    MONOCHROME1 inverted; padding pixels set to 0; RGB/YBR converted to luminance, PALETTE COLOR rejected ("rgb").
    PNG/JPEG/TIFF: 8-bit divided by 255, deeper images min-max scaled (their used bit depth is unknown);
    colour converted to luminance; ``modalities`` is not checked (no header).

    Args:
        path: DICOM file (any name) or .png/.jpg/.jpeg/.tif/.tiff/.bmp image.
        frame: frame of a multi-frame DICOM.
        window_index: which VOI LUT / window centre-width pair to use when the file has several.
        modalities: accepted DICOM modalities (e.g. CXR_MODALITIES); None accepts all.

    Returns:
        (image, meta): meta holds the read_header facts plus "source_shape", "pixel_spacing" ((dy, dx) mm or None),
        "normalisation" (how values were mapped to [0, 1]), "frame" and "path".

    Raises:
        ReadError: for every rejected input (see REASONS).
    """
    p = check_path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return _load_plain_image(p)
    ds = read_dataset(p)
    meta = header_facts(ds)
    if modalities is not None:
        accepted = {m.upper() for m in modalities}
        if meta["modality"] not in accepted:
            raise ReadError(
                "modality", f"{p}: modality {meta['modality']} is not one of {sorted(accepted)}; exclude this file."
            )
    _check_has_pixels(ds, p)
    check_size(meta["rows"], meta["columns"], p)
    n_frames = meta["number_of_frames"]
    if not 0 <= frame < n_frames:
        raise ReadError("bad_frame", f"{p}: frame {frame} requested but the file has {n_frames} frame(s).")
    if (meta["photometric"] or "").upper() == "PALETTE COLOR":
        raise ReadError("rgb", f"{p}: PALETTE COLOR pseudo-colour image; a grayscale radiograph is needed.")
    view = _frame_view(ds, frame)
    raw = _decode(view, frame, n_frames, p)
    if raw.ndim == 3:  # samples-per-pixel 3: pydicom already converted YBR to RGB
        image, how = _colour_to_unit(raw, meta["bits_stored"] or 8, p), "luminance"
    else:
        image, how = _gray_to_unit(raw, view, window_index, p)
    meta.update(
        source_shape=tuple(int(s) for s in raw.shape[:2]),
        pixel_spacing=_pixel_spacing(view),
        normalisation=how,
        frame=frame,
        path=str(p),
    )
    return image, meta


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """A shallow copy of ``ds`` with the frame's functional-group rescale/window/spacing lifted to the top level.

    Enhanced multi-frame objects keep these per frame; pydicom's LUT functions read only top-level attributes.
    """
    groups = []
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(seq_name)
        if seq:
            index = 0 if seq_name.startswith("Shared") else frame
            if index < len(seq):
                groups.append(seq[index])
    if not groups:
        return ds
    view = copy.copy(ds)
    lifts = {
        "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
        "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
        "PixelMeasuresSequence": ("PixelSpacing",),
    }
    for group in groups:  # per-frame after shared, so per-frame values win
        for seq_name, keywords in lifts.items():
            if seq_name in group and len(group[seq_name].value):
                item = group[seq_name].value[0]
                for kw in keywords:
                    if kw in item:
                        setattr(view, kw, item.get(kw))
    return view


def _decode(ds: Dataset, frame: int, n_frames: int, p: Path) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID")
    name = getattr(syntax, "name", str(syntax))
    try:
        # index= decodes only the wanted frame of a multi-frame file instead of all of them
        arr = pixel_array(ds, index=frame) if n_frames > 1 else ds.pixel_array
    except Exception as exc:  # pydicom and its plugins raise many exception types on bad pixel data
        if "less than expected" in str(exc):
            raise ReadError("truncated", f"{p}: pixel data shorter than Rows x Columns x bits; re-copy it.") from exc
        raise ReadError(
            "undecodable",
            f"{p}: cannot decode {name} pixel data ({type(exc).__name__}: {_no_addresses(exc)}); install the matching pylibjpeg "
            "plugin or convert the file (e.g. dcmdjpeg).",
        ) from exc
    return arr


def _padding_mask(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    """True where pixels are real (not PixelPaddingValue .. PixelPaddingRangeLimit)."""
    pad = _get(ds, "PixelPaddingValue", int)
    if pad is None:
        return np.ones(raw.shape, dtype=bool)
    limit = _get(ds, "PixelPaddingRangeLimit", int)
    lo, hi = (pad, pad) if limit is None else (min(pad, limit), max(pad, limit))
    return ~((raw >= lo) & (raw <= hi))


def _voi_output_range(ds: Dataset, window_index: int) -> tuple[float, float]:
    """The value range apply_voi_lut maps into, so its output can be scaled to [0, 1] without stretching."""
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[min(window_index, len(ds.VOILUTSequence) - 1)]
        n_entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
        # Run every LUT input through pydicom itself: the LUT's own min/max beats its (often wrong) bit depth.
        table = apply_voi_lut(np.arange(first, first + n_entries, dtype=np.int64), ds, index=window_index)
        return float(table.min()), float(table.max())
    # Linear/sigmoid windowing outputs the stored-value range mapped through the rescale, as pydicom does it.
    bits = _get(ds, "BitsStored", int) or 16
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif _get(ds, "PixelRepresentation", int) == 1:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    else:
        lo, hi = 0.0, float(2**bits - 1)
    slope, intercept = _get(ds, "RescaleSlope", float), _get(ds, "RescaleIntercept", float)
    if slope is not None and intercept is not None:
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return lo, hi


def _n_windows(ds: Dataset) -> int:
    if ds.get("VOILUTSequence"):
        return len(ds.VOILUTSequence)
    centre = ds.get("WindowCenter")
    if centre is None or ds.get("WindowWidth") is None:
        return 0
    return len(centre) if isinstance(centre, (list, pydicom.multival.MultiValue)) else 1


def _gray_to_unit(raw: np.ndarray, ds: Dataset, window_index: int, p: Path) -> tuple[np.ndarray, str]:
    """Modality LUT -> VOI (LUT, window or min-max) -> [0, 1] -> MONOCHROME1 inversion -> padding to 0."""
    valid = _padding_mask(raw, ds)
    values = apply_modality_lut(raw, ds).astype(np.float64, copy=False)
    _check_values(values[valid], p)
    n_windows, how = _n_windows(ds), "minmax"
    out = None
    if n_windows:
        if window_index >= n_windows:
            logger.warning("%s: window %d requested, only %d present; using the last", p, window_index, n_windows)
        index = min(window_index, n_windows - 1)
        try:
            # A VOI LUT indexes by value, so give it integers (modality LUT outputs are integral in practice).
            lut_input = np.rint(values).astype(np.int64) if ds.get("VOILUTSequence") else values
            windowed = apply_voi_lut(lut_input, ds, index=index).astype(np.float64)
            lo, hi = _voi_output_range(ds, index)
            if hi > lo:
                out, how = (windowed - lo) / (hi - lo), "voi_lut" if ds.get("VOILUTSequence") else "window"
        except Exception as exc:  # a broken VOI should degrade to min-max, not reject the image
            logger.warning("%s: VOI LUT/window unusable (%s); falling back to min-max", p, exc)
    if out is None:
        lo, hi = float(values[valid].min()), float(values[valid].max())
        out = (values - lo) / (hi - lo)
    out = np.clip(out, 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1 stores dense tissue as low values; flip so bright = dense
    out[~valid] = 0.0
    return out.astype(np.float32), how


def _colour_to_unit(rgb: np.ndarray, bits: int, p: Path) -> np.ndarray:
    """ITU-R 601 luminance of an RGB array scaled by its bit depth."""
    gray = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    _check_values(gray, p)
    return np.clip(gray / float(2**bits - 1), 0.0, 1.0).astype(np.float32)


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(dy, dx) in mm from PixelSpacing, else ImagerPixelSpacing; None when absent or non-positive."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            if value is not None and len(value) == 2:
                dy, dx = float(value[0]), float(value[1])
                if dy > 0 and dx > 0 and np.isfinite([dy, dx]).all():
                    return dy, dx
        except (TypeError, ValueError):
            continue
    return None


def _load_plain_image(p: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """PNG/JPEG/TIFF via Pillow: 8-bit / 255, deeper min-max (the bit depth really used is unknown), colour -> gray."""
    try:
        with Image.open(p) as img:
            img.load()
            mode = img.mode
            # Gray modes keep their full depth; palette, alpha, CMYK, 1-bit ... go through RGB to luminance.
            arr = np.asarray(img if mode in ("L", "I", "F") or mode.startswith("I;16") else img.convert("RGB"))
    except (UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ReadError("unreadable", f"{p}: not a readable {p.suffix} image ({exc}); check the file type.") from exc
    except Exception as exc:  # Pillow decoders raise OSError, ValueError, ... on damaged files
        reason = "truncated" if "truncated" in str(exc).lower() else "undecodable"
        raise ReadError(reason, f"{p}: image cannot be decoded ({exc}); re-export or re-copy it.") from exc
    check_size(arr.shape[0], arr.shape[1], p)
    if arr.ndim == 3:
        image, bits = _colour_to_unit(arr, 8, p), 8
    else:
        values = arr.astype(np.float64)
        _check_values(values, p)
        # Older Pillow opens 16-bit PNGs as 32-bit mode "I", so judge the depth by the values as well.
        bits = 8 if arr.dtype == np.uint8 else (16 if values.min() >= 0 and values.max() < 65536 else 32)
        lo, hi = (0.0, 255.0) if bits == 8 else (float(values.min()), float(values.max()))
        image = np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    meta: dict[str, Any] = dict.fromkeys(("patient_id", "study_uid", "series_uid", "sop_uid", "accession"))
    meta |= dict.fromkeys(("modality", "view", "study_date", "body_part", "transfer_syntax"))
    meta |= dict.fromkeys(("sex", "age_band", "manufacturer", "site"), "")
    meta.update(
        rows=int(arr.shape[0]),
        columns=int(arr.shape[1]),
        photometric="RGB" if arr.ndim == 3 else "MONOCHROME2",
        bits_stored=bits,
        number_of_frames=1,
        source_shape=(int(arr.shape[0]), int(arr.shape[1])),
        pixel_spacing=None,
        normalisation="luminance" if arr.ndim == 3 else ("bitdepth" if bits == 8 else "minmax"),
        frame=0,
        path=str(p),
        image_mode=mode,
    )
    return image, meta


def _no_addresses(exc: BaseException) -> str:
    """An exception's message without object addresses ("<_io.BytesIO object at 0x7f...>"): a reject's detail is
    the same on every run and every machine."""
    return re.sub(r" at 0x[0-9a-fA-F]+>", ">", str(exc))
