"""What a checkpoint trained on: ``trained_on.json`` beside its weights, salted keys only.

The file holds the training split's patient keys and study keys (salted SHA-256, :mod:`medclip.ingest.splits`; no
raw PatientID or study id), the salt fingerprint of the manifest they came from and its content hash. It is plain
JSON (no pickle). Evaluation and the case index compare an evaluated split against it
(:mod:`medclip.eval.overlap`); keys of different salt fingerprints are not comparable.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from medclip.errors import InputError
from medclip.io.tables import read_json

logger = logging.getLogger(__name__)

__all__ = ["TRAINED_ON_NAME", "count_overlap", "read_trained_on", "trained_on_record", "write_trained_on"]

TRAINED_ON_NAME = "trained_on.json"
TRAINED_ON_VERSION = 1
_KEY = re.compile(r"[0-9a-f]{20}")  # what patient_key / study_key look like; anything else is never written


def _keys(rows: pd.DataFrame, column: str) -> list[str]:
    if column not in rows.columns:
        return []
    values = set(rows[column].dropna().astype(str))
    keys = sorted(v for v in values if _KEY.fullmatch(v))
    if len(keys) < len(values):  # a hand-made manifest: never let a raw id through
        logger.warning("%d %s values are not salted keys; they are not recorded", len(values) - len(keys), column)
    return keys


def trained_on_record(rows: pd.DataFrame, meta: dict) -> dict:
    """The JSON record of the training rows ``rows`` (a manifest's) and their manifest's ``meta``."""
    return {
        "version": TRAINED_ON_VERSION,
        "salt_fingerprint": meta.get("salt_fingerprint"),
        "manifest_hash": meta.get("content_hash"),
        "patient_keys": _keys(rows, "patient_key"),
        "study_keys": _keys(rows, "study_key"),
    }


def write_trained_on(folder: str | Path, rows: pd.DataFrame, meta: dict) -> Path:
    """Write ``folder/trained_on.json`` for the training rows ``rows``; returns its path."""
    record = trained_on_record(rows, meta)
    if not record["study_keys"]:
        logger.warning("the manifest has no study_key column (older medclip): only patients are recorded as trained on")
    path = Path(folder) / TRAINED_ON_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    return path


def read_trained_on(folder: str | Path) -> dict | None:
    """A checkpoint's trained-on record, or None for a checkpoint written before medclip recorded it."""
    path = Path(folder) / TRAINED_ON_NAME
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("patient_keys"), list):
        raise InputError(f"{path}: not a medclip trained-on record; restore it from the run or delete it")
    return record


def count_overlap(record: dict, *, patient_keys: Iterable[str] = (), study_keys: Iterable[str] = ()) -> dict:
    """How many of the given (unique) patient and study keys the record trained on."""
    patients, studies = set(patient_keys), set(study_keys)
    return {
        "patients": len(patients & set(record.get("patient_keys", []))),
        "of_patients": len(patients),
        "studies": len(studies & set(record.get("study_keys", []))),
        "of_studies": len(studies),
    }
