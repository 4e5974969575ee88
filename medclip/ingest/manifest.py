"""Manifest: one row per kept image, a rejects table with one row per rejected input, and a meta file.

Patient identifiers never reach disk raw: ``patient_key`` is a salted SHA-256 of the PatientID. Splits are by
patient, from a hash of the key, so they are deterministic and stay put when the archive grows. Every input the
layout saw is either a manifest row or a rejects row (:func:`reconcile` checks it); reason codes are in
:data:`REJECT_REASONS` (image readers) and :data:`medclip.io.dicom.REASONS`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from medclip.config import ManifestCfg
from medclip.deid.text import DeidError, TextScrubber
from medclip.errors import InputError
from medclip.executors import Executor, make_executor
from medclip.ingest.archive import ArchiveScan, InlineReport, add_reports, deferred_records, reject
from medclip.ingest.deid_scan import deid_scan, scrub_sections, study_identifiers
from medclip.ingest.layouts import LAYOUTS
from medclip.ingest.layouts.csv_table import parse_column_roles
from medclip.ingest.manifest_io import (  # re-exported: callers import them from here
    MANIFEST_NAME as MANIFEST_NAME,
)
from medclip.ingest.manifest_io import (
    META_NAME as META_NAME,
)
from medclip.ingest.manifest_io import (
    PART_NAME as PART_NAME,
)
from medclip.ingest.manifest_io import (
    REJECTS_NAME as REJECTS_NAME,
)
from medclip.ingest.manifest_io import (
    ROWS_PER_PART as ROWS_PER_PART,
)
from medclip.ingest.manifest_io import (
    TEXT_SUBGROUPS as TEXT_SUBGROUPS,
)
from medclip.ingest.manifest_io import (
    ManifestResult as ManifestResult,
)
from medclip.ingest.manifest_io import (
    manifest_folder as manifest_folder,
)
from medclip.ingest.manifest_io import (
    manifest_meta as manifest_meta,
)
from medclip.ingest.manifest_io import (
    read_manifest as read_manifest,
)
from medclip.ingest.manifest_io import (
    staged_output as staged_output,
)
from medclip.ingest.manifest_io import (
    write_manifest as write_manifest,
)
from medclip.ingest.sources import is_pacs_source, parse_source
from medclip.ingest.sources.redact import Redactor
from medclip.ingest.split_table import read_split_table
from medclip.ingest.splits import (
    SPLITS,
    Pins,
    assign_splits,
    check_splits_disjoint,
    default_salt,
    merge_history,
    patient_key,
    read_history,
    read_pins,
    resolve_salt,
    salt_fingerprint,
    site_key,
    study_key,
)
from medclip.io import storage
from medclip.io.demographics import SUBGROUP_COLUMNS
from medclip.io.tables import read_json
from medclip.io.text import LEGACY_ENCODINGS, NotTextError, decode_text
from medclip.reports.sections import parse_sections, report_text, sections_from_fields

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: the subgroup columns sex, age_band, manufacturer, site (read_manifest fills them in older ones)
COLUMNS = (
    "row_id", "image_path", "study_id", "series_id", "sop_uid", "accession", "patient_key", "study_key", "split",
    "modality", "view", "sex", "age_band", "manufacturer", "site", "rows", "columns", "findings", "impression", "text",
    "report_encoding", "deid_replacements",
)  # fmt: skip
REJECT_COLUMNS = ("path", "kind", "reason", "detail")
DEFAULT_MODALITIES = ("CR", "DX", "DR")  # radiographs; a layout of other images names its own below
LAYOUT_MODALITIES: dict[str, tuple[str, ...]] = {"dicom-ct": ("CT",)}
# Reject reasons added by layouts and pairing, on top of the image readers' medclip.io.dicom.REASONS.
REJECT_REASONS: dict[str, str] = {
    "no_report": "image: no report for its study (or no XML/CSV row lists it)",
    "report_rejected": "image: its study's report was rejected (see that report's own row)",
    "duplicate_sop": "image: SOPInstanceUID (or image id / path) already seen; the first copy is kept",
    "patient_conflict": "image: its StudyInstanceUID was already seen under another PatientID",
    "no_patient": "image: no PatientID (subject / patient column), so it cannot be split by patient",
    "no_image": "image: a CSV row without any image path",
    "layout_path": "image: not where the layout puts images (e.g. MIMIC files/pNN/p<subject>/s<study>/)",
    "metadata_conflict": "image: the dataset's metadata CSV disagrees with the path about subject/study",
    "empty_report": "report: no findings or impression text (blank, or headers only)",
    "report_binary": "report: binary data, not text (an image, a PDF, ...); text in any encoding is kept",
    "report_unreadable": "report: the file cannot be read (missing, permissions)",
    "orphan_report": "report: no image of its study (or an Open-i XML listing no image)",
    "duplicate_report": "report: a second report for a study that already has one",
    "malformed_report": "report: a report-table line that is not a JSON object or has no study key",
    "malformed_xml": "report: an Open-i XML file that does not parse",
    "superseded_report": "report: an earlier version of a report that a corrected / amended one replaced",
    "cancelled_report": "report: cancelled or entered in error at the source (RIS status)",
    "fetch_failed": "study: could not be retrieved from the PACS after the retries; the next sync tries again",
    "not_a_report": "report: a DICOM object or HL7 message among the reports that is not a report (e.g. ADT, KOS)",
    "deid_failed": "report: de-identification failed, so its text is not kept",
}


def _source_id(source: Path | InlineReport) -> str:
    return source.id if isinstance(source, InlineReport) else str(source)


def _read_report(source: Path | InlineReport) -> tuple[dict | None, str | None, dict | None]:
    """A report file or inline text -> (sections, encoding, None) or (None, None, reject).

    Files are decoded by :func:`medclip.io.text.decode_text` (UTF-8, UTF-16, cp1252, ...); inline text was decoded with
    its table and carries that table's encoding.
    """
    path = _source_id(source)
    try:
        if not isinstance(source, InlineReport):
            text, encoding = decode_text(source.read_bytes())
        else:
            text, encoding = source.text, source.encoding
    except OSError as exc:
        return None, None, reject(path, "report_unreadable", f"{path}: {exc.strerror or exc}", kind="report")
    except NotTextError as exc:
        return None, None, reject(path, "report_binary", f"{path}: {exc}; export the report as text", kind="report")
    fields = source.sections if isinstance(source, InlineReport) else None
    sections = sections_from_fields(fields) if fields else parse_sections(text)
    if not (sections.get("findings") or sections.get("impression")):
        return None, None, reject(path, "empty_report", f"{path}: no findings or impression text", kind="report")
    return sections, encoding, None


def check_patients(images: list[dict]) -> tuple[list[dict], list[dict]]:
    """Reject images without a PatientID, and later images of a study already seen under another PatientID.

    A study under two PatientIDs means a merge/anonymisation error: kept, it would put one study in two splits.
    """
    kept, rejects, owner = [], [], {}
    for img in images:
        path, patient, study = img["image_path"], img.get("patient_id"), img.get("study_uid")
        if not patient or not str(patient).strip():
            rejects.append(reject(path, "no_patient", f"{path}: no PatientID; fill it so splits can be by patient"))
            continue
        first = owner.setdefault(study, patient) if study else patient
        if first != patient:
            detail = f"{path}: study {study} already seen under another PatientID; fix the IDs at the source"
            rejects.append(reject(path, "patient_conflict", detail))
            continue
        kept.append(img)
    return kept, rejects


def _attach_reports(
    scan: ArchiveScan, text_policy: str, *, scrubber: TextScrubber | None = None, salt: str = ""
) -> tuple[list[dict], list[dict], set[str], Counter]:
    kept, rejects, used, parsed = [], [], set(), {}
    seen_sop: set[str] = set()
    images, rejects = check_patients(scan.images)
    known = study_identifiers(scan, images, salt) if scrubber is not None else {}
    scrubbed: Counter = Counter()
    for img in images:
        if (img.get("sop_uid") or img["image_path"]) in seen_sop:
            detail = f"{img['image_path']}: SOPInstanceUID (or image id / path) repeated; the first copy is kept"
            rejects.append(reject(img["image_path"], "duplicate_sop", detail))
            continue
        seen_sop.add(img.get("sop_uid") or img["image_path"])
        key = scan.report_for(img.get("accession"), img.get("study_uid"))
        if key is None:
            rejects.append(reject(img["image_path"], "no_report", f"{img['image_path']}: no report for its study"))
            continue
        if key not in parsed:
            parsed[key] = _read_report(scan.reports[key])
            if scrubber is not None and parsed[key][2] is None:
                source = scan.reports[key]
                try:
                    sections, n, kinds = scrub_sections(parsed[key][0], scrubber, known.get(key))
                except DeidError as exc:
                    where = _source_id(source)
                    parsed[key] = (None, None, reject(where, exc.reason, f"{where}: {exc}", kind="report"), 0)
                else:
                    prior = source.replacements if isinstance(source, InlineReport) else 0
                    parsed[key] = (sections, parsed[key][1], None, n + prior)
                    scrubbed.update(kinds)
                    scrubbed["reports"] += 1
        sections, encoding, bad = parsed[key][:3]
        used.add(key)
        if bad is not None:
            detail = f"{img['image_path']}: its report {bad['path']} was rejected ({bad['reason']})"
            rejects.append(reject(img["image_path"], "report_rejected", detail))
            continue
        kept.append(
            {
                **img,
                "findings": sections["findings"],
                "impression": sections["impression"],
                "text": report_text(sections, text_policy),
                "report_encoding": encoding,
                "deid_replacements": parsed[key][3] if scrubber is not None else None,
            }
        )
    rejects += [p[2] for p in parsed.values() if p[2] is not None]
    encodings = Counter(p[1] for p in parsed.values() if p[2] is None)
    legacy = sum(n for name, n in encodings.items() if name.endswith(LEGACY_ENCODINGS))  # "utf-8+cp1252" too
    log = logger.info if legacy else logger.debug
    log("%d of %d reports needed a legacy-encoding fallback; encodings: %s", legacy, encodings.total(), dict(encodings))
    return kept, rejects, used, scrubbed


def build_manifest(
    root: str | Path,
    *,
    layout: str = "dicom",
    salt: str | None = None,
    text_policy: str = "findings_impression",
    modalities: tuple[str, ...] | None = (),
    verify_pixels: bool = True,
    show_progress: bool = True,
    reports: str | Path | None = None,
    layout_options: dict | None = None,
    label_set: str | None = None,
    splits: str | Path | None = None,
    pin_to: str | Path | None = None,
    deid: bool = False,
    scan: ArchiveScan | None = None,
    source_label: str | None = None,
    executor: Executor | None = None,
) -> ManifestResult:
    """Scan an archive and build the manifest, the rejects and the meta (counts reconcile).

    Args:
        root: the archive folder (for ``layout="csv"`` also the CSV file itself).
        layout: a name in ``LAYOUTS`` (dicom, mimic-cxr-jpg, openi, csv).
        reports: extra reports: a CSV/JSONL table (study key + text columns) or a folder of ``<key>.txt``.
        layout_options: layout-specific keywords, e.g. ``{"columns": {"image": "png"}}`` for csv.
        label_set: attach rule-based report labels (``chexpert`` / ``chestxray14``) as manifest columns.
        modalities: the modalities to keep (others are ``modality`` rejects); ``()`` the layout's default
            (:func:`default_modalities`), ``None`` every modality.
        salt: the patient salt (None: env MEDCLIP_PATIENT_SALT, else a random one; :func:`manifest_from_config`
            keeps one per output folder, :func:`medclip.ingest.splits.resolve_salt`).
        splits: a split table (CSV / CSV.gz, :mod:`medclip.ingest.split_table`); patients it does not list are
            split by the hash of their key.
        pin_to: a previous manifest folder: its patients keep their splits (:mod:`medclip.ingest.splits`).
        deid: de-identify (:mod:`medclip.deid`): every id column a salted key, report text scrubbed of names, ids,
            dates, phones and addresses (the study's own header values as exact matches); ``deid_replacements``
            counts the replacements per report.
        scan: an :class:`ArchiveScan` made elsewhere (a PACS sync store), used instead of running ``layout``;
            ``reports`` are added to it, keyed like its images.
        source_label: what meta ``source`` says (default: the resolved ``root``).
        executor: where the header reads and pixel checks run (:mod:`medclip.executors`: worker processes, a Dask
            cluster); None -> this process. The result does not depend on it.
    """
    root = Path(root)
    if modalities is not None and not modalities:
        modalities = default_modalities(layout)
    if scan is None and not root.exists():
        raise FileNotFoundError(f"archive folder not found: {root} (for --layout csv: the CSV file)")
    table = read_split_table(splits) if splits else None  # a bad table fails before the scan
    pins = read_pins(Path(pin_to) / MANIFEST_NAME) if pin_to else None
    history = read_history(pin_to) if pin_to else {}
    if history:
        pins = pins or Pins()
        pins.by_patient = {**history, **pins.by_patient}  # patients absent from the last build keep their split too
    salt = salt or default_salt()
    if scan is None:
        with deferred_records(executor, show_progress=show_progress):
            scan = LAYOUTS.get(layout)(
                root,
                modalities=modalities,
                verify_pixels=verify_pixels,
                show_progress=show_progress,
                reports=Path(reports) if reports is not None else None,
                **(layout_options or {}),
            )
    elif reports is not None:
        add_reports(scan, Path(reports), key_fn=(lambda k: study_key(str(k), salt)) if scan.keyed else str)
    redactor = Redactor()
    sites_keyed = scan.keyed  # a PACS sync store keeps each site as its key already
    if deid:
        scan = deid_scan(scan, salt, redactor)
    scrubber = TextScrubber() if deid else None
    kept, report_rejects, used, scrubbed = _attach_reports(scan, text_policy, scrubber=scrubber, salt=salt)
    orphan = [
        reject(_source_id(p), "orphan_report", f"{_source_id(p)}: no image of this study", kind="report")
        for k, p in sorted(scan.reports.items())
        if k not in used
    ]
    rejects = pd.DataFrame(scan.rejects + report_rejects + orphan, columns=list(REJECT_COLUMNS))
    if deid and kept and layout != "pacs":
        named = sum(redactor.redact(str(img["image_path"])) != str(img["image_path"]) for img in kept)
        if named:  # the archive's own paths are kept (they must stay readable); say so rather than hide it
            logger.warning(
                "%d image paths contain a header identifier (an accession, UID or patient id in a folder name); the "
                "manifest keeps the archive's paths as they are: rename them, or ingest from the PACS",
                named,
            )
    if deid:  # a raw UID or accession in a reject's file name or message becomes its key
        rejects["path"] = [redactor.redact(str(v)) for v in rejects["path"]]
        rejects["detail"] = [redactor.redact(str(v)) for v in rejects["detail"]]
    df = pd.DataFrame(kept)
    if df.empty:
        df = pd.DataFrame(columns=list(COLUMNS))
        _, split_info = assign_splits(df.reindex(columns=[*COLUMNS, "patient_id"]), table=table, pins=pins)
    else:
        df["study_id"] = df["study_uid"]
        df["series_id"] = df["series_uid"]
        if scan.keyed:  # ids are salted keys already
            df["patient_key"], df["study_key"] = df["patient_id"], df["study_id"]
        else:
            df["patient_key"] = [patient_key(str(p), salt) for p in df["patient_id"]]
            df["study_key"] = [study_key(str(s), salt) if s else None for s in df["study_id"]]
        df["split"], split_info = assign_splits(df, table=table, pins=pins)  # pinned > table > hash, per patient
        _fill_subgroups(df, salt if deid and not sites_keyed else None)
        df = df.sort_values(["patient_key", "study_id", "image_path"]).reset_index(drop=True)
        df["row_id"] = range(len(df))
        df = df[list(COLUMNS)]  # drops raw patient_id and any other header facts that could identify a person
        check_splits_disjoint(df)
        if label_set:
            from medclip.reports.label_io import label_dataframe

            # Labels extracted from the report text, one column per label (1 / 0 / -1 / NaN blank).
            df = pd.concat([df, label_dataframe(df, label_set=label_set)], axis=1)
    meta = _meta(root, layout, df, rejects, scan)
    if source_label:
        meta["source"] = source_label
    meta["deid"] = {"enabled": bool(deid)}
    if deid:
        meta["deid"].update(
            reports_scrubbed=scrubbed.pop("reports", 0), replacements=sum(scrubbed.values()), by_kind=dict(scrubbed)
        )
    meta["counts"]["report_encodings"] = dict(Counter(df.drop_duplicates("study_id")["report_encoding"]))
    meta["label_set"] = label_set
    meta["counts"]["subgroups"] = {c: dict(Counter(df[c].fillna("").astype(str))) for c in SUBGROUP_COLUMNS}
    meta["salt_fingerprint"] = salt_fingerprint(salt)  # tells salts apart; the salt itself is never written here
    meta["splits"] = split_info
    reconcile(meta)
    return ManifestResult(df, rejects, meta, merge_history(history, df))


def _fill_subgroups(df: pd.DataFrame, deid_salt: str | None) -> None:
    """Give every row the subgroup columns as strings ("" unknown); with ``deid_salt`` the site becomes its key
    (:func:`~medclip.ingest.splits.site_key`)."""
    for col in TEXT_SUBGROUPS:
        values = df[col] if col in df.columns else pd.Series("", index=df.index)
        df[col] = values.fillna("").astype(str)
    if deid_salt is not None:
        df["site"] = [site_key(s, deid_salt) for s in df["site"]]


def reconcile(meta: dict) -> None:
    """Raise RuntimeError unless every image input is kept or rejected: ``inputs = kept + rejected``."""
    c = meta["counts"]
    if c["inputs"] != c["kept"] + c["rejected"]:
        raise RuntimeError(
            f"manifest does not reconcile: {c['inputs']} inputs != {c['kept']} kept + {c['rejected']} rejected; "
            "a layout lost or double-counted inputs (please report this as a bug)"
        )


def content_hash(df: pd.DataFrame) -> str:
    cols = ["image_path", "study_id", "patient_key", "split", "text"]
    payload = df[cols].to_csv(index=False).encode() if len(df) else b""
    return hashlib.sha256(payload).hexdigest()[:16]


def _meta(root: Path, layout: str, df: pd.DataFrame, rejects: pd.DataFrame, scan: ArchiveScan) -> dict:
    image_rejects = rejects[rejects["kind"] == "image"]
    scan_kinds = pd.Series([r["kind"] for r in scan.rejects], dtype=object)
    report_rejects = rejects[rejects["kind"] == "report"]
    counts = {
        "inputs": scan.inputs if scan.inputs is not None else len(scan.images) + int((scan_kinds == "image").sum()),
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
    return {
        "schema_version": SCHEMA_VERSION,
        "source": str(root.resolve()),
        "layout": layout,
        "counts": counts,
        "content_hash": content_hash(df),
    }


def default_modalities(layout: str) -> tuple[str, ...]:
    """The modalities a layout keeps unless told otherwise (CR/DX/DR radiographs; CT for ``dicom-ct``)."""
    return LAYOUT_MODALITIES.get(layout, DEFAULT_MODALITIES)


def manifest_from_config(cfg: ManifestCfg, *, show_progress: bool = True) -> ManifestResult:
    """:func:`build_manifest` for a ``medclip manifest`` configuration."""
    if not cfg.source:
        raise InputError("manifest needs a source: an archive folder (or the CSV file of the csv layout)")
    cfg = _fetch_inputs(cfg)
    options = {}
    if cfg.columns:
        if cfg.layout != "csv":
            raise InputError(f"columns (--column) apply to the csv layout only, not {cfg.layout}")
        options["columns"] = parse_column_roles(cfg.columns)
    modalities: tuple[str, ...] | None = tuple(m.strip().upper() for m in cfg.modalities if m.strip())
    if modalities == ("ALL",):
        modalities = None
    out = Path(cfg.out_dir) if cfg.out_dir else None
    previous = out is not None and (out / MANIFEST_NAME).exists()  # a rebuild: keep its salt and its splits
    previous_meta = read_json(out / META_NAME) if previous and (out / META_NAME).is_file() else {}
    salt = resolve_salt(
        out,
        cfg.salt or None,
        cfg.salt_file or None,
        previous_fingerprint=previous_meta.get("salt_fingerprint"),
        reshuffle=cfg.reshuffle,
    )
    if previous and cfg.reshuffle:
        logger.warning("--reshuffle: the splits of the manifest already in %s are not kept", out)
    elif previous and not previous_meta.get("salt_fingerprint"):
        logger.warning("%s: a manifest without a salt fingerprint (older medclip); its splits are kept by study", out)
    deid = resolve_deid(cfg)
    common = dict(
        salt=salt,
        splits=cfg.splits or None,
        pin_to=out if previous and not cfg.reshuffle else None,
        text_policy=cfg.text_policy,
        show_progress=show_progress,
        reports=cfg.reports or None,
        label_set=cfg.labels or None,
        deid=deid,
    )
    if is_pacs_source(cfg.source):
        if cfg.executor != "local":
            raise InputError("--executor applies to archive scans; a PACS sync runs --workers retrievals itself")
        return _manifest_from_pacs(cfg, out, modalities, common)
    with make_executor(cfg.executor, scheduler=cfg.scheduler, workers=cfg.processes) as executor:
        return build_manifest(
            cfg.source,
            layout=cfg.layout,
            modalities=modalities,
            verify_pixels=cfg.verify_pixels,
            layout_options=options,
            executor=executor,
            **common,
        )


def _fetch_inputs(cfg: ManifestCfg) -> ManifestCfg:
    """Local copies (cached, :func:`medclip.io.storage.fetch`) of the inputs given as object-storage URLs: the CSV
    of the csv layout, --reports and --splits. An archive folder of images is read where it is (a local disk or a
    mounted bucket: mountpoint-s3, s3fs-fuse, gcsfuse)."""
    cfg = copy.copy(cfg)
    if storage.is_url(cfg.source) and not is_pacs_source(cfg.source):
        if cfg.layout != "csv":
            raise InputError(
                f"{storage.display(cfg.source)}: the {cfg.layout} layout reads an archive folder on a file system "
                "(mount the bucket, e.g. with mountpoint-s3); only the CSV of --layout csv may be a URL"
            )
        cfg.source = str(storage.fetch(cfg.source))
        logger.info("the CSV's relative image paths resolve against its cached copy's folder: give absolute paths")
    for key in ("reports", "splits"):
        if getattr(cfg, key) and storage.is_url(getattr(cfg, key)):
            setattr(cfg, key, str(storage.fetch(getattr(cfg, key))))
    return cfg


def resolve_deid(cfg: ManifestCfg) -> bool:
    """``deid``: on / off, or auto: on for a PACS source or RIS reports (DICOM SR, HL7 v2, FHIR)."""
    value = str(cfg.deid).strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        if is_pacs_source(cfg.source):
            logger.warning("de-identification is off for a PACS source: report text and ids are kept as they are")
        return False
    if value != "auto":
        raise InputError(f"deid={cfg.deid!r}: use auto, on or off")
    if is_pacs_source(cfg.source):
        return True
    from medclip.ingest.ris import detect

    return bool(cfg.reports) and Path(cfg.reports).exists() and detect(Path(cfg.reports)) is not None


def _manifest_from_pacs(cfg: ManifestCfg, out: Path | None, modalities, common: dict) -> ManifestResult:
    from medclip.ingest.sources.sync import sync

    if out is None:
        raise InputError("a PACS source needs --out DIR: the studies are synced into it")
    if cfg.layout not in ("dicom", ""):
        raise InputError(f"--layout {cfg.layout} does not apply to a PACS source (its studies are DICOM)")
    source = parse_source(cfg.source)
    if modalities == ():  # no --modalities: the radiographs, as the dicom layout
        modalities = DEFAULT_MODALITIES
    redactor = Redactor()
    store, report = sync(
        source,
        out,
        salt=common["salt"],
        modalities=modalities,
        since=cfg.since or None,
        workers=cfg.workers,
        retries=cfg.retries,
        verify_pixels=cfg.verify_pixels,
        show_progress=common["show_progress"],
        retrieve=cfg.retrieve,
        calling_ae=cfg.calling_ae,
        store_port=cfg.store_port,
        redactor=redactor,
        deid=common["deid"],
    )
    scan = store.scan(source.label)
    scan.rejects += report.failed
    scan.inputs += len(report.failed)
    with redactor.installed():
        result = build_manifest(
            out, layout="pacs", scan=scan, source_label=source.label, modalities=modalities, **common
        )
    result.meta["sync"] = report.as_dict()
    return result
