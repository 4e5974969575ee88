"""Reports where hospitals keep them: DICOM SR files, HL7 v2 ORU messages, FHIR DiagnosticReport JSON / NDJSON.

``detect(path)`` says which of these a ``--reports`` path is (None for today's CSV / JSONL / text folder) and
``read_ris(path)`` reads it: every input report (an SR file, an OBR result of an HL7 message, a DiagnosticReport)
ends as exactly one kept :class:`RisReport` or one reject, so ``inputs == len(reports) + len(rejects)``.

Reject reasons: ``malformed_report`` (unparseable, or no accession / study uid), ``superseded_report`` (a later
corrected / amended / final version of the same study replaced it), ``cancelled_report`` (cancelled, entered in
error, withdrawn), ``report_binary`` (only a PDF / image form, no text) and ``not_a_report`` (a DICOM file that is
not an SR, a key object selection, an HL7 message that is not an ORU result).
"""

from __future__ import annotations

import gzip
import logging
import os
from collections import Counter
from pathlib import Path

import pydicom

from medclip.errors import InputError
from medclip.ingest.ris.base import Candidate, RisRead, RisReport, resolve
from medclip.ingest.ris.fhir import FHIR_SUFFIXES, looks_like_fhir, read_fhir_files
from medclip.ingest.ris.hl7v2 import HL7_SUFFIXES, looks_like_hl7, read_hl7_file
from medclip.ingest.ris.sr import ENCAPSULATED_PREFIX, SR_PREFIX, read_sr_file

__all__ = ["RIS_KINDS", "RisRead", "RisReport", "detect", "read_ris", "read_sr_files"]

logger = logging.getLogger(__name__)

RIS_KINDS = ("sr", "hl7", "fhir")
_HEAD_BYTES = 65536  # a pretty-printed FHIR resource may name its resourceType after a long "text" or "meta"
_DETECT_SAMPLE = 64  # files of a folder looked at by detect()


# Files an export carries besides its inputs (as the archive layouts skip them; not imported from there, because
# medclip.ingest.archive imports this package).
_SIDECAR_NAMES = {"readme", "readme.txt", "dicomdir", "license", "license.txt"}
_SIDECAR_SUFFIXES = {".md", ".yaml", ".yml", ".log"}
_SR_SIDECAR_SUFFIXES = _SIDECAR_SUFFIXES | {".csv", ".json", ".xml", ".html", ".pdf", ".parquet", ".txt"}


def _walk(root: Path) -> list[Path]:
    """Every non-hidden file under ``root``, sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(files)


def _head(path: Path) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read(_HEAD_BYTES)
        with open(path, "rb") as f:
            return f.read(_HEAD_BYTES)
    except (OSError, EOFError):
        return b""


def _is_sr(path: Path, head: bytes) -> bool:
    if head[128:132] != b"DICM":
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # any unreadable header: not an SR for detection; read_ris would reject it
        return False
    sop = str(ds.get("SOPClassUID", ""))
    return sop.startswith((SR_PREFIX, ENCAPSULATED_PREFIX)) or ds.get("Modality") == "SR"


def _kind_of(path: Path) -> str | None:
    head = _head(path)
    if _is_sr(path, head):
        return "sr"
    if looks_like_hl7(head):
        return "hl7"
    if looks_like_fhir(head):
        return "fhir"
    return None


def _is_sidecar(path: Path) -> bool:
    return path.name.lower() in _SIDECAR_NAMES or path.suffix.lower() in _SIDECAR_SUFFIXES


def detect(path: Path) -> str | None:
    """ "sr", "hl7" or "fhir" when ``path`` (a file or a folder) is a RIS source, else None.

    A folder is judged by its first files (sorted, sidecars such as README skipped): the most common RIS kind,
    when it is at least half of them; so a folder of plain-text reports is None even if one file looks like HL7.
    """
    path = Path(path)
    if path.is_file():
        return _kind_of(path)
    if not path.is_dir():
        return None
    files = [f for f in _walk(path) if f.is_file() and not _is_sidecar(f)][:_DETECT_SAMPLE]
    kinds = Counter(_kind_of(f) for f in files)
    kinds.pop(None, None)
    if not kinds:
        return None
    kind, count = kinds.most_common(1)[0]
    return kind if 2 * count >= len(files) else None


def _inputs_of(root: Path, kind: str) -> list[Path]:
    """The files of a source that are inputs of ``kind``; the others are skipped (counted in the log)."""
    if root.is_file():
        return [root]
    files = [f for f in _walk(root) if f.is_file() and not _is_sidecar(f)]
    if kind == "sr":
        keep = [f for f in files if f.suffix.lower() not in _SR_SIDECAR_SUFFIXES]
    elif kind == "hl7":
        keep = [f for f in files if f.suffix.lower() in HL7_SUFFIXES or looks_like_hl7(_head(f))]
    elif kind == "fhir":
        keep = [f for f in files if f.name.lower().endswith(FHIR_SUFFIXES)]
    else:
        raise InputError(f"unknown RIS source kind {kind!r}; use one of {', '.join(RIS_KINDS)}")
    if len(keep) < len(files):
        logger.info("%s source: %d files skipped (not %s inputs)", kind, len(files) - len(keep), kind)
    return keep


def _resolved(results: list[Candidate | dict]) -> RisRead:
    """Reader results (candidates and rejects) -> the current versions and every reject (:func:`resolve`)."""
    candidates = [r for r in results if isinstance(r, Candidate)]
    return resolve(candidates, inputs=len(results), rejects=[r for r in results if not isinstance(r, Candidate)])


def read_sr_files(files: list[Path]) -> RisRead:
    """SR files found among images (the ``dicom`` layout): current versions and rejects, as :func:`read_ris`."""
    return _resolved([read_sr_file(f, position) for position, f in enumerate(files)])


def read_ris(path: Path, kind: str | None = None) -> RisRead:
    """Read a RIS source (a file or a folder) into current report versions and rejects.

    Args:
        path: an SR file or folder, an HL7 file or folder of messages, a FHIR JSON / Bundle / NDJSON file or a
            bulk-export folder.
        kind: "sr", "hl7" or "fhir"; None detects it (see :func:`detect`).

    Raises:
        InputError: ``path`` does not exist, is not a RIS source, or ``kind`` is unknown. Bad content never raises:
            it becomes rejects.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"report source {path} does not exist; check the --reports path")
    if kind is None:
        kind = detect(path)
        if kind is None:
            raise InputError(
                f"{path}: not a RIS report source (DICOM SR, HL7 v2 ORU or FHIR DiagnosticReport); "
                "CSV / JSONL tables and folders of text reports are read by the archive layouts"
            )
    if kind not in RIS_KINDS:
        raise InputError(f"unknown RIS source kind {kind!r}; use one of {', '.join(RIS_KINDS)}")
    files = _inputs_of(path, kind)
    results: list[Candidate | dict] = []
    if kind == "sr":
        results = [read_sr_file(f, position) for position, f in enumerate(files)]
    elif kind == "hl7":
        for f in files:
            found, _ = read_hl7_file(f, len(results))
            results += found
    else:
        results, _ = read_fhir_files(files)
    return _resolved(results)
