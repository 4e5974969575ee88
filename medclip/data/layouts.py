"""Archive layouts besides plain DICOM: MIMIC-CXR-JPG, Open-i (XML + PNG) and a generic CSV.

PNG/JPEG files carry no header: the modality comes from the layout (``DX`` for the chest X-ray datasets), rows and
columns from the image file (Pillow reads only its header unless ``verify_pixels`` decodes it once, as for DICOM).
Every layout returns an :class:`~medclip.data.archive.ArchiveScan` whose image dicts carry the keys of the
``dicom`` layout, counts every image input it saw, and rejects instead of raising on a bad file.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from medclip.data.archive import (
    LAYOUTS,
    TEXT_COLUMNS,
    ArchiveScan,
    InlineReport,
    _walk,
    add_reports,
    column_key,
    find_column,
    reject,
    sections_text,
)

# Private helpers on purpose: the same path/size checks as the DICOM reader, so reasons agree across formats.
from medclip.data.dicom import (
    _VIEW_ALIASES,
    IMAGE_SUFFIXES,
    ReadError,
    _check_path,
    _check_size,
    load_image,
    read_header,
)
from medclip.data.reports import SECTION_NAMES

logger = logging.getLogger(__name__)

__all__ = ["csv_columns", "image_record", "parse_openi_xml", "scan_csv", "scan_mimic_cxr_jpg", "scan_openi"]

ASSUMED_MODALITY = "DX"  # public chest X-ray sets ship PNG/JPEG exports of CR/DX radiographs
CSV_ROLES: dict[str, tuple[str, ...]] = {
    "image": ("image_path", "image", "path", "filepath", "file_path", "file", "filename", "img", "dicom_path",
              "png_path", "jpg_path", "image_file"),
    "report_text": TEXT_COLUMNS,
    "report_path": ("report_path", "report_file", "reportpath", "report_txt"),
    "patient": ("patient_id", "patientid", "patient", "subject_id", "subject", "mrn", "pid"),
    "study": ("study_id", "study", "study_uid", "studyinstanceuid", "accession", "accession_number", "exam_id"),
    "view": ("view", "viewposition", "view_position", "projection"),
    "modality": ("modality",),
}  # fmt: skip
MIMIC_METADATA = ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz")
_MIMIC_IMAGE_RE = re.compile(r"(?:^|/)p\d{2}/p(\d+)/s(\d+)/[^/]+$")


# ---------------------------------------------------------------------------------------------- images


def image_record(
    path: Path, *, modality: str, modalities: Sequence[str] | None, verify: bool, **ids: str | None
) -> dict:
    """Header facts of a PNG/JPEG, shaped like a DICOM record; ``ids`` fill study_uid, patient_id, view, ...

    Raises:
        ReadError: the same reasons as :func:`medclip.data.dicom.load_image`, or ``modality``.
    """
    if modalities and modality not in modalities:
        raise ReadError("modality", f"{path}: modality {modality} is not one of {tuple(modalities)}")
    if verify:
        rows, cols = load_image(path)[1]["source_shape"]
    else:
        p = _check_path(path)
        try:
            with Image.open(p) as img:
                cols, rows = img.size
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            reason = "truncated" if "truncated" in str(exc).lower() else "unreadable"
            raise ReadError(reason, f"{p}: not a readable image ({exc}); check the file type.") from exc
        _check_size(rows, cols, p)
    record = dict.fromkeys(("study_uid", "series_uid", "sop_uid", "accession", "patient_id", "view"))
    return record | {"image_path": str(path), "modality": modality, "rows": int(rows), "columns": int(cols)} | ids


def _view(value: object) -> str | None:
    view = str(value or "").strip().upper()
    return _VIEW_ALIASES.get(view, view) or None


def _try_record(scan: ArchiveScan, path: Path, reject_path: str | None = None, **kwargs) -> None:
    try:
        scan.images.append(image_record(path, **kwargs))
    except ReadError as exc:
        scan.rejects.append(reject(reject_path or path, exc.reason, exc.detail))


# ---------------------------------------------------------------------------------------------- MIMIC-CXR-JPG


def _mimic_metadata(root: Path) -> dict[str, tuple[str, str, str | None]]:
    """dicom_id -> (subject_id, study_id, view) from the metadata CSV next to ``files/`` ({} when absent)."""
    path = next((d / n for d in (root, root.parent) for n in MIMIC_METADATA if (d / n).is_file()), None)
    if path is None:
        logger.info("no %s under %s: views unknown", MIMIC_METADATA[0], root)
        return {}
    df = pd.read_csv(path, dtype=object, keep_default_na=False)
    need = ("dicom_id", "subject_id", "study_id", "ViewPosition")
    if missing := [c for c in need if c not in df.columns]:
        raise ValueError(f"{path}: missing columns {missing}; it has {list(df.columns)}")
    return {d: (s, t, _view(v)) for d, s, t, v in zip(*(df[c] for c in need), strict=True)}


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
    for path in tqdm(_walk(root), desc="scan", unit="file", disable=not show_progress, leave=False):
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
        _try_record(scan, path, modality=modality, modalities=modalities, verify=verify_pixels,
                    patient_id=subject, study_uid=study, sop_uid=path.stem, view=view)  # fmt: skip
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
    XML sections with :func:`sections_text`. A listed image that is absent is a ``missing_file`` reject; an image
    no XML lists is a ``no_report`` reject; an XML without images is an orphan report.
    """
    root = Path(root)
    if reports is not None:
        raise ValueError("the openi layout reads its reports from the XML files; drop --reports")
    if not root.is_dir():
        raise NotADirectoryError(f"openi layout needs a folder (XML reports + PNG images), got {root}")
    files, scan = _walk(root), ArchiveScan(inputs=0)
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
        scan.add_report(uid, InlineReport(str(xml), sections_text(sections)))
        for image_id in image_ids:
            scan.inputs += 1
            listed.add(image_id)
            if image_id not in images:
                detail = f"{xml}: image {image_id} is listed but no {image_id}.png was found under {root}"
                scan.rejects.append(reject(f"{xml}#{image_id}", "missing_file", detail))
                continue
            _try_record(scan, images[image_id], modality=modality, modalities=modalities, verify=verify_pixels,
                        patient_id=uid, study_uid=uid, sop_uid=image_id)  # fmt: skip
    for image_id, path in images.items():
        if image_id not in listed:
            scan.inputs += 1
            scan.rejects.append(reject(path, "no_report", f"{path}: no XML report lists image {image_id}"))
    return scan


# ---------------------------------------------------------------------------------------------- CSV


def _csv_file(root: Path) -> Path:
    if root.is_file():
        return root
    tables = sorted(root.glob("*.csv")) if root.is_dir() else []
    # labels.csv beside the archive table is ground truth for evaluation (medclip's synthetic archives), not input.
    tables = [t for t in tables if t.name != "labels.csv"] if len(tables) > 1 else tables
    if len(tables) != 1:
        found = ", ".join(p.name for p in tables) or "none"
        raise ValueError(f"csv layout: pass the CSV file itself, not {root} (CSV files there: {found})")
    return tables[0]


def csv_columns(
    table: Path, columns: Sequence[str], given: Mapping[str, str | Sequence[str]] | None, *, need_report: bool = True
) -> dict[str, list[str]]:
    """Role -> column names: ``given`` ones checked against the CSV, the others auto-detected (``CSV_ROLES``).

    Several image columns are allowed (``frontal_path``, ``lateral_path``); without an exactly named one every
    column named like ``*image*``/``*img*``/``*_path`` is taken.
    """
    given = dict(given or {})
    if unknown := sorted(set(given) - set(CSV_ROLES)):
        raise ValueError(f"unknown CSV column role(s) {unknown}; roles: {', '.join(CSV_ROLES)}")
    roles: dict[str, list[str]] = {}
    for role, candidates in CSV_ROLES.items():
        if role in given:
            names = [given[role]] if isinstance(given[role], str) else list(given[role])
            if missing := [n for n in names if n not in columns]:
                raise ValueError(f"{table}: no column {missing} for '{role}'; the CSV has columns {list(columns)}")
            roles[role] = names
        elif found := find_column(columns, candidates):
            roles[role] = [found]
    taken = {c for names in roles.values() for c in names}
    if "image" not in roles:
        fuzzy = [c for c in columns if c not in taken and re.search(r"image|img|_?path$", column_key(c))]
        roles |= {"image": fuzzy} if fuzzy else {}
    sections = [c for s in ("findings", "impression") if (c := find_column(columns, (s,)))]
    has_report = "report_text" in roles or "report_path" in roles or bool(sections)
    for role, ok in (("image", "image" in roles), ("patient", "patient" in roles), ("report_text", has_report)):
        if not ok and (role != "report_text" or need_report):
            raise ValueError(
                f"{table}: no {role} column found among {list(columns)}; name it with --column {role}=COLUMN"
            )
    return roles


def _csv_report(scan: ArchiveScan, row: dict, roles: dict[str, list[str]], study: str, row_id: str, base: Path):
    """Register the row's report for its study; rows repeating the study's report are not duplicates."""
    source: Path | InlineReport | None = None
    if "report_text" in roles and str(row[roles["report_text"][0]]).strip():
        source = InlineReport(row_id, str(row[roles["report_text"][0]]))
    elif "report_path" in roles and (value := str(row[roles["report_path"][0]]).strip()):
        source = Path(value) if Path(value).is_absolute() else base / value
    elif "report_text" not in roles and "report_path" not in roles:
        cols = {s: c for s in SECTION_NAMES if (c := find_column(list(row), (s,)))}
        text = sections_text({s: row[c] for s, c in cols.items()})
        source = InlineReport(row_id, text) if text else None
    if source is None:
        return
    known = scan.reports.get(study)
    if known == source or (isinstance(known, InlineReport) and known.text == getattr(source, "text", None)):
        return
    scan.add_report(study, source)


def _csv_image(scan: ArchiveScan, path: Path, ids: dict, *, modality: str, modalities, verify: bool) -> None:
    """A PNG/JPEG (via :func:`image_record`) or a DICOM (header facts; the CSV's ids win where given)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        _try_record(scan, path, modality=modality, modalities=modalities, verify=verify, **ids)
        return
    try:
        header = read_header(path)
        if modalities and header.get("modality") not in modalities:
            raise ReadError("modality", f"{path}: modality {header.get('modality')} is not one of {modalities}")
        if verify:
            load_image(path)
    except ReadError as exc:
        scan.rejects.append(reject(path, exc.reason, exc.detail))
        return
    scan.images.append(header | {k: v for k, v in ids.items() if v} | {"image_path": str(path)})


@LAYOUTS.register("csv")
def scan_csv(
    root: Path,
    *,
    modalities: tuple[str, ...] | None = None,
    verify_pixels: bool = True,
    show_progress: bool = True,
    reports: Path | None = None,
    columns: Mapping[str, str | Sequence[str]] | None = None,
    modality: str = ASSUMED_MODALITY,
) -> ArchiveScan:
    """A CSV with image path column(s) (relative to the CSV's folder, or absolute), a patient column, optionally
    a study column (else one study per row) and the report as text, a report-file path or section columns.

    ``root`` is the CSV file (or a folder holding exactly one). ``columns`` maps roles (``CSV_ROLES``: image,
    report_text, report_path, patient, study, view, modality) to column names; unnamed roles are auto-detected.
    Images may be PNG/JPEG (modality from a modality column, else ``modality``) or DICOM (header facts).
    """
    table = _csv_file(Path(root))
    df = pd.read_csv(table, dtype=object, keep_default_na=False, encoding_errors="surrogateescape")
    roles = csv_columns(table, [str(c) for c in df.columns], columns, need_report=reports is None)
    scan = ArchiveScan(inputs=0)
    for i, row in enumerate(tqdm(df.to_dict("records"), desc="scan", unit="row", disable=not show_progress)):
        row_id = f"{table}#row={i + 2}"  # line number in the file, header = line 1

        def cell(role: str, row: dict = row) -> str:
            return str(row[roles[role][0]]).strip() if role in roles else ""

        study = cell("study") or f"row{i + 2}"
        _csv_report(scan, row, roles, study, row_id, table.parent)
        values = [str(row[c]).strip() for c in roles["image"] if str(row[c]).strip()]
        if not values:
            scan.inputs += 1
            scan.rejects.append(reject(row_id, "no_image", f"{row_id}: no image path in {roles['image']}"))
        ids = {"patient_id": cell("patient") or None, "study_uid": study, "view": _view(cell("view"))}
        for value in values:
            scan.inputs += 1
            path = Path(value) if Path(value).is_absolute() else table.parent / value
            _csv_image(scan, path, ids, modality=cell("modality").upper() or modality, modalities=modalities,
                       verify=verify_pixels)  # fmt: skip
    if reports is not None:
        add_reports(scan, Path(reports))
    return scan
