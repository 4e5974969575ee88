"""Uploaded studies: checked by size and by content (not by name), written to a private temporary folder.

Accepted: one DICOM (Part 10, "DICM" at byte 128), PNG or JPEG file for an image index; for a volume (CT) index, a
series as several DICOM files or one ZIP of them, or a NIfTI file (``.nii`` / ``.nii.gz``). Anything else is an
:class:`UploadError` with the HTTP status to answer (413 too large, 415 wrong type, 400 malformed).
"""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

MAX_FILES = 2000  # slices of one uploaded series
SUFFIX = {"dicom": ".dcm", "png": ".png", "jpeg": ".jpg"}


class UploadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def sniff(head: bytes, name: str = "") -> str | None:
    """The kind of a file from its first bytes: dicom | png | jpeg | nifti | nifti_gz | zip, else None."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b") and name.lower().endswith(".nii.gz"):
        return "nifti_gz"
    if (
        len(head) >= 348
        and head[344:347] in (b"n+1", b"ni1")
        and 348
        in (
            struct.unpack("<i", head[:4])[0],
            struct.unpack(">i", head[:4])[0],
        )
    ):
        return "nifti"
    return None


def _nifti_gz_ok(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") as fh:
            return sniff(fh.read(352), "x.nii") == "nifti"
    except (OSError, EOFError):
        return False


def materialise(files: list[tuple[str, Path]], folder: Path, *, volume: bool, max_bytes: int) -> Path:
    """Uploaded (name, saved path) pairs -> the path to embed (a file, or a series folder for a volume index)."""
    if not files:
        raise UploadError(400, "no file in the upload: send one as multipart form field 'file'")
    kinds = []
    for name, path in files:
        with open(path, "rb") as fh:
            kinds.append(sniff(fh.read(352), name))
    if None in kinds:
        bad = files[kinds.index(None)][0] or "the upload"
        raise UploadError(
            415,
            f"'{bad}' is not a DICOM (Part 10), PNG or JPEG file"
            + (", a ZIP of a DICOM series or a NIfTI volume" if volume else ""),
        )
    if not volume:
        if len(files) > 1:
            raise UploadError(400, "upload one image: this index holds 2-D images")
        if kinds[0] not in ("dicom", "png", "jpeg"):
            raise UploadError(415, f"this index holds 2-D images: upload a DICOM, PNG or JPEG file, not {kinds[0]}")
        target = folder / f"image{SUFFIX[kinds[0]]}"  # the readers choose the decoder by suffix
        files[0][1].rename(target)
        return target
    if len(files) == 1 and kinds[0] in ("nifti", "nifti_gz"):
        name, path = files[0]
        if kinds[0] == "nifti_gz" and not _nifti_gz_ok(path):
            raise UploadError(415, f"'{name}' is gzip-compressed but not a NIfTI volume")
        target = folder / ("volume.nii.gz" if kinds[0] == "nifti_gz" else "volume.nii")
        path.rename(target)
        return target
    if len(files) == 1 and kinds[0] == "zip":
        return _unzip(files[0][1], folder / "series", max_bytes=max_bytes)
    if set(kinds) != {"dicom"}:
        raise UploadError(415, "a CT study is a DICOM series (several .dcm files or one ZIP of them) or a NIfTI volume")
    if len(files) > MAX_FILES:
        raise UploadError(413, f"{len(files)} files: at most {MAX_FILES} slices per upload")
    series = folder / "series"
    series.mkdir()
    for i, (_, path) in enumerate(files):
        path.rename(series / f"{i:05d}.dcm")
    return series


def _unzip(path: Path, series: Path, *, max_bytes: int) -> Path:
    """The DICOM files of a ZIP, flattened under safe names (no path in the archive is used)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise UploadError(400, f"the ZIP could not be read: {exc}") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    if not members:
        raise UploadError(400, "the ZIP is empty")
    if len(members) > MAX_FILES:
        raise UploadError(413, f"the ZIP holds {len(members)} files: at most {MAX_FILES} slices per upload")
    if sum(m.file_size for m in members) > 4 * max_bytes:
        raise UploadError(413, "the ZIP unpacks to more than 4x the upload limit")
    series.mkdir()
    kept = 0
    for i, member in enumerate(members):
        with archive.open(member) as src:
            data = src.read()
        if sniff(data[:352], member.filename) != "dicom":
            continue  # DICOMDIR, README and the like travel with exported series
        (series / f"{i:05d}.dcm").write_bytes(data)
        kept += 1
    if not kept:
        raise UploadError(415, "the ZIP holds no DICOM (Part 10) files")
    return series
