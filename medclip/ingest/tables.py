"""Evaluation tables: a manifest or a user CSV -> one normalised table of images, report text and labels.

A CSV needs an image-path column (paths relative to the CSV's folder or absolute; DICOM, PNG or JPEG), and may have a
report-text column, label columns (1 positive, 0 negative, -1 uncertain, blank not mentioned, as in CheXpert), a
``study_id``, a ``patient_id`` and a ``split`` column. Without a ``split`` column rows are split 70/10/20 by a hash of
the patient (or study) id, as manifests are, so thresholds and probes have validation and training rows.

Subgroup columns (:data:`medclip.io.demographics.SUBGROUP_COLUMNS`: sex, age_band, view, manufacturer, site) come
along when the source has them, under those names or common aliases (``Sex`` / ``gender``, ``Age`` / ``PatientAge`` as
a band, ``ViewPosition`` / ``AP/PA``, ``InstitutionName``, ...; :data:`SUBGROUP_ALIASES`); they are never labels.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medclip.errors import InputError
from medclip.ingest.archive import column_key, find_column, view_name
from medclip.ingest.manifest import read_manifest
from medclip.ingest.splits import SPLITS, assign_split
from medclip.io.demographics import SUBGROUP_COLUMNS, age_band, clean_name, normalise_sex
from medclip.io.tables import read_csv
from medclip.reports.sections import TEXT_COLUMNS, pair_text

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ("row_id", "image_path", "study_id", "split", "report")
KEY_COLUMNS = ("patient_key", "study_key")  # salted keys, kept when the source has them (the training-overlap check)
INFO_COLUMNS = ("modality", "impression")  # shown with a case (the case index, the web page) when the source has them
IMAGE_COLUMNS = ("image_path", "path", "image", "filename", "file", "png_path", "dicom_path", "Path")
# A single-section column is report text too when a CSV has nothing else.
CSV_TEXT_COLUMNS = (*TEXT_COLUMNS, "impression", "findings")
STUDY_COLUMNS = ("study_id", "study", "accession", "accession_number")
PATIENT_COLUMNS = ("patient_id", "patient", "subject_id", "patient_key")
# Subgroup column -> the CSV column names it is read from (compared loosely: "Patient Age" == "patient_age"), first
# match wins. Only a view position (AP / PA / LATERAL) is a view: a "Frontal/Lateral" column alone is not mapped.
SUBGROUP_ALIASES: dict[str, tuple[str, ...]] = {
    "sex": ("sex", "gender", "patient_sex"),
    "age_band": ("age_band", "age", "patient_age", "age_years"),
    "view": ("view", "view_position", "AP/PA", "projection"),
    "manufacturer": ("manufacturer", "vendor"),
    "site": ("site", "institution", "institution_name", "hospital", "centre", "center"),
}
_SUBGROUP_VALUE = {"sex": normalise_sex, "age_band": age_band, "view": lambda v: view_name(v) or ""}
# Never label columns, even when they hold only 0/1 values.
ID_LIKE = {"row_id", "split", "rows", "columns", "series_id", *STUDY_COLUMNS, *PATIENT_COLUMNS, *KEY_COLUMNS}
# Nor subgroup columns (a toy table's Age may hold only 0 / 1), compared loosely like SUBGROUP_ALIASES.
_SUBGROUP_KEYS = {
    column_key(n) for n in (*SUBGROUP_COLUMNS, *(n for names in SUBGROUP_ALIASES.values() for n in names))
}


def finding_key(name: str) -> str:
    """'Pleural Effusion' / 'Pleural_Effusion' -> 'pleural_effusion': how label columns meet prompt findings."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


@dataclass
class EvalTable:
    """Rows (``TABLE_COLUMNS``, plus the ``KEY_COLUMNS`` the source has) and aligned labels ([N, F] floats
    1 / 0 / -1 / NaN, columns are finding keys); ``salt_fingerprint`` of the keys when known (a manifest's)."""

    rows: pd.DataFrame
    labels: pd.DataFrame
    source: str
    has_text: bool
    salt_fingerprint: str | None = None

    def subset(self, split: str) -> EvalTable:
        """The rows of one split ("all" keeps every row), re-indexed from 0."""
        if split == "all":
            return self
        mask = (self.rows["split"] == split).to_numpy()
        return EvalTable(
            self.rows[mask].reset_index(drop=True),
            self.labels[mask].reset_index(drop=True),
            self.source,
            self.has_text,
            self.salt_fingerprint,
        )

    def label_dict(self, findings: list[str] | None = None) -> dict[str, np.ndarray]:
        cols = [f for f in (findings or list(self.labels.columns)) if f in self.labels.columns]
        return {f: self.labels[f].to_numpy(dtype=float) for f in cols}

    def groups(self, columns: list[str] | tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Subgroup column -> its values as a string array ("" unknown), for ``columns`` (default
        ``SUBGROUP_COLUMNS``) the rows have with at least one known value; absent or all-unknown ones are left out."""
        out = {}
        for col in columns if columns is not None else SUBGROUP_COLUMNS:
            if col not in self.rows.columns:
                continue
            values = self.rows[col].fillna("").astype(str).to_numpy()
            if (values != "").any():
                out[col] = values
        return out

    def content_hash(self) -> str:
        payload = self.rows[list(TABLE_COLUMNS)].to_csv(index=False).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def label_columns(df: pd.DataFrame, *, exclude: set[str] | tuple[str, ...] = ()) -> list[str]:
    """Columns whose values are all 1 / 0 / -1 / blank (and at least one is 0 or 1), except id-like columns."""
    out = []
    for col in df.columns:
        if col in exclude or str(col).lower() in ID_LIKE or column_key(col) in _SUBGROUP_KEYS:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        if values.notna().sum() != df[col].notna().sum():  # some non-numeric text: not a label column
            continue
        present = values.dropna()
        if len(present) and present.isin((-1, 0, 1)).all() and present.isin((0, 1)).any():
            out.append(col)
    return out


def _labels_frame(df: pd.DataFrame, cols: list[str], source: str) -> pd.DataFrame:
    keys = [finding_key(c) for c in cols]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise InputError(f"{source}: label columns collide after normalising names: {dup}; rename one of each pair")
    labels = pd.DataFrame(
        {k: pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) for k, c in zip(keys, cols, strict=True)},
        index=range(len(df)),
    )
    bad = [c for c, k in zip(cols, keys, strict=True) if not labels[k].dropna().isin((-1, 0, 1)).all()]
    if bad:
        raise InputError(f"{source}: label columns {bad} hold values other than 1 / 0 / -1 / blank")
    return labels.reset_index(drop=True)


def _pick(df: pd.DataFrame, given: str | None, candidates: tuple[str, ...], what: str, source: str) -> str | None:
    if given:
        if given not in df.columns:
            raise InputError(f"{source}: no {what} column '{given}'; columns are {list(df.columns)}")
        return given
    return next((c for c in candidates if c in df.columns), None)


def _resolve_paths(paths: pd.Series, base: Path, source: str) -> list[str]:
    resolved = [str(p if p.is_absolute() else base / p) for p in (Path(str(v)) for v in paths)]
    missing = [p for p in resolved if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source}: {len(missing)} of {len(resolved)} image files do not exist, e.g. "
            f"{missing[0]}; relative paths are read from the CSV's folder"
        )
    return resolved


def _splits(df: pd.DataFrame, split_col: str | None, group: pd.Series, source: str) -> list[str]:
    if split_col:
        values = df[split_col].astype(str).str.strip().str.lower()
        bad = sorted(set(values) - set(SPLITS))
        if bad:
            raise InputError(f"{source}: split column '{split_col}' has values {bad}; allowed: {SPLITS}")
        return list(values)
    logger.info("%s: no split column; splitting rows 70/10/20 by a hash of %s", source, group.name)
    return [assign_split(str(g)) for g in group]


def read_csv_table(
    path: str | Path,
    *,
    image_col: str | None = None,
    text_col: str | None = None,
    label_cols: list[str] | None = None,
) -> EvalTable:
    """A user CSV -> :class:`EvalTable` (see the module docstring for the columns it understands)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    df = read_csv(path)
    source = str(path)
    if df.empty:
        raise InputError(f"{source}: the CSV has no rows")
    image_col = _pick(df, image_col, IMAGE_COLUMNS, "image-path", source)
    if image_col is None:
        raise InputError(f"{source}: no image-path column; name one of {IMAGE_COLUMNS[:4]} or pass --image-col NAME")
    text_col = _pick(df, text_col, CSV_TEXT_COLUMNS, "text", source)
    study_col = _pick(df, None, STUDY_COLUMNS, "study", source)
    patient_col = _pick(df, None, PATIENT_COLUMNS, "patient", source)
    split_col = "split" if "split" in df.columns else None
    studies = df[study_col].astype(str) if study_col else pd.Series([f"row{i}" for i in range(len(df))], name="row")
    group = df[patient_col].astype(str) if patient_col else studies
    subgroup_cols = _subgroup_sources(df)
    used = {image_col, text_col, study_col, patient_col, split_col, *subgroup_cols.values()} - {None}
    cols = label_cols if label_cols else label_columns(df, exclude=used)
    for col in cols:
        if col not in df.columns:
            raise InputError(f"{source}: no label column '{col}'; columns are {list(df.columns)}")
    text = df[text_col].fillna("").astype(str) if text_col else pd.Series([""] * len(df))
    rows = pd.DataFrame(
        {
            "row_id": [f"csv{i}" for i in range(len(df))],
            "image_path": _resolve_paths(df[image_col], path.parent, source),
            "study_id": list(studies),
            "split": _splits(df, split_col, group, source),
            "report": list(text),
        }
    )
    for col in KEY_COLUMNS:  # keys from a manifest of the same salt make the training-overlap check possible
        if col in df.columns:
            rows[col] = df[col].astype(str).where(df[col].notna(), None).to_numpy()
    _add_info(rows, df)
    for name, col in subgroup_cols.items():
        convert = _SUBGROUP_VALUE.get(name, clean_name)
        rows[name] = [convert(v) for v in df[col].to_numpy(dtype=object)]
    logger.info("%s: %d rows, label columns %s, text column %s", source, len(rows), cols, text_col)
    return EvalTable(rows, _labels_frame(df, list(cols), source), source, has_text=text_col is not None)


def read_labels_csv(path: str | Path) -> pd.DataFrame:
    """A ground-truth CSV keyed by study_id -> frame with study_id + label columns (names as in the file)."""
    labels = read_csv(path)
    if "study_id" not in labels.columns:
        raise InputError(f"{path}: needs a study_id column (and one column per finding)")
    labels["study_id"] = labels["study_id"].astype(str)
    return labels[["study_id", *label_columns(labels)]].drop_duplicates("study_id")


def manifest_table(
    manifest: str | Path,
    *,
    text_policy: str,
    labels_csv: str | Path | None = None,
    splits: Sequence[str] | None = None,
) -> EvalTable:
    """A manifest directory -> :class:`EvalTable`; labels from ``labels_csv`` (by study_id) or manifest columns.
    ``splits``: read only these splits' rows (None: all)."""
    df, meta = read_manifest(manifest, splits=splits)
    if df.empty:
        which = f" in split(s) {', '.join(splits)}" if splits is not None else ""
        raise InputError(f"{manifest}: the manifest has no rows{which}")
    rows = pd.DataFrame(
        {
            "row_id": df["row_id"].astype(str).to_numpy(),
            "image_path": df["image_path"].astype(str).to_numpy(),
            "study_id": df["study_id"].astype(str).to_numpy(),
            "split": df["split"].astype(str).to_numpy(),
            "report": [pair_text(r, text_policy) for r in df.itertuples(index=False)],
        }
    )
    for col in KEY_COLUMNS:
        if col in df.columns:
            rows[col] = df[col].to_numpy()
    _add_info(rows, df)
    for col in SUBGROUP_COLUMNS:  # a manifest has them under their own names (read_manifest fills older ones)
        if col in df.columns:
            rows[col] = df[col].fillna("").astype(str).to_numpy()
    if labels_csv:
        table = read_labels_csv(labels_csv)
        merged = rows[["study_id"]].merge(table, on="study_id", how="left")
        unmatched = int(merged[table.columns[1:]].isna().all(1).sum()) if len(table.columns) > 1 else len(rows)
        if unmatched:
            logger.warning(
                "%s: %d of %d images have no row in %s (their labels are blank)",
                manifest,
                unmatched,
                len(rows),
                labels_csv,
            )
        labels = _labels_frame(merged, list(table.columns[1:]), str(labels_csv))
    else:
        labels = _labels_frame(df, label_columns(df, exclude=set(rows.columns) | {"text"}), str(manifest))
    return EvalTable(rows, labels, str(manifest), has_text=True, salt_fingerprint=meta.get("salt_fingerprint"))


def _subgroup_sources(df: pd.DataFrame) -> dict[str, str]:
    """Subgroup column -> the CSV column it is read from (:data:`SUBGROUP_ALIASES`), for those the CSV has."""
    columns = [str(c) for c in df.columns]
    return {name: col for name, names in SUBGROUP_ALIASES.items() if (col := find_column(columns, names))}


def _add_info(rows: pd.DataFrame, df: pd.DataFrame) -> None:
    for col in INFO_COLUMNS:
        if col in df.columns and col not in rows.columns:
            rows[col] = df[col].fillna("").astype(str).to_numpy()


def check_source(*, manifest: str | Path | None, csv: str | Path | None, shards: str | Path | None = None) -> None:
    """InputError unless exactly one of a manifest or a CSV is given, and shards (if any) go with a manifest."""
    if bool(manifest) == bool(csv):
        raise InputError("give exactly one of a manifest (--manifest DIR) or a CSV (--csv FILE)")
    if shards and not manifest:
        raise InputError("--shards goes with --manifest (shards are keyed by manifest row)")


def load_table(
    *,
    manifest: str | Path | None = None,
    csv: str | Path | None = None,
    text_policy: str = "findings_impression",
    labels_csv: str | Path | None = None,
    image_col: str | None = None,
    text_col: str | None = None,
    label_cols: list[str] | None = None,
    splits: Sequence[str] | None = None,
) -> EvalTable:
    """Exactly one of a manifest directory or a CSV -> :class:`EvalTable` (a manifest: only ``splits``' rows when
    given)."""
    check_source(manifest=manifest, csv=csv)
    if manifest:
        return manifest_table(manifest, text_policy=text_policy, labels_csv=labels_csv, splits=splits)
    table = read_csv_table(csv, image_col=image_col, text_col=text_col, label_cols=label_cols)
    if labels_csv:
        logger.warning("--labels is ignored with --csv: the CSV's own label columns are used")
    return table
