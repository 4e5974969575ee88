"""The ``dicom-ct`` archive layout: one manifest input per CT series (a folder of slice files) or per NIfTI volume.

What counts as one input (``scan.inputs``), each ending as one kept volume or one reject:

* a DICOM **series**: the readable DICOM files of one folder that share a SeriesInstanceUID (a lone CR file, an SR or
  a SEG object beside a CT series is a series of its own, and is normally rejected for ``modality``);
* a **NIfTI file** (``.nii``, ``.nii.gz``);
* an **unreadable file** (not DICOM, truncated, ...), rejected with the reader's reason.

``.txt`` files are reports named by AccessionNumber or StudyInstanceUID (as in the ``dicom`` layout); other sidecars
(CSV, JSON, README, DICOMDIR, ...) are skipped. ``image_path`` of a kept series is its folder when the folder holds
nothing else, the file for a one-file series, and ``<folder>#series=<SeriesInstanceUID>`` otherwise;
:func:`series_files` turns any of them back into the slice files.

Reasons this layout adds to the readers' (:data:`medclip.io.dicom.REASONS`):

* ``modality``: the series (or NIfTI) modality is not in ``modalities``;
* ``series_mixed``: one folder holds several series of accepted modality; the one with most files is kept (ties: the
  smaller SeriesInstanceUID) and the others are rejected, since a folder is meant to hold one volume;
* ``series_split``: one SeriesInstanceUID spread over several folders with different slices; every part is rejected
  (identical copies are left to the manifest, which keeps the first and rejects the rest as ``duplicate_sop``);
* ``no_metadata``: a NIfTI whose folder has an ``index.csv`` that does not list it.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import nibabel as nib
from tqdm.auto import tqdm

from medclip.errors import InputError
from medclip.ingest.archive import (
    LAYOUTS,
    SIDECAR_NAMES,
    SIDECAR_SUFFIXES,
    ArchiveScan,
    add_reports,
    chunked,
    current_executor,
    find_column,
    reject,
    run_records,
    walk_files,
)
from medclip.io.demographics import age_band, clean_name, normalise_sex
from medclip.io.dicom import ReadError, read_header
from medclip.io.tables import read_csv
from medclip.io.volumes import SERIES_TAG, is_nifti

logger = logging.getLogger(__name__)

__all__ = ["NIFTI_INDEX", "scan_dicom_ct"]

NIFTI_INDEX = "index.csv"  # per-folder NIfTI metadata: file, patient_id, study_id, accession (see scan_dicom_ct)
ASSUMED_MODALITY = "CT"  # a NIfTI carries no modality; the index may say otherwise in a "modality" column
_INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "file": ("file", "filename", "file_name", "path", "image", "image_path", "nifti", "volume"),
    "patient_id": ("patient_id", "patientid", "patient", "subject_id", "subject", "mrn"),
    "study_uid": ("study_id", "study_uid", "studyinstanceuid", "study_instance_uid", "study"),
    "accession": ("accession", "accession_number", "accessionnumber"),
    "series_uid": ("series_uid", "seriesinstanceuid", "series_instance_uid", "series_id"),
    "modality": ("modality",),
    "study_date": ("study_date", "studydate"),
    # optional subgroup columns (medclip.io.demographics); an age becomes its band at once
    "sex": ("sex", "patient_sex", "gender"),
    "age": ("age_band", "age", "patient_age", "patientage"),
    "manufacturer": ("manufacturer", "vendor"),
    "site": ("site", "institution", "institution_name", "institutionname"),
}


def _nifti_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


# ---------------------------------------------------------------------------------------------- DICOM series


@dataclass
class _Series:
    """The readable DICOM files of one folder with one SeriesInstanceUID ("" when the header has none)."""

    folder: Path
    uid: str
    files: list[Path] = field(default_factory=list)
    sops: set[str] = field(default_factory=set)
    facts: dict = field(default_factory=dict)  # header facts of the first file (sorted by name)
    path: str = ""  # image_path / reject path, set once the whole folder is known

    def add(self, path: Path, facts: dict) -> None:
        if not self.files:
            self.facts = facts
        self.files.append(path)
        self.sops.add(facts.get("sop_uid") or str(path))


def _name_series(series: list[_Series], files_per_folder: dict[Path, int]) -> None:
    """Set each series' ``path``: the folder if it holds only this series, the file if one, else folder#series=."""
    for s in series:
        if files_per_folder[s.folder] == len(s.files):
            s.path = str(s.folder)
        elif len(s.files) == 1:
            s.path = str(s.files[0])
        else:
            s.path = f"{s.folder}{SERIES_TAG}{s.uid}"


def _select_series(series: list[_Series], scan: ArchiveScan, modalities: tuple[str, ...] | None) -> list[_Series]:
    """Reject split series, other modalities and the extra series of mixed folders; return the rest."""
    by_uid: dict[str, list[_Series]] = defaultdict(list)
    for s in series:
        if s.uid:
            by_uid[s.uid].append(s)
    split = {uid for uid, parts in by_uid.items() if len(parts) > 1 and any(p.sops != parts[0].sops for p in parts)}
    candidates: dict[Path, list[_Series]] = defaultdict(list)
    for s in series:
        modality = s.facts.get("modality")
        if s.uid in split:
            where = ", ".join(str(p.folder) for p in by_uid[s.uid])
            detail = f"{s.path}: series {s.uid} is spread over several folders ({where}); move its slices into one"
            scan.rejects.append(reject(s.path, "series_split", detail))
        elif modalities and modality not in modalities:
            detail = f"{s.path}: modality {modality} is not one of {tuple(modalities)}"
            scan.rejects.append(reject(s.path, "modality", detail))
        else:
            candidates[s.folder].append(s)
    kept = []
    for group in candidates.values():
        group.sort(key=lambda s: (-len(s.files), s.uid))
        kept.append(group[0])
        for extra in group[1:]:
            detail = (
                f"{extra.path}: folder {extra.folder} also holds series {group[0].uid} ({len(group[0].files)} "
                f"files), kept as its volume; put each series in its own folder"
            )
            scan.rejects.append(reject(extra.path, "series_mixed", detail))
    return kept


def _series_record(s: _Series, verify: bool) -> dict:
    """The manifest facts of a series; with ``verify`` the whole volume is loaded once. Raises ReadError."""
    from medclip.io.volumes import load_series

    if verify:
        slices, rows, cols = load_series(s.files)[0].shape
    else:
        slices, rows, cols = len(s.files), s.facts.get("rows"), s.facts.get("columns")
    return s.facts | {
        "series_uid": s.uid or None,
        "sop_uid": s.uid or s.path,  # one row per series: the series is the unit a duplicate check compares
        "view": None,
        "rows": rows,
        "columns": cols,
        "slices": slices,
        "image_path": s.path,
    }


# ---------------------------------------------------------------------------------------------- NIfTI


def _read_index(folder: Path) -> dict[str, dict] | None:
    """``folder/index.csv`` -> {file name: {patient_id, study_uid, accession, ...}}; None when there is none."""
    path = folder / NIFTI_INDEX
    if not path.is_file():
        return None
    df = read_csv(path, dtype=object, keep_default_na=False)
    columns = {role: find_column(list(df.columns), names) for role, names in _INDEX_COLUMNS.items()}
    if columns["file"] is None or columns["patient_id"] is None:
        raise InputError(
            f"{path}: a NIfTI index needs a file column ({', '.join(_INDEX_COLUMNS['file'])}) and a patient column "
            f"({', '.join(_INDEX_COLUMNS['patient_id'])}); it has {list(df.columns)}. Fix or remove it."
        )
    index: dict[str, dict] = {}
    for row in df.to_dict("records"):
        name = Path(str(row[columns["file"]]).strip()).name  # relative to the archive or to the index: match by name
        facts = {role: (str(row[col]).strip() or None) for role, col in columns.items() if col and role != "file"}
        if name in index:
            logger.warning("%s: %s is listed twice; using the first row", path, name)
            continue
        index[name] = facts
    return index


def _nifti_shape(path: Path) -> tuple[int, int, int]:
    """(slices, rows, columns) after load_volume's reorientation to L-P-S, from the header only. Raises ReadError."""
    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
        ornt = nib.orientations.io_orientation(img.affine)
    except Exception as exc:  # nibabel raises ImageFileError, OSError, ValueError... on bad files
        raise ReadError("unreadable", f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc}).") from exc
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise ReadError("series_shape", f"{path}: image has shape {shape}; a CT volume must be 3-D.")
    size = {int(ornt[i, 0]): shape[i] for i in range(3)}  # world axis (0 x, 1 y, 2 z) -> voxels along it
    return size[2], size[1], size[0]


def _nifti_record(path: Path, root: Path, facts: dict | None, verify: bool) -> dict:
    """The manifest facts of one NIfTI volume. Raises ReadError."""
    from medclip.io.volumes import load_volume

    slices, rows, cols = load_volume(path)[0].shape if verify else _nifti_shape(path)
    if facts is None:  # no index.csv: the file is its own patient and study
        stem = _nifti_stem(path)
        facts = {"patient_id": stem, "study_uid": stem, "accession": stem}
    rel = path.relative_to(root).as_posix()
    return {
        "patient_id": facts.get("patient_id"),
        "study_uid": facts.get("study_uid") or facts.get("accession") or _nifti_stem(path),
        "series_uid": facts.get("series_uid"),
        "sop_uid": facts.get("series_uid") or rel,
        "accession": facts.get("accession"),
        "modality": (facts.get("modality") or ASSUMED_MODALITY).upper(),
        "view": None,
        "rows": int(rows),
        "columns": int(cols),
        "slices": int(slices),
        "study_date": facts.get("study_date"),
        "sex": normalise_sex(facts.get("sex")),
        "age_band": age_band(facts.get("age")),
        "manufacturer": clean_name(facts.get("manufacturer")),
        "site": clean_name(facts.get("site")),
        "image_path": str(path),
    }


def _add_nifti(
    scan: ArchiveScan,
    jobs: list[tuple[object, partial]],
    path: Path,
    root: Path,
    indexes: dict,
    modalities: tuple[str, ...] | None,
    verify: bool,
) -> None:
    if path.parent not in indexes:
        indexes[path.parent] = _read_index(path.parent)
    index = indexes[path.parent]
    facts = None if index is None else index.get(path.name)
    if index is not None and facts is None:
        detail = f"{path}: not listed in {path.parent / NIFTI_INDEX}; add a row (file, patient_id, study_id)"
        scan.rejects.append(reject(path, "no_metadata", detail))
        return
    modality = ((facts or {}).get("modality") or ASSUMED_MODALITY).upper()
    if modalities and modality not in modalities:
        scan.rejects.append(reject(path, "modality", f"{path}: modality {modality} is not one of {tuple(modalities)}"))
        return
    jobs.append((path, partial(_nifti_record, path, root, facts, verify)))


def _record(job: tuple[object, partial]) -> tuple[dict | None, tuple[str, str] | None]:
    """``(record, None)`` for a ``(reject path, record function)`` job, or ``(None, (reason, detail))``."""
    try:
        return job[1](), None
    except ReadError as exc:
        return None, (exc.reason, exc.detail)


def _records(jobs: list[tuple[object, partial]], workers: int, show_progress: bool):
    """``_record`` of every job, in order; with ``workers`` > 1 in worker processes (verification loads each whole
    volume once: CPU-bound decoding)."""
    bar = {"total": len(jobs), "desc": "volumes", "unit": "volume", "disable": not show_progress, "leave": False}
    executor = current_executor()
    if executor is not None:  # the manifest's executor (worker processes, a Dask cluster): a few volumes a task
        with tqdm(**bar) as progress:
            for part in executor.map(run_records, chunked([job[1] for job in jobs], 4)):
                progress.update(len(part))
                yield from part
        return
    if workers <= 1 or len(jobs) < 2 * workers:
        yield from tqdm(map(_record, jobs), **bar)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from tqdm(pool.map(_record, jobs, chunksize=4), **bar)


# ---------------------------------------------------------------------------------------------- layout


@LAYOUTS.register("dicom-ct")
def scan_dicom_ct(
    root: Path,
    *,
    modalities: tuple[str, ...] | None = None,
    verify_pixels: bool = True,
    show_progress: bool = True,
    reports: Path | None = None,
    workers: int | None = None,
) -> ArchiveScan:
    """CT series folders (any nesting) and NIfTI volumes -> one image record per volume (see the module docstring).

    Series facts come from the DICOM headers (the first file by name), the subgroup facts (sex, age band,
    manufacturer, site) too. A NIfTI takes patient_id, study_id (study uid), accession (and optional series_uid,
    modality, study_date, sex, age, manufacturer, site) from an ``index.csv`` in its own folder, matched
    by file name; without an index the file stem is patient, study and accession, so a plain NIfTI collection works
    (one patient per file: give an index when a patient has several volumes, or splits may leak). A NIfTI's modality
    is ``CT`` unless the index says otherwise.

    Args:
        root: the archive folder.
        modalities: keep only series of these modalities (e.g. ``("CT",)``); None keeps all, like ``dicom``.
        verify_pixels: load every kept volume once (:func:`~medclip.io.volumes.load_series` /
            :func:`~medclip.io.volumes.load_volume`), so missing/duplicate slices, inconsistent shapes and corrupt
            pixels are rejected with the reader's reason here rather than in a training run.
        show_progress: tqdm bars.
        reports: extra reports, a CSV/JSONL table or a folder of ``<key>.txt`` (see
            :func:`medclip.ingest.archive.add_reports`).
        workers: processes that verify volumes (default: every CPU); results do not depend on it.

    Returns:
        The scan; ``scan.inputs`` = series + NIfTI files + unreadable files = kept volumes + image rejects.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"dicom-ct layout needs a folder, got {root}")
    scan = ArchiveScan(inputs=0)
    series: dict[tuple[Path, str], _Series] = {}
    files_per_folder: dict[Path, int] = defaultdict(int)
    niftis: list[Path] = []
    for path in tqdm(walk_files(root), desc="scan", unit="file", disable=not show_progress, leave=False):
        files_per_folder[path.parent] += 1
        suffix, lname = path.suffix.lower(), path.name.lower()
        if suffix == ".txt" and lname not in SIDECAR_NAMES:
            scan.add_report(path.stem, path)
        elif is_nifti(path) and not path.is_dir():
            niftis.append(path)
        elif suffix in SIDECAR_SUFFIXES or lname in SIDECAR_NAMES:
            scan.skipped += 1
        else:
            try:
                facts = read_header(path)
            except ReadError as exc:
                scan.rejects.append(reject(path, exc.reason, exc.detail))
                scan.inputs += 1
                continue
            uid = facts.get("series_uid") or ""
            series.setdefault((path.parent, uid), _Series(path.parent, uid)).add(path, facts)
    _name_series(list(series.values()), files_per_folder)
    scan.inputs += len(series) + len(niftis)
    kept = _select_series(list(series.values()), scan, modalities)
    jobs = [(s.path, partial(_series_record, s, verify_pixels)) for s in kept]  # (reject path, record function)
    indexes: dict[Path, dict | None] = {}
    for path in niftis:
        _add_nifti(scan, jobs, path, root, indexes, modalities, verify_pixels)
    workers = (workers or os.cpu_count() or 1) if verify_pixels else 1
    for (path, _), (record, failure) in zip(jobs, _records(jobs, workers, show_progress), strict=True):
        if failure is None:
            scan.images.append(record)
        else:
            scan.rejects.append(reject(path, *failure))
    if reports is not None:
        add_reports(scan, Path(reports))
    logger.info(
        "dicom-ct %s: %d inputs (%d series, %d NIfTI), %d kept, %d rejected",
        root,
        scan.inputs,
        len(series),
        len(niftis),
        len(scan.images),
        sum(r["kind"] == "image" for r in scan.rejects),
    )
    return scan
