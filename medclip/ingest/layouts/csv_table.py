"""The ``csv`` archive layout: a table of image paths (DICOM, PNG or JPEG) with patient, study and report columns.

Columns are named by role (``CSV_ROLES``) and auto-detected unless given (``--column image=png_path``); a row's
report is inline text or a report-file path. Rows that cannot be read are rejects, never errors.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from medclip.errors import InputError
from medclip.ingest.archive import (
    LAYOUTS,
    ArchiveScan,
    InlineReport,
    add_reports,
    column_key,
    find_column,
    inline_sections,
    reject,
    submit_record,
    try_record,
    view_name,
)
from medclip.ingest.layouts.public import ASSUMED_MODALITY
from medclip.io.demographics import age_band, clean_name, normalise_sex
from medclip.io.dicom import IMAGE_SUFFIXES, ReadError, load_image, read_header
from medclip.io.tables import read_csv
from medclip.io.text import read_text
from medclip.reports.sections import SECTION_NAMES, TEXT_COLUMNS

logger = logging.getLogger(__name__)


CSV_ROLES: dict[str, tuple[str, ...]] = {
    "image": ("image_path", "image", "path", "filepath", "file_path", "file", "filename", "img", "dicom_path",
              "png_path", "jpg_path", "image_file"),
    "report_text": TEXT_COLUMNS,
    "report_path": ("report_path", "report_file", "reportpath", "report_txt"),
    "patient": ("patient_id", "patientid", "patient", "subject_id", "subject", "mrn", "pid"),
    "study": ("study_id", "study", "study_uid", "studyinstanceuid", "accession", "accession_number", "exam_id"),
    "view": ("view", "viewposition", "view_position", "projection"),
    "modality": ("modality",),
    # optional subgroup roles (medclip.io.demographics): the age becomes its band on read, the raw age is not kept
    "sex": ("sex", "gender", "patient_sex", "patientsex"),
    "age": ("age", "patient_age", "patientage", "age_years", "age_band"),
    "manufacturer": ("manufacturer", "vendor"),
    "site": ("site", "institution", "institution_name", "institutionname", "hospital", "centre", "center"),
}  # fmt: skip


def _csv_file(root: Path) -> Path:
    if root.is_file():
        return root
    tables = sorted(root.glob("*.csv")) if root.is_dir() else []
    # labels.csv beside the archive table is ground truth for evaluation (medclip's synthetic archives), not input.
    tables = [t for t in tables if t.name != "labels.csv"] if len(tables) > 1 else tables
    if len(tables) != 1:
        found = ", ".join(p.name for p in tables) or "none"
        raise InputError(f"csv layout: pass the CSV file itself, not {root} (CSV files there: {found})")
    return tables[0]


def parse_column_roles(entries: Sequence[str]) -> dict[str, list[str]]:
    """``["image=png_path", "image=lateral", "study=exam"]`` -> ``{"image": ["png_path", "lateral"], "study": [...]}``."""
    pairs = [str(c).partition("=") for c in entries]
    if bad := [f"{k}{s}{v}" for k, s, v in pairs if not (k.strip() and s and v.strip())]:
        raise InputError(f"column {bad[0]!r}: use ROLE=COLUMN, e.g. --column image=png_path")
    roles: dict[str, list[str]] = {}
    for k, _, v in pairs:
        roles.setdefault(k.strip(), []).append(v.strip())
    return roles


def csv_columns(
    table: Path, columns: Sequence[str], given: Mapping[str, str | Sequence[str]] | None, *, need_report: bool = True
) -> dict[str, list[str]]:
    """Role -> column names: ``given`` ones checked against the CSV, the others auto-detected (``CSV_ROLES``).

    Several image columns are allowed (``frontal_path``, ``lateral_path``); without an exactly named one every
    column named like ``*image*``/``*img*``/``*_path`` is taken.
    """
    given = dict(given or {})
    if unknown := sorted(set(given) - set(CSV_ROLES)):
        raise InputError(f"unknown CSV column role(s) {unknown}; roles: {', '.join(CSV_ROLES)}")
    roles: dict[str, list[str]] = {}
    for role, candidates in CSV_ROLES.items():
        if role in given:
            names = [given[role]] if isinstance(given[role], str) else list(given[role])
            if missing := [n for n in names if n not in columns]:
                raise InputError(f"{table}: no column {missing} for '{role}'; the CSV has columns {list(columns)}")
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
            raise InputError(
                f"{table}: no {role} column found among {list(columns)}; name it with --column {role}=COLUMN"
            )
    return roles


def _csv_report(
    scan: ArchiveScan, row: dict, roles: dict[str, list[str]], study: str, row_id: str, base: Path, encoding: str
):
    """Register the row's report for its study; rows repeating the study's report are not duplicates.

    Inline text carries the table's ``encoding``; a report-path cell names a file decoded when the manifest reads it.
    """
    source: Path | InlineReport | None = None
    if "report_text" in roles and str(row[roles["report_text"][0]]).strip():
        source = InlineReport(row_id, str(row[roles["report_text"][0]]), encoding)
    elif "report_path" in roles and (value := str(row[roles["report_path"][0]]).strip()):
        source = Path(value) if Path(value).is_absolute() else base / value
    elif "report_text" not in roles and "report_path" not in roles:
        cols = {s: c for s in SECTION_NAMES if (c := find_column(list(row), (s,)))}
        source = inline_sections(row_id, {s: row[c] for s, c in cols.items()}, encoding)
    if source is None:
        return
    known = scan.reports.get(study)
    if known == source or (isinstance(known, InlineReport) and known.text == getattr(source, "text", None)):
        return
    scan.add_report(study, source)


def _csv_image(scan: ArchiveScan, path: Path, ids: dict, *, modality: str, modalities, verify: bool) -> None:
    """A PNG/JPEG (via :func:`image_record`) or a DICOM (header facts; the CSV's ids win where given)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try_record(scan, path, modality=modality, modalities=modalities, verify=verify, **ids)
        return
    submit_record(scan, path, partial(_dicom_record, path, ids, modalities, verify))


def _dicom_record(path: Path, ids: dict, modalities, verify: bool) -> dict:
    """A DICOM row's record: its header facts, the CSV's ids where given. Raises ReadError."""
    header = read_header(path)
    if modalities and header.get("modality") not in modalities:
        raise ReadError("modality", f"{path}: modality {header.get('modality')} is not one of {modalities}")
    if verify:
        load_image(path)
    return header | {k: v for k, v in ids.items() if v} | {"image_path": str(path)}


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
    report_text, report_path, patient, study, view, modality, sex, age, manufacturer, site) to column names; unnamed
    roles are auto-detected. ``age`` (years, a DICOM age string or a band) is kept only as ``age_band``.
    Images may be PNG/JPEG (modality from a modality column, else ``modality``) or DICOM (header facts).
    """
    table = _csv_file(Path(root))
    text, encoding = read_text(table)  # UTF-8, UTF-16, cp1252, ...: see medclip.io.text.decode_text
    df = read_csv(table, text=text, dtype=object, keep_default_na=False)
    roles = csv_columns(table, [str(c) for c in df.columns], columns, need_report=reports is None)
    scan = ArchiveScan(inputs=0)
    for i, row in enumerate(tqdm(df.to_dict("records"), desc="scan", unit="row", disable=not show_progress)):
        row_id = f"{table}#row={i + 2}"  # line number in the file, header = line 1

        def cell(role: str, row: dict = row) -> str:
            return str(row[roles[role][0]]).strip() if role in roles else ""

        study = cell("study") or f"row{i + 2}"
        _csv_report(scan, row, roles, study, row_id, table.parent, encoding)
        values = [str(row[c]).strip() for c in roles["image"] if str(row[c]).strip()]
        if not values:
            scan.inputs += 1
            scan.rejects.append(reject(row_id, "no_image", f"{row_id}: no image path in {roles['image']}"))
        ids = {"patient_id": cell("patient") or None, "study_uid": study, "view": view_name(cell("view"))}
        ids |= {
            "sex": normalise_sex(cell("sex")),
            "age_band": age_band(cell("age")),
            "manufacturer": clean_name(cell("manufacturer")),
            "site": clean_name(cell("site")),
        }
        for value in values:
            scan.inputs += 1
            path = Path(value) if Path(value).is_absolute() else table.parent / value
            _csv_image(
                scan,
                path,
                ids,
                modality=cell("modality").upper() or modality,
                modalities=modalities,
                verify=verify_pixels,
            )
    if reports is not None:
        add_reports(scan, Path(reports))
    return scan
