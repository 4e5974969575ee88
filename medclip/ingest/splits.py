"""Patient keys and patient-level splits.

Patient identifiers never reach disk raw: :func:`patient_key` is a salted SHA-256 of the PatientID. Splits come from
a hash of that key, so they are deterministic and a patient's split does not depend on the other patients.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets

import pandas as pd

from medclip.config import SPLITS

logger = logging.getLogger(__name__)

__all__ = ["SALT_ENV", "SPLITS", "assign_split", "check_splits_disjoint", "default_salt", "patient_key"]

SALT_ENV = "MEDCLIP_PATIENT_SALT"


def patient_key(patient_id: str, salt: str) -> str:
    """The salted SHA-256 (20 hex) that stands for a PatientID everywhere on disk."""
    return hashlib.sha256(f"{salt}:{patient_id}".encode()).hexdigest()[:20]


def assign_split(key: str, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> str:
    """Deterministic patient-level split from the (salted) patient key."""
    u = int(hashlib.sha256(f"split:{key}".encode()).hexdigest()[:12], 16) / 16**12
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def check_splits_disjoint(df: pd.DataFrame) -> None:
    """ValueError when a patient_key has rows in more than one split."""
    per_patient = df.groupby("patient_key")["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise ValueError(f"{len(leaked)} patients appear in more than one split; splits must be by patient")


def default_salt() -> str:
    """The salt from ``MEDCLIP_PATIENT_SALT``, else a random one (with a warning: keys then differ per run)."""
    salt = os.environ.get(SALT_ENV)
    if not salt:
        salt = secrets.token_hex(16)
        logger.warning(
            "no patient salt given (--salt or %s); using a random one: keys won't match other runs", SALT_ENV
        )
    return salt
