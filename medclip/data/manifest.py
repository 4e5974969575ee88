"""Manifest: one row per kept image, a rejects table with one row per rejected input, and a meta file.

Patient identifiers never reach disk raw: ``patient_key`` is a salted SHA-256 of the PatientID. Splits are by
patient, from a hash of the key, so they are deterministic and stay put when the archive grows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medclip.data.archive import LAYOUTS, ArchiveScan, reject
from medclip.data.reports import parse_sections, report_text

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_NAME, META_NAME, REJECTS_NAME = "manifest.parquet", "manifest.meta.json", "rejects.parquet"
COLUMNS = (
    "row_id", "image_path", "study_id", "series_id", "sop_uid", "accession", "patient_key", "split", "modality",
    "view", "rows", "columns", "findings", "impression", "text",
)  # fmt: skip
REJECT_COLUMNS = ("path", "kind", "reason", "detail")
SPLITS = ("train", "val", "test")
SALT_ENV = "MEDCLIP_PATIENT_SALT"


@dataclass
class ManifestResult:
    manifest: pd.DataFrame
    rejects: pd.DataFrame
    meta: dict


def patient_key(patient_id: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{patient_id}".encode()).hexdigest()[:20]


def assign_split(key: str, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> str:
    """Deterministic patient-level split from the (salted) patient key."""
    u = int(hashlib.sha256(f"split:{key}".encode()).hexdigest()[:12], 16) / 16**12
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def check_splits_disjoint(df: pd.DataFrame) -> None:
    per_patient = df.groupby("patient_key")["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise ValueError(f"{len(leaked)} patients appear in more than one split; splits must be by patient")


def _read_report(path: Path) -> tuple[dict | None, dict | None]:
    """-> (sections, None) or (None, reject)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, reject(path, "report_unreadable", f"{path}: {exc.strerror}", kind="report")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, reject(path, "report_encoding", f"{path}: not UTF-8 text; re-export as UTF-8", kind="report")
    sections = parse_sections(text)
    if not (sections.get("findings") or sections.get("impression")):
        return None, reject(path, "empty_report", f"{path}: no findings or impression text", kind="report")
    return sections, None


def _attach_reports(scan: ArchiveScan, text_policy: str) -> tuple[list[dict], list[dict], set[str]]:
    kept, rejects, used, parsed = [], [], set(), {}
    seen_sop: set[str] = set()
    for img in scan.images:
        if img.get("sop_uid") and img["sop_uid"] in seen_sop:
            rejects.append(reject(img["image_path"], "duplicate_sop", f"{img['image_path']}: SOPInstanceUID repeated"))
            continue
        seen_sop.add(img.get("sop_uid") or img["image_path"])
        key = next((k for k in (img.get("accession"), img.get("study_uid")) if k and k in scan.reports), None)
        if key is None:
            rejects.append(reject(img["image_path"], "no_report", f"{img['image_path']}: no report for its study"))
            continue
        if key not in parsed:
            parsed[key] = _read_report(scan.reports[key])
        sections, bad = parsed[key]
        used.add(key)
        if bad is not None:
            rejects.append(reject(img["image_path"], "report_rejected", f"{img['image_path']}: {bad['reason']}"))
            continue
        kept.append({**img, "findings": sections["findings"], "impression": sections["impression"],
                     "text": report_text(sections, text_policy)})  # fmt: skip
    rejects += [v[1] for k, v in parsed.items() if v[1] is not None]
    return kept, rejects, used


def build_manifest(
    root: str | Path,
    *,
    layout: str = "dicom",
    salt: str | None = None,
    text_policy: str = "findings_impression",
    modalities: tuple[str, ...] | None = ("CR", "DX", "DR"),
    verify_pixels: bool = True,
    show_progress: bool = True,
) -> ManifestResult:
    """Scan an archive and build the manifest, the rejects and the meta (counts reconcile)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"archive folder not found: {root}")
    scan: ArchiveScan = LAYOUTS.get(layout)(
        root, modalities=modalities, verify_pixels=verify_pixels, show_progress=show_progress
    )
    salt = salt or _default_salt()
    kept, report_rejects, used = _attach_reports(scan, text_policy)
    orphan = [reject(p, "orphan_report", f"{p}: no image of this study", kind="report")
              for k, p in sorted(scan.reports.items()) if k not in used]  # fmt: skip
    rejects = pd.DataFrame(scan.rejects + report_rejects + orphan, columns=list(REJECT_COLUMNS))
    df = pd.DataFrame(kept)
    if df.empty:
        df = pd.DataFrame(columns=list(COLUMNS))
    else:
        df["study_id"] = df["study_uid"]
        df["series_id"] = df["series_uid"]
        df["patient_key"] = [patient_key(str(p), salt) for p in df["patient_id"]]
        df["split"] = [assign_split(k) for k in df["patient_key"]]
        df = df.sort_values(["patient_key", "study_id", "image_path"]).reset_index(drop=True)
        df["row_id"] = range(len(df))
        df = df[list(COLUMNS)]  # drops raw patient_id and any other header facts that could identify a person
        check_splits_disjoint(df)
    meta = _meta(root, layout, df, rejects, scan)
    return ManifestResult(df, rejects, meta)


def _default_salt() -> str:
    import os

    salt = os.environ.get(SALT_ENV)
    if not salt:
        salt = secrets.token_hex(16)
        logger.warning(
            "no patient salt given (--salt or %s); using a random one: keys won't match other runs", SALT_ENV
        )
    return salt


def content_hash(df: pd.DataFrame) -> str:
    cols = ["image_path", "study_id", "patient_key", "split", "text"]
    payload = df[cols].to_csv(index=False).encode() if len(df) else b""
    return hashlib.sha256(payload).hexdigest()[:16]


def _meta(root: Path, layout: str, df: pd.DataFrame, rejects: pd.DataFrame, scan: ArchiveScan) -> dict:
    image_rejects = rejects[rejects["kind"] == "image"]
    report_rejects = rejects[rejects["kind"] == "report"]
    counts = {
        "inputs": len(df) + len(image_rejects),
        "kept": len(df),
        "rejected": len(image_rejects),
        "reports_found": len(scan.reports),
        "reports_rejected": len(report_rejects),
        "sidecar_files_skipped": scan.skipped,
        "studies": int(df["study_id"].nunique()) if len(df) else 0,
        "patients": int(df["patient_key"].nunique()) if len(df) else 0,
        "splits": {s: int((df["split"] == s).sum()) for s in SPLITS} if len(df) else {},
        "reject_reasons": dict(Counter(rejects["reason"])),
    }
    return {"schema_version": SCHEMA_VERSION, "source": str(root.resolve()), "layout": layout,
            "counts": counts, "content_hash": content_hash(df)}  # fmt: skip


def write_manifest(result: ManifestResult, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.manifest.to_parquet(out / MANIFEST_NAME, index=False)
    result.rejects.to_parquet(out / REJECTS_NAME, index=False)
    (out / META_NAME).write_text(json.dumps(result.meta, indent=2))
    return out


def read_manifest(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A manifest directory (or its parquet file) -> (rows, meta)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / MANIFEST_NAME).is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {folder}; build one with `medclip manifest ARCHIVE --out DIR`")
    df = pd.read_parquet(folder / MANIFEST_NAME)
    meta_path = folder / META_NAME
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return df, meta
