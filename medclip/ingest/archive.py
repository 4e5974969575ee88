"""Archive layouts -> image records + report sources (registered by name).

A layout scan never raises on a bad file: it returns the images it could read and one reject per input it could
not, so that ``inputs = kept + rejected`` always holds downstream. The ``dicom`` layout lives here; the others
(``mimic-cxr-jpg``, ``openi``, ``csv``) in :mod:`medclip.ingest.layouts.public`, imported at the bottom to register them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from medclip.errors import InputError
from medclip.executors import Executor, LocalExecutor
from medclip.ingest.rejects import reject
from medclip.io.dicom import VIEW_ALIASES, ReadError, check_path, check_size, load_image
from medclip.io.tables import read_csv
from medclip.io.text import read_text, split_lines
from medclip.registry import Registry
from medclip.reports.sections import SECTION_NAMES, TEXT_COLUMNS

logger = logging.getLogger(__name__)

LAYOUTS: Registry = Registry("archive layout")

# Files a DICOM export carries besides images and reports; they are not inputs and are skipped.
SIDECAR_SUFFIXES = {".csv", ".json", ".md", ".xml", ".html", ".pdf", ".parquet", ".yaml", ".yml", ".log"}
SIDECAR_NAMES = {"readme", "readme.txt", "dicomdir", "license", "license.txt"}
KEY_COLUMNS = (
    "accession",
    "accession_number",
    "accessionnumber",
    "study_uid",
    "studyinstanceuid",
    "study_instance_uid",
    "study_id",
    "study",
)


@dataclass(frozen=True)
class InlineReport:
    """A report given as text (a table row, an XML file); ``id`` is path-like ("reports.csv#row=3") for rejects.

    ``encoding`` is how its source was decoded (the table's :func:`medclip.io.text.decode_text` codec; "xml" for an
    XML file the XML parser decoded from its own declaration); it becomes the manifest's ``report_encoding``.
    """

    id: str
    text: str
    encoding: str = "unknown"
    # The source's own sections (an XML element or a table column each): used as they are, never re-parsed.
    sections: Mapping[str, str | None] | None = None
    # Identifiers found in the report's own source ((kind, value): HL7 PID names, FHIR Patient, SR header), kept in
    # memory for exact-match scrubbing (medclip.deid) and never written anywhere.
    identifiers: frozenset[tuple[str, str]] = frozenset()
    replacements: int = 0  # de-identification replacements made before (a PACS SR scrubbed when it was synced)


@dataclass
class ArchiveScan:
    images: list[dict] = field(default_factory=list)  # one dict of header facts per readable image
    # accession / study uid / study id -> report file or inline text
    reports: dict[str, Path | InlineReport] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)  # {"path", "kind", "reason", "detail"}
    skipped: int = 0  # sidecar files that are not inputs
    inputs: int | None = None  # image inputs the layout saw (None: len(images) + image rejects)
    # A second key of a report already in ``reports`` (a RIS report carries an accession and a StudyInstanceUID)
    aliases: dict[str, str] = field(default_factory=dict)
    keyed: bool = False  # ids and report keys are salted keys already (a PACS sync store), not raw header values

    def add_report(self, key: str, source: Path | InlineReport) -> None:
        """Register a study's report; a second report for the same key is rejected, never silently dropped."""
        if key in self.reports:
            first = self.reports[key]
            where = first.id if isinstance(first, InlineReport) else str(first)
            name = source.id if isinstance(source, InlineReport) else str(source)
            self.rejects.append(
                reject(name, "duplicate_report", f"{name}: study {key} already has a report ({where})", kind="report")
            )
            return
        self.reports[key] = source

    def report_for(self, *keys: str | None) -> str | None:
        """The key in ``reports`` of the first of ``keys`` that names a report (directly or as an alias)."""
        for k in keys:
            if k and (k in self.reports or k in self.aliases):
                return k if k in self.reports else self.aliases[k]
        return None


# An empty directory named like an image file is a failed copy, not an empty folder: it is listed as an input.
_FILE_LIKE_DIR_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima", ".png", ".jpg", ".jpeg"}


def walk_files(root: Path) -> list[Path]:
    """Every non-hidden file under ``root`` (sorted), plus empty directories named like image files."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in list(dirnames):
            if Path(d).suffix.lower() in _FILE_LIKE_DIR_SUFFIXES and not any(os.scandir(Path(dirpath) / d)):
                files.append(Path(dirpath) / d)
                dirnames.remove(d)
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return sorted(files)


def sections_text(sections: Mapping[str, str | None]) -> str:
    """Known sections -> "FINDINGS: ...\nIMPRESSION: ..." (the readable text of an :class:`InlineReport` whose
    source keeps sections apart; the manifest takes the sections themselves, see ``InlineReport.sections``)."""
    lines = []
    for name, body in sections.items():
        if name not in SECTION_NAMES:
            logger.debug("dropping unknown report section %r", name)
            continue
        body = " ".join(str(body or "").split())
        if body:
            lines.append(f"{name.upper()}: {body}")
    return "\n".join(lines)


def inline_sections(id: str, sections: Mapping[str, str | None], encoding: str = "unknown") -> InlineReport | None:
    """An :class:`InlineReport` of a source's own sections (None when they hold no text)."""
    known = {name: body for name, body in sections.items() if name in SECTION_NAMES}
    text = sections_text(known)
    return InlineReport(id, text, encoding, known) if text else None


def column_key(name: str) -> str:
    """A column name compared loosely: "Study Instance UID" == "study_instance_uid" == "StudyInstanceUID"."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def find_column(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` present in ``columns`` (loosely compared), as spelled in ``columns``."""
    by_norm = {column_key(c): c for c in columns}
    return next((by_norm[column_key(c)] for c in candidates if column_key(c) in by_norm), None)


def _table_rows(path: Path) -> tuple[list[dict], list[dict], str]:
    """CSV/TSV (optionally .gz) or JSON Lines -> (rows as str dicts, rejects for unparseable lines, encoding).

    The file is decoded once by :func:`medclip.io.text.read_text` (UTF-8, UTF-16, cp1252, ...), then parsed.
    """
    name = path.name.lower().removesuffix(".gz")
    if not name.endswith((".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt")):
        raise InputError(f"report table {path}: unknown format; use .csv, .tsv or .jsonl (optionally .gz)")
    text, encoding = read_text(path)
    if name.endswith((".jsonl", ".ndjson", ".json")):
        rows, bad = [], []
        for n, line in enumerate(split_lines(text), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise InputError("not a JSON object")
            except ValueError as exc:
                bad.append(reject(f"{path}#line={n}", "malformed_report", f"{path} line {n}: {exc}", kind="report"))
                continue
            rows.append({k: "" if v is None else str(v) for k, v in row.items()} | {"_id": f"{path}#line={n}"})
        return rows, bad, encoding
    df = read_csv(path, text=text, dtype=object, keep_default_na=False, sep="\t" if name.endswith(".tsv") else ",")
    # Row ids count the header as line 1, so "#row=2" is the first data line as a spreadsheet shows it.
    return [row | {"_id": f"{path}#row={i + 2}"} for i, row in enumerate(df.to_dict("records"))], [], encoding


def read_report_table(path: Path, *, key_fn: Callable[[str], str] = str) -> tuple[dict[str, InlineReport], list]:
    """A CSV/JSONL of reports -> (study key -> report, rejects).

    The key column is the first of ``KEY_COLUMNS`` present (accession before StudyInstanceUID); the text is the
    first of ``TEXT_COLUMNS``, or is composed from section columns (``findings``, ``impression``, ...).
    """
    rows, rejects, encoding = _table_rows(path)
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "_id"))
    key_col, text_col = find_column(columns, KEY_COLUMNS), find_column(columns, TEXT_COLUMNS)
    section_cols = {s: c for s in SECTION_NAMES if (c := find_column(columns, (s,)))}
    if key_col is None or (text_col is None and not section_cols):
        raise InputError(
            f"report table {path}: needs a study key column (one of {', '.join(KEY_COLUMNS)}) and a text column "
            f"({', '.join(TEXT_COLUMNS)} or section columns such as findings/impression); it has: {columns}"
        )
    out: dict[str, InlineReport] = {}
    for row in rows:
        key = str(row.get(key_col, "")).strip()
        if not key:
            rejects.append(reject(row["_id"], "malformed_report", f"{row['_id']}: empty {key_col}", kind="report"))
            continue
        key = key_fn(key)
        if key in out:
            rejects.append(reject(row["_id"], "duplicate_report", f"{row['_id']}: second report for {key}", "report"))
            continue
        if text_col:
            out[key] = InlineReport(row["_id"], str(row.get(text_col, "")), encoding)
        else:
            fields = {s: row.get(c) for s, c in section_cols.items()}
            out[key] = inline_sections(row["_id"], fields, encoding) or InlineReport(row["_id"], "", encoding)
    return out, rejects


def add_ris_reports(scan: ArchiveScan, source: Path, kind: str, *, key_fn: Callable[[str], str] = str) -> None:
    """Add the reports of a RIS export (DICOM SR, HL7 v2, FHIR), each under its accession and its study UID."""
    from medclip.ingest.ris import read_ris

    read = read_ris(source, kind)
    scan.rejects += read.rejects
    for r in read.reports:
        register_report(
            scan,
            (r.accession, r.study_uid),
            InlineReport(r.id, r.text, r.encoding, r.sections, r.identifiers),
            key_fn=key_fn,
        )


def register_report(
    scan: ArchiveScan, keys: Sequence[str | None], report: InlineReport, *, key_fn: Callable[[str], str] = str
) -> None:
    """Add a report under the first of ``keys`` (accession, then StudyInstanceUID); the others become aliases."""
    keys = [key_fn(k) for k in keys if k]
    if not keys:  # the readers reject these; never drop one silently
        scan.rejects.append(reject(report.id, "malformed_report", f"{report.id}: no accession or study UID", "report"))
        return
    primary = next((scan.report_for(k) for k in keys if scan.report_for(k)), keys[0])
    scan.add_report(primary, report)
    for k in keys:
        if k != primary and k not in scan.reports:
            scan.aliases.setdefault(k, primary)


def add_reports(scan: ArchiveScan, source: Path, *, key_fn: Callable[[str], str] = str) -> None:
    """Add ``--reports``: a report table (CSV/JSONL), a folder of ``<study key>.txt`` files, or a RIS export
    (DICOM SR files, HL7 v2 messages, FHIR DiagnosticReport JSON/NDJSON; :mod:`medclip.ingest.ris`)."""
    from medclip.ingest.ris import detect

    if not source.exists():
        raise FileNotFoundError(
            f"reports not found: {source}; pass a CSV/JSONL table, a folder of .txt files, DICOM SR files, HL7 v2 "
            "messages or FHIR DiagnosticReport JSON/NDJSON"
        )
    kind = detect(source)
    if kind is not None:
        add_ris_reports(scan, source, kind, key_fn=key_fn)
        return
    if source.is_dir():
        for path in walk_files(source):
            if path.suffix.lower() == ".txt" and path.name.lower() not in SIDECAR_NAMES:
                scan.add_report(key_fn(path.stem), path)
        return
    table, rejects = read_report_table(source, key_fn=key_fn)
    scan.rejects += rejects
    for key, report in table.items():
        scan.add_report(key, report)


# ---------------------------------------------------------------------------------------------- PNG / JPEG images


def image_record(
    path: Path, *, modality: str, modalities: Sequence[str] | None, verify: bool, **ids: str | None
) -> dict:
    """Header facts of a PNG/JPEG, shaped like a DICOM record; ``ids`` fill study_uid, patient_id, view, ...

    Raises:
        ReadError: the same reasons as :func:`medclip.io.dicom.load_image`, or ``modality``.
    """
    if modalities and modality not in modalities:
        raise ReadError("modality", f"{path}: modality {modality} is not one of {tuple(modalities)}")
    if verify:
        rows, cols = load_image(path)[1]["source_shape"]
    else:
        p = check_path(path)
        try:
            with Image.open(p) as img:
                cols, rows = img.size
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            reason = "truncated" if "truncated" in str(exc).lower() else "unreadable"
            raise ReadError(reason, f"{p}: not a readable image ({exc}); check the file type.") from exc
        check_size(rows, cols, p)
    record = dict.fromkeys(("study_uid", "series_uid", "sop_uid", "accession", "patient_id", "view"))
    return record | {"image_path": str(path), "modality": modality, "rows": int(rows), "columns": int(cols)} | ids


def view_name(value: object) -> str | None:
    """A table's view value ("pa", "Postero-Anterior", "LL") as the DICOM layout names it (PA, AP, LATERAL)."""
    view = str(value or "").strip().upper()
    return VIEW_ALIASES.get(view, view) or None


def try_record(scan: ArchiveScan, path: Path, reject_path: str | None = None, **kwargs) -> None:
    """Append :func:`image_record` of ``path`` to ``scan``, or its reject (under ``reject_path`` if given)."""
    submit_record(scan, reject_path or path, partial(image_record, path, **kwargs))


# ---------------------------------------------------------------------------------------------- record jobs
# Reading an image's header and decoding its pixels once (verify_pixels) is nearly all of a scan's time. A layout
# hands each such read to submit_record as a job; inside deferred_records(executor) (what build_manifest uses) the
# jobs run on the executor (worker processes, a Dask cluster) and their outcomes are put back exactly where an
# immediate run would have put them, so the scan is the same wherever the jobs ran.

RECORD_CHUNK = 32  # jobs per task: a few hundred ms of decoding, small next to a Dask task's overhead

_JOBS: ContextVar[list | None] = ContextVar("medclip_record_jobs", default=None)
_EXECUTOR: ContextVar[Executor | None] = ContextVar("medclip_scan_executor", default=None)


def current_executor() -> Executor | None:
    """The executor of the enclosing :func:`deferred_records` (None outside one): layouts whose reads need no
    splicing (``dicom``, ``dicom-ct``) map their chunks on it directly."""
    return _EXECUTOR.get()


def run_record(fn: Callable[[], dict]) -> tuple[dict | None, tuple[str, str] | None]:
    """``(record, None)``, or ``(None, (reason, detail))`` when ``fn`` raises a ReadError; never raises on a bad
    file (anything else is a bug and propagates)."""
    try:
        return fn(), None
    except ReadError as exc:
        return None, (exc.reason, exc.detail)


def run_records(fns: list[Callable[[], dict]]) -> list[tuple[dict | None, tuple[str, str] | None]]:
    """:func:`run_record` of each job of a chunk (one executor task)."""
    return [run_record(fn) for fn in fns]


def submit_record(scan: ArchiveScan, reject_path: str | Path, fn: Callable[[], dict]) -> None:
    """Add ``fn()`` (an image record) to ``scan.images``, or its ReadError to ``scan.rejects`` under ``reject_path``;
    inside :func:`deferred_records` the call is queued for the executor instead."""
    jobs = _JOBS.get()
    if jobs is not None:
        jobs.append((scan, len(scan.images), len(scan.rejects), reject_path, fn))
        return
    record, failure = run_record(fn)
    if failure is None:
        scan.images.append(record)
    else:
        scan.rejects.append(reject(reject_path, *failure))


def chunked(items: Sequence, size: int) -> list[list]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@contextmanager
def deferred_records(executor: Executor | None = None, *, show_progress: bool = False) -> Iterator[None]:
    """Queue the :func:`submit_record` jobs of the layout scans run inside, then run them on ``executor`` (this
    process when None) and splice each outcome in at the position it was submitted at."""
    executor = executor or LocalExecutor(1)
    token, executor_token = _JOBS.set([]), _EXECUTOR.set(executor)
    try:
        yield
        jobs = _JOBS.get()
    finally:
        _JOBS.reset(token)
        _EXECUTOR.reset(executor_token)
    if not jobs:
        return
    chunks = chunked([j[4] for j in jobs], RECORD_CHUNK)
    outcomes = []
    bar = {"total": len(jobs), "desc": "read", "unit": "image", "disable": not show_progress, "leave": False}
    with tqdm(**bar) as progress:
        for part in executor.map(run_records, chunks):
            outcomes += part
            progress.update(len(part))
    by_scan: dict[int, list] = {}
    for job, outcome in zip(jobs, outcomes, strict=True):
        by_scan.setdefault(id(job[0]), []).append((*job, outcome))
    for entries in by_scan.values():
        _splice(entries)


def _splice(entries: list) -> None:
    """Insert deferred outcomes of one scan at their submission positions (records and rejects separately)."""
    scan = entries[0][0]
    images, rejects, at_image, at_reject = [], [], 0, 0
    for _scan, image_pos, reject_pos, reject_path, _fn, (record, failure) in entries:
        images += scan.images[at_image:image_pos]
        rejects += scan.rejects[at_reject:reject_pos]
        at_image, at_reject = image_pos, reject_pos
        if failure is None:
            images.append(record)
        else:
            rejects.append(reject(reject_path, *failure))
    scan.images = images + scan.images[at_image:]
    scan.rejects = rejects + scan.rejects[at_reject:]
