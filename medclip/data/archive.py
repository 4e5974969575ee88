"""Archive layouts -> image records + report files (registered by name).

A layout scan never raises on a bad file: it returns the images it could read and one reject per input it could
not, so that ``inputs = kept + rejected`` always holds downstream.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from medclip.registry import Registry

logger = logging.getLogger(__name__)

LAYOUTS: Registry = Registry("archive layout")

# Files a DICOM export carries besides images and reports; they are not inputs and are skipped.
SIDECAR_SUFFIXES = {".csv", ".json", ".md", ".xml", ".html", ".pdf", ".parquet", ".yaml", ".yml", ".log"}
SIDECAR_NAMES = {"readme", "readme.txt", "dicomdir", "license", "license.txt"}


@dataclass
class ArchiveScan:
    images: list[dict] = field(default_factory=list)  # one dict of header facts per readable image
    reports: dict[str, Path] = field(default_factory=dict)  # accession / study uid / study id -> report file
    rejects: list[dict] = field(default_factory=list)  # {"path", "kind", "reason", "detail"}
    skipped: int = 0  # sidecar files that are not inputs


def reject(path: Path | str, reason: str, detail: str, kind: str = "image") -> dict:
    return {"path": str(path), "kind": kind, "reason": reason, "detail": detail}


def _walk(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return files


@LAYOUTS.register("dicom")
def scan_dicom(
    root: Path, *, modalities: tuple[str, ...] | None = None, verify_pixels: bool = True, show_progress: bool = True
) -> ArchiveScan:
    """Any nesting of DICOM files; ``.txt`` files named by AccessionNumber or StudyInstanceUID are reports.

    With ``verify_pixels`` every image is decoded once, so a corrupt pixel stream is rejected here rather than
    failing a training run hours later.
    """
    from medclip.data.dicom import ReadError, load_image, read_header

    scan = ArchiveScan()
    files = _walk(root)
    for path in tqdm(files, desc="scan", unit="file", disable=not show_progress, leave=False):
        suffix, lname = path.suffix.lower(), path.name.lower()
        if suffix == ".txt" and lname not in SIDECAR_NAMES:
            scan.reports[path.stem] = path
            continue
        if suffix in SIDECAR_SUFFIXES or lname in SIDECAR_NAMES:
            scan.skipped += 1
            continue
        try:
            header = read_header(path)
            if verify_pixels and (not modalities or header.get("modality") in modalities):
                load_image(path)
        except ReadError as exc:
            scan.rejects.append(reject(path, exc.reason, exc.detail))
            continue
        if modalities and header.get("modality") not in modalities:
            scan.rejects.append(
                reject(path, "modality", f"{path}: modality {header.get('modality')} is not one of {modalities}")
            )
            continue
        header["image_path"] = str(path)
        scan.images.append(header)
    return scan
