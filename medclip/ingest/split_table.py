"""Split tables (``medclip manifest --splits FILE``): an official split file or the user's own.

A CSV (optionally ``.gz``) with a split column (``train`` / ``val`` / ``test``; ``validate``, ``validation``,
``valid`` mean ``val``; case-insensitive) and a patient column (``subject_id``, ``patient_id``, ``PatientID``, ...)
and/or a study column (``study_id``, ``StudyInstanceUID``, ``accession``, ...). MIMIC-CXR's
``mimic-cxr-2.0.0-split.csv.gz`` (dicom_id, study_id, subject_id, split) is one. Ids are compared after
:func:`norm_patient_id` / :func:`norm_study_id`, so MIMIC's ``10000032`` matches the path's ``p10000032``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medclip.config import SPLITS
from medclip.errors import InputError
from medclip.io.tables import read_csv

logger = logging.getLogger(__name__)

__all__ = ["SPLIT_ALIASES", "SplitTable", "norm_patient_id", "norm_study_id", "read_split_table"]

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
# Column names after lower-casing and dropping everything but letters and digits, in order of preference.
SPLIT_COLUMNS = ("split", "partition", "subset")
PATIENT_COLUMNS = ("subjectid", "patientid", "patient", "subject")
STUDY_COLUMNS = ("studyid", "studyinstanceuid", "studyuid", "study", "accession", "accessionnumber")


def _norm_id(value: object, prefix: str) -> str:
    text = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
    return text[1:] if re.fullmatch(rf"[{prefix}{prefix.upper()}]\d+", text) else text


def norm_patient_id(value: object) -> str:
    """A patient id as split tables and layouts are compared: stripped, MIMIC's ``p10000032`` -> ``10000032``."""
    return _norm_id(value, "p")


def norm_study_id(value: object) -> str:
    """A study id (or accession) as compared: stripped, MIMIC's ``s50414267`` -> ``50414267``."""
    return _norm_id(value, "s")


@dataclass
class SplitTable:
    """A split table: normalised patient id -> split and study id -> split (either may be empty)."""

    file: Path
    sha256: str  # of the file's bytes, recorded in the manifest meta
    patients: dict[str, str]
    studies: dict[str, str]


def _column(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    by_name = {re.sub(r"[^a-z0-9]", "", str(c).lower()): c for c in reversed(df.columns)}
    return next((by_name[n] for n in names if n in by_name), None)


def _one_split_each(ids: pd.Series, splits: pd.Series, path: Path, what: str) -> dict[str, str]:
    frame = pd.DataFrame({"id": ids, "split": splits})
    frame = frame[frame["id"] != ""]
    per_id = frame.groupby("id")["split"].nunique()
    if (conflicts := int((per_id > 1).sum())) > 0:
        raise InputError(
            f"{path}: puts {conflicts} {what} in more than one split; a split table must keep each {what[:-1]} in "
            "one split (splits are by patient)"
        )
    first = frame.drop_duplicates("id")
    return dict(zip(first["id"], first["split"], strict=True))


def read_split_table(path: str | Path) -> SplitTable:
    """Read and check a split table; InputError naming the file for anything it cannot use."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split table not found: {path} (--splits FILE: a CSV or CSV.gz)")
    df = read_csv(path, dtype=str, keep_default_na=False)
    split_col = _column(df, SPLIT_COLUMNS)
    patient_col, study_col = _column(df, PATIENT_COLUMNS), _column(df, STUDY_COLUMNS)
    if split_col is None or (patient_col is None and study_col is None):
        raise InputError(
            f"{path}: a split table needs a split column ({', '.join(SPLIT_COLUMNS)}) and a patient column "
            f"(subject_id, patient_id, ...) or a study column (study_id, StudyInstanceUID, accession, ...); it has "
            f"{list(df.columns)}"
        )
    if df.empty:
        raise InputError(f"{path}: the split table has no rows")
    raw = df[split_col].str.strip().str.lower()
    splits = raw.map(SPLIT_ALIASES)
    if splits.isna().any():
        bad = sorted(set(raw[splits.isna()]))[:5]
        raise InputError(
            f"{path}: split column '{split_col}' has {int(splits.isna().sum())} values other than {SPLITS} "
            f"(or {', '.join(k for k in SPLIT_ALIASES if k not in SPLITS)}), e.g. {bad}"
        )
    patients = _one_split_each(df[patient_col].map(norm_patient_id), splits, path, "patients") if patient_col else {}
    studies = _one_split_each(df[study_col].map(norm_study_id), splits, path, "studies") if study_col else {}
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    logger.info("%s: %d patients, %d studies with a split", path.name, len(patients), len(studies))
    return SplitTable(path, sha256, patients, studies)
