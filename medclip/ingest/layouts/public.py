"""Public chest X-ray dataset layouts: MIMIC-CXR-JPG and Open-i (XML + PNG).

PNG/JPEG files carry no header: the modality comes from the layout (``DX`` for the chest X-ray datasets), rows and
columns from the image file (Pillow reads only its header unless ``verify_pixels`` decodes it once, as for DICOM).
Every layout returns an :class:`~medclip.ingest.archive.ArchiveScan` whose image dicts carry the keys of the
``dicom`` layout, counts every image input it saw, and rejects instead of raising on a bad file.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from tqdm.auto import tqdm

from medclip.errors import InputError
from medclip.ingest.archive import (
    LAYOUTS,
    ArchiveScan,
    InlineReport,
    add_reports,
    inline_sections,
    reject,
    try_record,
    view_name,
    walk_files,
)
from medclip.io.dicom import IMAGE_SUFFIXES
from medclip.io.tables import read_csv

logger = logging.getLogger(__name__)

ASSUMED_MODALITY = "DX"  # public chest X-ray sets ship PNG/JPEG exports of CR/DX radiographs
MIMIC_METADATA = ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz")
_MIMIC_IMAGE_RE = re.compile(r"(?:^|/)p\d{2}/p(\d+)/s(\d+)/[^/]+$")


def _mimic_metadata(root: Path) -> dict[str, tuple[str, str, str | None]]:
    """dicom_id -> (subject_id, study_id, view) from the metadata CSV next to ``files/`` ({} when absent)."""
    path = next((d / n for d in (root, root.parent) for n in MIMIC_METADATA if (d / n).is_file()), None)
    if path is None:
        logger.info("no %s under %s: views unknown", MIMIC_METADATA[0], root)
        return {}
    df = read_csv(path, dtype=object, keep_default_na=False)
    need = ("dicom_id", "subject_id", "study_id", "ViewPosition")
    if missing := [c for c in need if c not in df.columns]:
        raise InputError(f"{path}: missing columns {missing}; it has {list(df.columns)}")
    return {d: (s, t, view_name(v)) for d, s, t, v in zip(*(df[c] for c in need), strict=True)}


def _mimic_key(key: str) -> str:
    return key[1:] if re.fullmatch(r"s\d+", key) else key  # "s50414267" (file names) == 50414267 (metadata)


@LAYOUTS.register("mimic-cxr-jpg")
def scan_mimic_cxr_jpg(
    root: Path,
    *,
    modalities: tuple[str, ...] | None = None,
    verify_pixels: bool = True,
    show_progress: bool = True,
    reports: Path | None = None,
    modality: str = ASSUMED_MODALITY,
) -> ArchiveScan:
    """``files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`` + ``files/pNN/pNNNNNNNN/sNNNNNNNN.txt`` reports.

    Patient = subject_id, study = study_id (digits, no ``p``/``s``), sop_uid = dicom_id; the view comes from
    ``mimic-cxr-2.0.0-metadata.csv[.gz]`` (at the root or beside ``files/``) when present.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"mimic-cxr-jpg layout needs the folder holding files/, got {root}")
    metadata, scan = _mimic_metadata(root), ArchiveScan(inputs=0)
    for path in tqdm(walk_files(root), desc="scan", unit="file", disable=not show_progress, leave=False):
        suffix, rel = path.suffix.lower(), path.relative_to(root).as_posix()
        if suffix == ".txt" and re.fullmatch(r"s\d+", path.stem):
            scan.add_report(_mimic_key(path.stem), path)
            continue
        if suffix not in IMAGE_SUFFIXES and not path.is_dir():
            scan.skipped += 1  # index.html, metadata/split/label CSVs, checksums
            continue
        scan.inputs += 1
        m = _MIMIC_IMAGE_RE.search(rel)
        if m is None:
            detail = f"{path}: not at files/pNN/p<subject>/s<study>/<dicom_id>.jpg; move it or use --layout csv"
            scan.rejects.append(reject(path, "layout_path", detail))
            continue
        subject, study = m.groups()
        subject_meta, study_meta, view = metadata.get(path.stem, (subject, study, None))
        if (subject_meta, study_meta) != (subject, study):
            detail = f"{path}: metadata says subject {subject_meta} study {study_meta}; the path says otherwise"
            scan.rejects.append(reject(path, "metadata_conflict", detail))
            continue
        try_record(
            scan,
            path,
            modality=modality,
            modalities=modalities,
            verify=verify_pixels,
            patient_id=subject,
            study_uid=study,
            sop_uid=path.stem,
            view=view,
        )
    if reports is not None:
        add_reports(scan, Path(reports), key_fn=_mimic_key)
    return scan


# ---------------------------------------------------------------------------------------------- Open-i


def parse_openi_xml(path: Path) -> tuple[str, dict[str, str], list[str]]:
    """An ``ecgen-radiology`` XML -> (uId, {section: text}, parentImage ids). Raises ET.ParseError."""
    root = ET.parse(path).getroot()
    uid_el = root.find("uId")
    uid = (uid_el.get("id") if uid_el is not None else None) or f"CXR{path.stem}"
    sections = {}
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().lower()
        if label:
            sections[label] = "".join(el.itertext())
    images = [el.get("id") for el in root.iter("parentImage") if el.get("id")]
    return uid, sections, images


def _index_images(files: list[Path], scan: ArchiveScan) -> dict[str, Path]:
    """Image id (file stem) -> path; a second file with the same id is a ``duplicate_sop`` reject."""
    images: dict[str, Path] = {}
    for path in files:
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem in images:
            scan.inputs += 1
            scan.rejects.append(reject(path, "duplicate_sop", f"{path}: image id also at {images[path.stem]}"))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images[path.stem] = path
        elif path.suffix.lower() != ".xml":
            scan.skipped += 1
    return images


@LAYOUTS.register("openi")
def scan_openi(
    root: Path,
    *,
    modalities: tuple[str, ...] | None = None,
    verify_pixels: bool = True,
    show_progress: bool = True,
    reports: Path | None = None,
    modality: str = ASSUMED_MODALITY,
) -> ArchiveScan:
    """Open-i: ``*.xml`` reports (``ecgen-radiology/``) + images named by their ``parentImage`` id, anywhere.

    Patient = study = the XML's ``uId`` (Open-i has one report per patient). The report text is rebuilt from the
    XML sections as they are (:func:`inline_sections`). A listed image that is absent is a ``missing_file`` reject; an image
    no XML lists is a ``no_report`` reject; an XML without images is an orphan report.
    """
    root = Path(root)
    if reports is not None:
        raise InputError("the openi layout reads its reports from the XML files; drop --reports")
    if not root.is_dir():
        raise NotADirectoryError(f"openi layout needs a folder (XML reports + PNG images), got {root}")
    files, scan = walk_files(root), ArchiveScan(inputs=0)
    images = _index_images(files, scan)
    listed: set[str] = set()
    xmls = [p for p in files if p.suffix.lower() == ".xml"]
    for xml in tqdm(xmls, desc="scan", unit="report", disable=not show_progress, leave=False):
        try:
            uid, sections, image_ids = parse_openi_xml(xml)
        except ET.ParseError as exc:
            detail = f"{xml}: malformed XML ({exc}); its images stay unpaired"
            scan.rejects.append(reject(xml, "malformed_xml", detail, kind="report"))
            continue
        # Decoded by the XML parser as the file declares; its sections are the XML's own AbstractText elements.
        scan.add_report(uid, inline_sections(str(xml), sections, "xml") or InlineReport(str(xml), "", "xml"))
        for image_id in image_ids:
            scan.inputs += 1
            listed.add(image_id)
            if image_id not in images:
                detail = f"{xml}: image {image_id} is listed but no {image_id}.png was found under {root}"
                scan.rejects.append(reject(f"{xml}#{image_id}", "missing_file", detail))
                continue
            try_record(
                scan,
                images[image_id],
                modality=modality,
                modalities=modalities,
                verify=verify_pixels,
                patient_id=uid,
                study_uid=uid,
                sop_uid=image_id,
            )
    for image_id, path in images.items():
        if image_id not in listed:
            scan.inputs += 1
            scan.rejects.append(reject(path, "no_report", f"{path}: no XML report lists image {image_id}"))
    return scan
