"""What a PACS query returns about a study or a series (raw values, kept in memory only)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from medclip.errors import InputError


@dataclass(frozen=True)
class StudyRef:
    uid: str
    accession: str | None = None
    patient_id: str | None = None
    date: str | None = None
    instances: int | None = None  # NumberOfStudyRelatedInstances, when the PACS tells


@dataclass(frozen=True)
class SeriesRef:
    uid: str
    modality: str | None = None
    instances: int | None = None


def dicom_date(text: str) -> str:
    """``2024-01-31`` or ``20240131`` -> ``20240131`` (InputError otherwise)."""
    digits = re.sub(r"[-/.]", "", text.strip())
    if not re.fullmatch(r"(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])", digits):
        raise InputError(f"--since {text!r}: give a date as YYYY-MM-DD or YYYYMMDD")
    return digits


def study_filters(modalities: tuple[str, ...] | None, since: str | None) -> list[dict]:
    """QIDO/C-FIND study filters: one query per modality (ModalitiesInStudy takes one value), StudyDate ``since-``."""
    base = {"StudyDate": f"{dicom_date(since)}-"} if since else {}
    if not modalities:
        return [base]
    return [{**base, "ModalitiesInStudy": m} for m in modalities]
