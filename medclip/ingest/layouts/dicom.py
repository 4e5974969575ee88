"""The ``dicom`` archive layout: any nesting of DICOM files, with reports as ``.txt`` files or a report table."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from medclip.deid.identifiers import dataset_identifiers
from medclip.executors import LocalExecutor
from medclip.ingest.archive import (
    LAYOUTS,
    RECORD_CHUNK,
    SIDECAR_NAMES,
    SIDECAR_SUFFIXES,
    ArchiveScan,
    InlineReport,
    add_reports,
    chunked,
    current_executor,
    register_report,
    reject,
    walk_files,
)
from medclip.ingest.ris import read_sr_files
from medclip.ingest.ris.sr import is_sr
from medclip.io.dicom import ReadError, header_facts, load_image, read_dataset


@LAYOUTS.register("dicom")
def scan_dicom(
    root: Path,
    *,
    modalities: tuple[str, ...] | None = None,
    verify_pixels: bool = True,
    show_progress: bool = True,
    reports: Path | None = None,
) -> ArchiveScan:
    """Any nesting of DICOM files; ``.txt`` files named by AccessionNumber or StudyInstanceUID are reports.

    With ``verify_pixels`` every image is decoded once, so a corrupt pixel stream is rejected here rather than
    failing a training run hours later. ``reports`` adds a CSV/JSONL table (study key + text) or a folder of
    ``.txt`` files (see :func:`medclip.ingest.layouts.public.add_reports`).
    """
    if not Path(root).is_dir():
        raise NotADirectoryError(f"dicom layout needs a folder, got {root}")
    scan = ArchiveScan(inputs=0)
    dicoms: list[Path] = []
    for path in walk_files(root):
        suffix, lname = path.suffix.lower(), path.name.lower()
        if suffix == ".txt" and lname not in SIDECAR_NAMES:
            scan.add_report(path.stem, path)
        elif suffix in SIDECAR_SUFFIXES or lname in SIDECAR_NAMES:
            scan.skipped += 1
        else:
            dicoms.append(path)
    # Header reads and pixel checks run on the manifest's executor (worker processes, a Dask cluster), in chunks;
    # outcomes come back in file order, so the scan is the same wherever they ran.
    executor = current_executor() or LocalExecutor(1)
    chunks = [(chunk, modalities, verify_pixels) for chunk in chunked(dicoms, RECORD_CHUNK)]
    sr_files: list[Path] = []
    done = 0
    with tqdm(total=len(dicoms), desc="scan", unit="file", disable=not show_progress, leave=False) as bar:
        for outcomes in executor.map(read_dicom_files, chunks):
            for path, (kind, value) in zip(dicoms[done : done + len(outcomes)], outcomes, strict=True):
                if kind == "sr":  # a structured report among the images: a report input, read below
                    sr_files.append(path)
                    continue
                scan.inputs += 1
                if kind == "image":
                    scan.images.append(value)
                else:
                    scan.rejects.append(reject(path, *value))
            done += len(outcomes)
            bar.update(len(outcomes))
    if sr_files:
        read = read_sr_files(sr_files)
        scan.rejects += read.rejects
        for r in read.reports:
            report = InlineReport(r.id, r.text, r.encoding, r.sections, r.identifiers)
            register_report(scan, (r.accession, r.study_uid), report)
    if reports is not None:
        add_reports(scan, Path(reports))
    return scan


def read_dicom_files(task: tuple[list[Path], tuple[str, ...] | None, bool]) -> list[tuple[str, object]]:
    """One chunk of the scan (an executor task): per file ``("image", header facts)``, ``("sr", None)`` or
    ``("reject", (reason, detail))``. Never raises on a bad file."""
    paths, modalities, verify_pixels = task
    out: list[tuple[str, object]] = []
    for path in paths:
        try:
            ds = read_dataset(path, stop_before_pixels=True)
            if is_sr(ds):
                out.append(("sr", None))
                continue
            header = header_facts(ds)
            # names and ids of the header, in memory only: scrubbed from the study's report when de-identifying
            header["identifiers"] = dataset_identifiers(ds)
            if verify_pixels and (not modalities or header.get("modality") in modalities):
                load_image(path)
        except ReadError as exc:
            out.append(("reject", (exc.reason, exc.detail)))
            continue
        if modalities and header.get("modality") not in modalities:
            out.append(
                ("reject", ("modality", f"{path}: modality {header.get('modality')} is not one of {modalities}"))
            )
            continue
        header["image_path"] = str(path)
        out.append(("image", header))
    return out
