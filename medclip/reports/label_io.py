"""Report labelling over files and tables: what ``medclip label`` and ``medclip manifest --labels`` call.

``label_reports_file`` reads a CSV / TSV / parquet / JSONL table (an id column and a text or report-path column) or a
folder of ``.txt`` reports, labels every report with :mod:`medclip.reports.labeler` and writes one CSV row per report:
the id column, then one column per label (1 / 0 / -1 / empty). Reports that cannot be labelled go to
``<out stem>.rejects.csv`` with a reason code instead of stopping the run. ``label_dataframe`` labels rows that already
hold section text (manifest rows). ``iter_openi_reports`` reads the Open-i report collection that the torchxrayvision
package ships, for benchmarks and checks, without importing that package.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from medclip.errors import InputError
from medclip.io.text import NotTextError, decode_text, read_text, split_lines
from medclip.reports.labeler import (
    DEFAULT_SECTIONS,
    POSITIVE,
    UNCERTAIN,
    Rules,
    check_sections,
    label_report,
    load_rules,
)
from medclip.reports.sections import SECTION_NAMES, TEXT_COLUMNS, parse_sections

logger = logging.getLogger(__name__)

# Report tables given to the labeler often name the text column "reports", "body" or "content" too.
LABEL_TEXT_COLUMNS = (*TEXT_COLUMNS, "reports", "body", "content")
ID_COLUMNS = ("id", "report_id", "study_id", "accession", "accession_number", "uid", "row_id", "name")
PATH_COLUMNS = ("report_path", "path", "txt_path", "file", "filename")
REJECT_COLUMNS = ("id", "source", "reason", "detail")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson")


@dataclass
class _Record:
    id: str
    source: str
    text: str | None = None
    reason: str | None = None  # set when the record is a reject
    detail: str = ""


def _decode(raw: bytes, source: str) -> tuple[str | None, str | None, str]:
    """bytes -> (text, reject reason, detail): text in any encoding (:func:`medclip.io.text.decode_text`), or binary."""
    try:
        return decode_text(raw)[0], None, ""
    except NotTextError as exc:
        return None, "binary", f"{source}: {exc}; export the report as text"


def _read_folder(folder: Path) -> tuple[str, list[_Record]]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise InputError(f"{folder}: no .txt reports in this folder; pass a folder of .txt files or a CSV/JSONL table")
    stems = Counter(p.stem for p in files)
    records = []
    for path in files:
        # The file stem is the id; when two subfolders share a stem the relative path keeps ids unique.
        rid = path.stem if stems[path.stem] == 1 else path.relative_to(folder).with_suffix("").as_posix()
        try:
            text, reason, detail = _decode(path.read_bytes(), str(path))
        except OSError as exc:
            text, reason, detail = None, "unreadable", f"{path}: {exc.strerror or exc}"
        records.append(_Record(rid, str(path), text, reason, detail))
    return "id", records


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, list[_Record]]:
    rows, rejects = [], []
    text, _ = read_text(path)  # the whole file at once: UTF-16 lines cannot be split as bytes
    for n, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        source = f"{path}:{n}"
        try:
            row = json.loads(line)
            reason, detail = (None, "") if isinstance(row, dict) else ("bad_json", f"{source}: not a JSON object")
        except json.JSONDecodeError as exc:
            reason, detail = "bad_json", f"{source}: {exc.msg}"
        if reason:
            rejects.append(_Record(f"line {n}", source, None, reason, detail))
        else:
            rows.append({**row, "_line": n})
    return pd.DataFrame(rows), rejects


def _read_csv(path: Path, header: str | None) -> pd.DataFrame:
    text, _ = read_text(path)  # UTF-8, UTF-16, cp1252, ...: see medclip.io.text.decode_text
    return pd.read_csv(
        io.StringIO(text),
        sep="\t" if path.suffix.lower() == ".tsv" else ",",
        dtype=str,
        keep_default_na=False,
        header=header,
        names=None if header else ["text"],
    )


def _read_table(path: Path) -> tuple[pd.DataFrame, list[_Record]]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path), []
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        return _read_csv(path, header="infer"), []
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read it as a {suffix[1:]} table ({exc}); check the file format") from exc


def _pick(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, path: Path) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise InputError(f"{path}: no column '{wanted}' ({what}); columns are: {', '.join(map(str, columns))}")
        return wanted
    lower = {str(c).lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value if isinstance(value, str) else str(value)


def _table_records(path: Path, id_column: str | None, text_column: str | None) -> tuple[str, list[_Record]]:
    df, rejects = _read_table(path)
    if df.empty:
        if rejects:  # every line of a JSONL file was broken: report them instead of a column error
            return id_column or "id", rejects
        raise InputError(f"{path}: no reports in this file; pass a table with one row per report")
    columns = [c for c in df.columns if c != "_line"]
    text_col = _pick(columns, text_column, LABEL_TEXT_COLUMNS, "report text", path)
    path_col = None if text_col else _pick(columns, None, PATH_COLUMNS, "report path", path)
    id_col = _pick(columns, id_column, ID_COLUMNS, "report id", path)
    headerless = text_col is None and path_col is None and id_col is None and len(columns) == 1
    if headerless and path.suffix.lower() in (".csv", ".tsv"):
        # A one-column CSV without a known header is a plain list of reports (the chexpert-labeler input format).
        df = _read_csv(path, header=None)
        text_col, columns = "text", ["text"]
    if text_col is None and path_col is None:
        raise InputError(
            f"{path}: no report text column found (looked for {', '.join(LABEL_TEXT_COLUMNS)} or a path column "
            f"{', '.join(PATH_COLUMNS)}); columns are: {', '.join(map(str, columns))}. Pass text_column="
        )
    if id_col is None and len(columns) > 1:
        raise InputError(
            f"{path}: no report id column found (looked for {', '.join(ID_COLUMNS)}); columns are: "
            f"{', '.join(map(str, columns))}. Pass id_column="
        )
    records = list(rejects)
    lines = df["_line"].tolist() if "_line" in df.columns else range(2, len(df) + 2)
    ids = df[id_col].map(_cell).tolist() if id_col else [str(i) for i in range(len(df))]
    values = df[text_col or path_col].map(_cell).tolist()
    for rid, value, line in zip(ids, values, lines, strict=True):
        source, reason, detail = f"{path}:{line}", None, ""
        if path_col:
            report = Path(value) if Path(value).is_absolute() else path.parent / value
            try:
                value, reason, detail = _decode(report.read_bytes(), str(report)) if value else ("", None, "")
            except OSError as exc:
                value, reason, detail = None, "unreadable", f"{report}: {exc.strerror or exc}"
            source = str(report)
        records.append(_Record(rid.strip(), source, value, reason, detail))
    return str(id_col or "row"), records


def _read_records(path: Path, id_column: str | None, text_column: str | None) -> tuple[str, list[_Record]]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pass a CSV/TSV/parquet/JSONL table or a folder of .txt reports"
        )
    if path.is_dir():
        return _read_folder(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(
            f"{path}: unsupported report file type '{path.suffix}'; use one of "
            f"{', '.join(TABLE_SUFFIXES)} or a folder of .txt reports"
        )
    return _table_records(path, id_column, text_column)


def read_report_texts(
    reports: str | Path, *, id_column: str | None = None, text_column: str | None = None
) -> dict[str, str]:
    """id -> report text of a table or folder (the inputs of :func:`label_reports_file`), unreadable ones skipped."""
    _, records = _read_records(Path(reports), id_column, text_column)
    return {r.id: r.text for r in records if r.reason is None and r.text is not None}


def _check(record: _Record, seen: set[str], sections: tuple[str, ...]) -> Mapping[str, Any] | None:
    """Parsed sections of a labellable record; otherwise sets its reject reason and returns None."""
    if record.reason:
        return None
    if not record.id:
        record.reason, record.detail = "missing_id", f"{record.source}: empty id"
    elif record.id in seen:
        record.reason, record.detail = "duplicate_id", f"{record.source}: id '{record.id}' already labelled"
    elif not (record.text or "").strip():
        record.reason, record.detail = "empty_report", f"{record.source}: empty report"
    else:
        parsed = parse_sections(record.text)
        if any(parsed.get(name) for name in sections):
            seen.add(record.id)
            return parsed
        record.reason = "no_section_text"
        record.detail = f"{record.source}: no {' / '.join(sections)} text in this report; try --sections"
    return None


def _rules_for(label_set: str, rules: str | Path | Mapping | Rules | None) -> Rules:
    return rules if isinstance(rules, Rules) else load_rules(label_set, user_rules=rules)


def _write(table: pd.DataFrame, rejects: list[_Record], out: Path) -> Path:
    """Labels CSV (Int64 columns: missing values are written as empty cells) and its rejects CSV."""
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    rejects_path = out.with_name(f"{out.stem}.rejects.csv")
    rows = [[r.id, r.source, r.reason, r.detail] for r in rejects]
    pd.DataFrame(rows, columns=list(REJECT_COLUMNS)).to_csv(rejects_path, index=False)
    return rejects_path


def label_reports_file(
    reports: str | Path,
    out: str | Path,
    *,
    label_set: str = "chexpert",
    sections: Sequence[str] | str = DEFAULT_SECTIONS,
    rules: str | Path | Mapping | Rules | None = None,
    id_column: str | None = None,
    text_column: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Label every report of a table or folder and write ``out`` (CSV) plus ``<out stem>.rejects.csv``.

    Args:
        reports: CSV / TSV / parquet / JSONL with an id column and a text (or report-path) column, or a folder of
            ``.txt`` reports (id = file stem).
        out: output CSV: the id column, then one column per label, values 1 / 0 / -1 / empty.
        label_set: ``chexpert``, ``chestxray14`` or a set defined in ``rules``.
        sections: report sections to read, in order (``"impression,findings"`` or a sequence).
        rules: a user rules YAML (path or dict) merged on top of the built-in rules, or a compiled ``Rules``.
        id_column, text_column: override the column detection.

    Returns:
        Summary: inputs, labelled, rejected, reject_reasons, out, rejects, label_set, positives, uncertain.
    """
    reports, out = Path(reports), Path(out)
    if out.resolve() == reports.resolve():
        raise InputError(f"{out}: the output would overwrite the input reports; pass another --out path")
    sections = check_sections(sections)
    compiled = _rules_for(label_set, rules)
    id_name, records = _read_records(reports, id_column, text_column)
    rows, seen = [], set()
    for record in tqdm(records, desc=f"label {compiled.name}", unit="report", disable=not show_progress):
        parsed = _check(record, seen, sections)
        if parsed is not None:
            rows.append({id_name: record.id, **label_report(parsed, rules=compiled, sections=sections)})
    table = pd.DataFrame(rows, columns=[id_name, *compiled.labels]).astype({lab: "Int64" for lab in compiled.labels})
    rejects = [r for r in records if r.reason]
    rejects_path = _write(table, rejects, out)
    reasons = Counter(r.reason for r in rejects)
    if rejects:
        logger.warning(
            "%d of %d reports rejected (%s); see %s", len(rejects), len(records), dict(reasons), rejects_path
        )
    return {
        "inputs": len(records),
        "labelled": len(table),
        "rejected": len(rejects),
        "reject_reasons": dict(reasons),
        "out": str(out),
        "rejects": str(rejects_path),
        "label_set": compiled.name,
        "positives": {label: int((table[label] == POSITIVE).sum()) for label in compiled.labels},
        "uncertain": {label: int((table[label] == UNCERTAIN).sum()) for label in compiled.labels},
    }


def label_dataframe(
    df: pd.DataFrame,
    *,
    text_columns: Sequence[str] | str = ("findings", "impression"),
    label_set: str = "chexpert",
    sections: Sequence[str] | str = DEFAULT_SECTIONS,
    rules: str | Path | Mapping | Rules | None = None,
) -> pd.DataFrame:
    """One float column per label (1 / 0 / -1, NaN when not mentioned), aligned with ``df``'s index.

    When every name in ``text_columns`` is a section name (manifest rows: ``findings``, ``impression``), the columns
    are used as already parsed sections; otherwise they are joined as raw report text and parsed. Missing cells
    (None / NaN) are empty sections. Identical reports (one study, several images) are labelled once.
    """
    names = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise InputError(f"label_dataframe: no column '{missing[0]}'; columns are: {', '.join(map(str, df.columns))}")
    if not names:
        raise InputError("label_dataframe: text_columns must name at least one column (e.g. findings, impression)")
    compiled, sections = _rules_for(label_set, rules), check_sections(sections)
    parsed_input = all(c in SECTION_NAMES for c in names)
    cache: dict[tuple[str, ...], dict[str, int | None]] = {}
    rows = []
    for values in zip(*(df[c].map(_cell) for c in names), strict=True):
        if values not in cache:
            text: Any = dict(zip(names, values, strict=True)) if parsed_input else "\n\n".join(v for v in values if v)
            cache[values] = label_report(text, rules=compiled, sections=sections)
        rows.append(cache[values])
    return pd.DataFrame(rows, index=df.index, columns=list(compiled.labels), dtype="float64")


def openi_archive() -> Path | None:
    """Path of the Open-i report archive shipped by torchxrayvision, or None when that package is not installed.

    The package is located, not imported: importing it pulls in its image stack, which a text benchmark does not need.
    """
    spec = importlib.util.find_spec("torchxrayvision")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "NLMCXR_reports.tgz"
        if path.is_file():
            return path
    return None


def iter_openi_reports(archive: str | Path | None = None) -> Iterator[dict[str, Any]]:
    """Open-i (Indiana University) chest X-ray reports: ``{"id", "text", "mesh_major"}`` per report.

    ``text`` rebuilds the report from its labelled sections ("FINDINGS: ..."); ``mesh_major`` are the MeSH terms the
    collection's indexers assigned (e.g. ``Cardiomegaly/mild``), a weak reference for checking a labeler.
    Yields nothing when the archive is absent. Licence of the data: CC BY-NC-ND 4.0 (read it, do not redistribute).
    """
    path = Path(archive) if archive else openi_archive()
    if path is None or not path.is_file():
        return
    with tarfile.open(path) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.name.endswith(".xml") else None
            if handle is None:
                continue
            # Package data from a known source, so the standard-library XML parser is acceptable here.
            root = ET.fromstring(handle.read())
            parts = [f"{a.get('Label')}: {a.text.strip()}" for a in root.iter("AbstractText") if (a.text or "").strip()]
            uid = root.find("uId")
            yield {
                "id": uid.get("id") if uid is not None else Path(member.name).stem,
                "text": "\n\n".join(parts),
                "mesh_major": [e.text for e in root.iter("major") if e.text],
            }
