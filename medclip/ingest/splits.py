"""Patient keys, the patient salt, and patient-level splits that stay put when the archive grows.

Patient identifiers never reach disk raw: :func:`patient_key` is a salted SHA-256 of the PatientID (and
:func:`study_key` of the study id). A patient's split is, in order of precedence:

1. *pinned*: the split the previous manifest in the output folder gave the patient (matched by patient key, or by
   study id for manifests older than the salt fingerprint), so a rebuild after new studies arrive, with other
   fractions or with a new split table, never moves a patient already assigned;
2. *from the table*: an official or user split table (``--splits``, :mod:`medclip.ingest.split_table`);
3. *hashed*: :func:`assign_split` of the salted key, deterministic and independent of the other patients.

The salt itself is a secret: :func:`resolve_salt` picks it (``--salt``, ``--salt-file``, the environment, or the
output folder's own ``.medclip_salt``, created once with mode 0600) and refuses a salt that differs from the one the
folder's manifest was built with. Manifests record only :func:`salt_fingerprint`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medclip.config import SPLITS
from medclip.errors import InputError
from medclip.ingest.split_table import SplitTable, norm_patient_id, norm_study_id

logger = logging.getLogger(__name__)

__all__ = [
    "SALT_ENV",
    "SALT_FILE",
    "SPLITS",
    "Pins",
    "assign_split",
    "assign_splits",
    "check_splits_disjoint",
    "default_salt",
    "patient_key",
    "read_pins",
    "resolve_salt",
    "salt_fingerprint",
    "HISTORY_NAME",
    "merge_history",
    "read_history",
    "study_key",
]

SALT_ENV = "MEDCLIP_PATIENT_SALT"
SALT_FILE = ".medclip_salt"  # in the manifest's output folder; a secret, never shared with the manifest


def patient_key(patient_id: str, salt: str) -> str:
    """The salted SHA-256 (20 hex) that stands for a PatientID everywhere on disk."""
    return hashlib.sha256(f"{salt}:{patient_id}".encode()).hexdigest()[:20]


def study_key(study_id: str, salt: str) -> str:
    """The salted SHA-256 (20 hex) of a study id: what a checkpoint records of the studies it trained on."""
    return hashlib.sha256(f"{salt}:study:{study_id}".encode()).hexdigest()[:20]


def id_key(kind: str, value: str, salt: str) -> str:
    """The salted SHA-256 (20 hex) of another header id (``kind``: series, sop) in a de-identified manifest."""
    return hashlib.sha256(f"{salt}:{kind}:{value}".encode()).hexdigest()[:20]


def key_record(record: dict, salt: str) -> dict:
    """An image record with every header id replaced by its salted key (de-identification; ``keyed`` marks it).

    Accession and StudyInstanceUID take the same kind of key (:func:`study_key`), so a report keyed by either still
    finds its images; the raw values never leave memory.
    """
    if record.get("keyed"):
        return record
    out = dict(record)
    for name, key in (("patient_id", patient_key), ("study_uid", study_key), ("accession", study_key)):
        value = record.get(name)
        out[name] = key(str(value), salt) if value is not None and str(value).strip() else None
    for name, kind in (("series_uid", "series"), ("sop_uid", "sop")):
        value = record.get(name)
        out[name] = id_key(kind, str(value), salt) if value else None
    out["keyed"] = True
    return out


@functools.lru_cache(maxsize=8)
def salt_fingerprint(salt: str) -> str:
    """12 hex that tell two salts apart without revealing either: keys of equal fingerprints are comparable.

    A slow key derivation (PBKDF2-SHA256, 1,000,000 rounds), because the fingerprint sits in the shareable meta: checking a
    guessed salt against it must cost as much as it can without slowing a build (about 0.2 s, once per run).
    """
    return hashlib.pbkdf2_hmac("sha256", salt.encode(), b"medclip-salt-fingerprint", 1_000_000).hex()[:12]


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


# -- the salt: chosen once per output folder, kept secret, checked against the folder's manifest ----------------
def read_salt_file(path: str | Path) -> str:
    """The salt stored in ``path`` (surrounding whitespace ignored); InputError when it is empty or unreadable."""
    path = Path(path)
    try:
        salt = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as exc:
        raise InputError(f"{path}: cannot read the patient salt file ({type(exc).__name__})") from None
    if not salt:
        raise InputError(f"{path}: the patient salt file is empty; restore it from a backup or delete it")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s: the patient salt file is readable by others; chmod 600 it", path)
    return salt


def _write_salt_file(path: Path, salt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the start: no readable moment
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(salt + "\n")


def resolve_salt(
    out_dir: str | Path | None,
    salt: str | None = None,
    salt_file: str | Path | None = None,
    *,
    previous_fingerprint: str | None = None,
    reshuffle: bool = False,
) -> str:
    """The patient salt for a manifest written to ``out_dir``; never logged.

    ``salt`` (``--salt``), else ``salt_file`` (``--salt-file``; created with a new random salt when it does not
    exist, so several output folders can share one), else env ``MEDCLIP_PATIENT_SALT``, else ``out_dir/.medclip_salt``
    (created on the first build into ``out_dir``). ``previous_fingerprint``: the salt fingerprint of the manifest
    already in ``out_dir``; a different salt is refused (every key and hash split would change) unless ``reshuffle``.
    """
    if salt and salt_file:
        raise InputError("give one of --salt or --salt-file, not both")
    own = Path(out_dir) / SALT_FILE if out_dir else None
    create: Path | None = None
    if salt:
        origin = "--salt"
        if len(salt) < 16:
            logger.warning(
                "--salt is short (%d characters): a guessable salt lets anyone with a list of patient IDs recompute "
                "the keys; use a long random one (python -c 'import secrets; print(secrets.token_hex(16))')",
                len(salt),
            )
    elif salt_file:
        origin, path = f"--salt-file {salt_file}", Path(salt_file)
        if path.exists():
            salt = read_salt_file(path)
        else:
            salt, create = secrets.token_hex(16), path
    elif os.environ.get(SALT_ENV):
        salt, origin = os.environ[SALT_ENV], SALT_ENV
    elif own is not None and own.exists():
        salt, origin = read_salt_file(own), str(own)
    elif own is not None:
        salt, origin, create = secrets.token_hex(16), f"a new {own}", own
    else:
        return default_salt()
    if previous_fingerprint and salt_fingerprint(salt) != previous_fingerprint:
        if not reshuffle:
            raise InputError(
                f"the manifest in {out_dir} was built with another patient salt (fingerprint {previous_fingerprint}, "
                f"this one from {origin} is {salt_fingerprint(salt)}): every patient key and split would change; give "
                f"the salt it was built with (--salt, --salt-file or {SALT_ENV}) or pass --reshuffle to re-split"
            )
        logger.warning("--reshuffle: a new patient salt for %s; every patient gets a new key and split", out_dir)
    if own is not None and own.exists() and create != own and origin != str(own) and read_salt_file(own) != salt:
        logger.warning("%s holds another salt than the one used now; a rebuild without --salt would use it", own)
    if create is not None:
        _write_salt_file(create, salt)
        logger.info("new patient salt in %s (mode 0600): keep it secret and do not share it with the manifest", create)
    return salt


# -- split assignment: pinned > table > hash -----------------------------------------------------------------------
@dataclass
class Pins:
    """The splits of a previous manifest: by patient key, and by study id (for manifests built with another salt)."""

    by_patient: dict[str, str] = field(default_factory=dict)
    by_study: dict[str, str] = field(default_factory=dict)


HISTORY_NAME = "split_history.parquet"  # every patient key an output folder has ever split, and its split


def read_history(folder: str | Path) -> dict[str, str]:
    """patient_key -> split of every patient a manifest in ``folder`` ever held (empty when there is none).

    The manifest alone would forget a patient missing from one rebuild (a folder not synced yet, a rejected report)
    and let the next rebuild split it afresh; the history only ever grows.
    """
    path = Path(folder) / HISTORY_NAME
    if not path.is_file():
        return {}
    try:
        df = pd.read_parquet(path, columns=["patient_key", "split"])
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(
            f"{path}: cannot read the split history ({type(exc).__name__}); restore it, or pass --reshuffle"
        ) from None
    return dict(zip(df["patient_key"].astype(str), df["split"].astype(str), strict=True))


def merge_history(history: dict[str, str], manifest: pd.DataFrame) -> pd.DataFrame:
    """The history with the patients of ``manifest`` added (an entry, once written, is never changed)."""
    merged = dict(zip(manifest["patient_key"].astype(str), manifest["split"].astype(str), strict=True))
    merged.update(history)
    return pd.DataFrame({"patient_key": list(merged), "split": list(merged.values())})


def read_pins(manifest_file: str | Path) -> Pins | None:
    """The splits of the manifest parquet ``manifest_file`` (None when there is none)."""
    path = Path(manifest_file)
    if not path.exists():  # a file, or the folder of parts medclip writes now
        return None
    try:
        df = pd.read_parquet(path, columns=["patient_key", "study_id", "split"])
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(
            f"{path}: cannot read the previous manifest's splits ({type(exc).__name__}); fix or remove it, or pass "
            "--reshuffle to ignore it"
        ) from None
    df = df.dropna(subset=["split"])
    by_study = {str(s): sp for s, sp in zip(df["study_id"], df["split"], strict=True) if s is not None and str(s)}
    return Pins(dict(zip(df["patient_key"].astype(str), df["split"], strict=True)), by_study)


def _table_splits(rows: pd.DataFrame, table: SplitTable) -> tuple[dict[str, str], int]:
    """(patient_key -> split for the patients the table covers, studies it does not list); InputError when it
    splits a patient."""
    per_patient: dict[str, set[str]] = {}
    listed_studies = unlisted_studies = 0
    seen_studies: set[str] = set()
    for key, pid, study, acc in zip(rows["patient_key"], rows["patient_id"], rows["study_id"], rows["accession"],
                                    strict=True):  # fmt: skip
        split = (
            table.studies.get(norm_study_id(study))
            or table.studies.get(norm_study_id(acc))
            or table.patients.get(norm_patient_id(pid))
        )
        if str(study) not in seen_studies:  # listed by its study id, accession or patient id
            seen_studies.add(str(study))
            listed_studies, unlisted_studies = listed_studies + bool(split), unlisted_studies + (not split)
        per_patient.setdefault(key, set())
        if split:
            per_patient[key].add(split)
    split_patients = sum(len(s) > 1 for s in per_patient.values())
    if split_patients:
        raise InputError(
            f"{table.file}: puts {split_patients} patients of this archive in more than one split (their studies are "
            "listed under different splits); a split table must keep each patient in one split"
        )
    if unlisted_studies:
        logger.warning(
            "%s lists %d of %d studies; the others follow their patient's split there, or the hash split for "
            "patients it does not list",
            table.file.name,
            listed_studies,
            listed_studies + unlisted_studies,
        )
    return {k: next(iter(s)) for k, s in per_patient.items() if s}, unlisted_studies


def _pinned_splits(rows: pd.DataFrame, pins: Pins) -> dict[str, str]:
    """patient_key -> the previous manifest's split, by key, else by the first of the patient's studies it held."""
    out: dict[str, str] = {}
    for key, study in zip(rows["patient_key"], rows["study_id"], strict=True):
        if key in out:
            continue
        split = pins.by_patient.get(key) or pins.by_study.get(str(study))
        if split:
            out[key] = split
    return out


def assign_splits(
    rows: pd.DataFrame, *, table: SplitTable | None = None, pins: Pins | None = None
) -> tuple[list[str], dict]:
    """One split per row of ``rows`` (``patient_key``, raw ``patient_id``, ``study_id``, ``accession``) -> (splits,
    counts): pinned > table > hash, per patient. Counts are patients: ``pinned``, ``from_table``, ``hashed``."""
    from_table, unlisted = _table_splits(rows, table) if table is not None else ({}, 0)
    pinned = _pinned_splits(rows, pins) if pins is not None else {}
    patient_split = {k: assign_split(k) for k in dict.fromkeys(rows["patient_key"])}
    patient_split.update(from_table)
    patient_split.update(pinned)
    overridden = sum(1 for k, s in from_table.items() if k in pinned and pinned[k] != s)
    if overridden:
        logger.warning(
            "%d patients keep the split of the previous manifest although %s puts them in another (--reshuffle "
            "re-splits)",
            overridden,
            table.file.name,
        )
    if pinned:
        logger.info("%d of %d patients pinned to the previous manifest's splits", len(pinned), len(patient_split))
    counts = {
        "source": "table" if table is not None else "hash",
        "file": table.file.name if table is not None else None,
        "sha256": table.sha256 if table is not None else None,
        "pinned": len(pinned),
        "from_table": sum(1 for k in from_table if k not in pinned),
        "hashed": sum(1 for k in patient_split if k not in pinned and k not in from_table),
    }
    if table is not None:
        counts["studies_not_in_table"] = unlisted
        counts["pinned_against_table"] = overridden
    return [patient_split[k] for k in rows["patient_key"]], counts


def site_key(site: str, salt: str) -> str:
    """The salted short key ("site-" + 8 hex) that stands for an InstitutionName where ids are keyed (a
    de-identified manifest, a PACS sync store); "" stays "". Without the salt a key names no hospital."""
    return "site-" + id_key("site", site, salt)[:8] if site else ""
