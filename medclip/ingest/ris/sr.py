"""DICOM Structured Reports (Basic Text, Enhanced, Comprehensive, Comprehensive 3D, Extensible) -> report versions.

The content tree is walked with pydicom rather than highdicom: ``highdicom.sr.srread`` supports only Enhanced /
Comprehensive / Comprehensive 3D SR (not Basic Text SR, the most common report SR) and its ``from_dataset``
validates templates that real reports often bend (missing Content Template Sequence, unusual relationships). A
plain walk over ``ContentSequence`` reads all of them the same way; highdicom writes the SRs of the tests.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.charset import convert_encodings

from medclip.deid.identifiers import dataset_identifiers
from medclip.ingest.ris.base import (
    Candidate,
    RisReport,
    assemble,
    clean_key,
    clean_uid,
    report_reject,
    section_of,
    sortable_time,
)

logger = logging.getLogger(__name__)

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"


def is_sr(ds) -> bool:
    """A structured report (not a key object selection): a report among images, not an image input."""
    sop = str(ds.get("SOPClassUID", "") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", ""))
    if sop == KEY_OBJECT_SELECTION:
        return False
    return sop.startswith(SR_PREFIX) or str(ds.get("Modality", "")).strip().upper() == "SR"


ENCAPSULATED_PREFIX = "1.2.840.10008.5.1.4.1.1.104."  # encapsulated PDF / CDA / STL ...
# Relationships whose items describe the observer or acquisition, not the report's content.
_CONTEXT_RELATIONSHIPS = {"HAS OBS CONTEXT", "HAS ACQ CONTEXT", "HAS CONCEPT MOD"}
_MAX_DEPTH = 64  # deeper trees are malformed (or cyclic by reference); the rest of the tree is still read


def _identifiers(ds: Dataset) -> frozenset[tuple[str, str]]:
    return frozenset(dataset_identifiers(ds)) | _content_identifiers(ds)


def _content_identifiers(ds: Dataset) -> frozenset[tuple[str, str]]:
    """PNAME and DATE / DATETIME content items (observer names, dates of prior studies)."""
    found = set()
    for item, _ in _items(ds):
        value_type = item.get("ValueType", "")
        if value_type == "PNAME" and item.get("PersonName"):
            found.add(("name", str(item.PersonName)))
        elif value_type in ("DATE", "DATETIME"):
            value = item.get("Date") or item.get("DateTime")
            if value:
                found.add(("date", str(value)))
    return frozenset(found)


def _items(ds: Dataset, depth: int = 0, section: str | None = None) -> Iterator[tuple[Dataset, str | None]]:
    """Content items depth first, each with the section it falls in (its own concept name, else its parent's)."""
    if depth > _MAX_DEPTH:
        logger.debug("SR content deeper than %d levels; not read further", _MAX_DEPTH)
        return
    for item in ds.get("ContentSequence") or []:
        if item.get("RelationshipType", "") in _CONTEXT_RELATIONSHIPS:
            yield item, None
            continue
        name = _concept(item.get("ConceptNameCodeSequence"))
        own = section_of(*name) if name else None
        here = own or section
        yield item, here
        yield from _items(item, depth + 1, here)


def _concept(seq) -> tuple[str, str] | None:
    """(code value, code meaning) of a code sequence's first item, or None."""
    if not seq:
        return None
    code = seq[0]
    return str(code.get("CodeValue") or code.get("LongCodeValue") or ""), str(code.get("CodeMeaning") or "")


def _value_text(item: Dataset) -> str | None:
    """The readable value of a TEXT / CODE / NUM item ("Diameter: 4 mm"), else None."""
    value_type = item.get("ValueType", "")
    name = _concept(item.get("ConceptNameCodeSequence"))
    label = name[1] if name else ""
    if value_type == "TEXT":
        return str(item.get("TextValue") or "") or None
    if value_type == "CODE":
        meaning = _concept(item.get("ConceptCodeSequence"))
        if not meaning or not meaning[1]:
            return None
        # Coded findings read as "Finding: Pneumothorax."; a section name as label adds nothing.
        return f"{label}: {meaning[1]}." if label and section_of(*name) is None else f"{meaning[1]}."
    if value_type == "NUM":
        measured = item.get("MeasuredValueSequence")
        if not measured or measured[0].get("NumericValue") is None:
            return None
        units = _concept(measured[0].get("MeasurementUnitsCodeSequence"))
        unit = units[0] if units and units[0] not in ("1", "") else ""
        return f"{label}: {measured[0].NumericValue} {unit}".strip() + "."
    return None


def content_pieces(ds: Dataset) -> list[tuple[str | None, str]]:
    """The SR content tree -> ordered (section, text) pieces (see :func:`medclip.ingest.ris.base.assemble`)."""
    pieces = []
    for item, section in _items(ds):
        if item.get("RelationshipType", "") in _CONTEXT_RELATIONSHIPS:
            continue
        text = _value_text(item)
        if text:
            pieces.append((section, text))
    return pieces


def _status(ds: Dataset) -> str:
    if str(ds.get("PreliminaryFlag", "")).upper() == "PRELIMINARY":
        return "preliminary"
    if str(ds.get("CompletionFlag", "")).upper() == "PARTIAL":
        return "preliminary"
    if str(ds.get("VerificationFlag", "")).upper() == "UNVERIFIED":
        return "preliminary"
    return "amended" if ds.get("PredecessorDocumentsSequence") else "final"


def _study_uid(ds: Dataset) -> str | None:
    """The study the report describes: a referenced request's or the current evidence's study, else the SR's own."""
    own = clean_uid(ds.get("StudyInstanceUID"))
    referenced = [clean_uid(r.get("StudyInstanceUID")) for r in ds.get("ReferencedRequestSequence") or []]
    referenced += [
        clean_uid(r.get("StudyInstanceUID")) for r in ds.get("CurrentRequestedProcedureEvidenceSequence") or []
    ]
    referenced = [uid for uid in referenced if uid]
    if own in referenced or not referenced:
        return own
    return referenced[0]


def _accession(ds: Dataset) -> str | None:
    own = clean_key(ds.get("AccessionNumber"))
    if own:
        return own
    return next(
        (
            clean_key(r.get("AccessionNumber"))
            for r in ds.get("ReferencedRequestSequence") or []
            if r.get("AccessionNumber")
        ),
        None,
    )


def _encoding(ds: Dataset) -> str:
    charset = ds.get("SpecificCharacterSet")
    if not charset:
        return "ascii"  # the DICOM default repertoire
    try:
        names = convert_encodings([charset] if isinstance(charset, str) else list(charset))
    except LookupError:
        return "unknown"
    return "+".join(dict.fromkeys(codecs.lookup(n).name for n in names))


def read_sr_file(path: Path, position: int = 0) -> Candidate | dict:
    """One SR file -> a :class:`Candidate`, or a reject dict (never raises on bad data)."""
    try:
        ds = pydicom.dcmread(path)
    # pydicom raises many types on a corrupt file (struct.error, NotImplementedError, ...): one file is one input.
    except Exception as exc:
        return report_reject(path, "malformed_report", f"{path}: not a readable DICOM file ({type(exc).__name__})")
    sop = str(ds.get("SOPClassUID", ""))
    if not sop and "Modality" not in ds:
        return report_reject(path, "malformed_report", f"{path}: a DICOM file without SOP Class UID or Modality")
    if sop.startswith(ENCAPSULATED_PREFIX) or "EncapsulatedDocument" in ds:
        return report_reject(path, "report_binary", f"{path}: an encapsulated document (PDF/CDA), no report text")
    if sop == KEY_OBJECT_SELECTION or not (sop.startswith(SR_PREFIX) or ds.get("Modality") == "SR"):
        what = "a key object selection" if sop == KEY_OBJECT_SELECTION else f"modality {ds.get('Modality', '?')}"
        return report_reject(path, "not_a_report", f"{path}: a DICOM file that is not a structured report ({what})")
    try:
        sections, text = assemble(content_pieces(ds))
        accession, study_uid = _accession(ds), _study_uid(ds)
        identifiers = _identifiers(ds)
        issued = sortable_time(f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}") or sortable_time(
            f"{ds.get('InstanceCreationDate', '')}{ds.get('InstanceCreationTime', '')}"
        )
        status = _status(ds)
    except Exception as exc:  # odd element values deep inside the tree: reject this file, read the others
        return report_reject(path, "malformed_report", f"{path}: unreadable SR content ({type(exc).__name__})")
    if not accession and not study_uid:
        return report_reject(path, "malformed_report", f"{path}: no accession number or study instance uid")
    report = RisReport(
        id=str(path),
        accession=accession,
        study_uid=study_uid,
        sections=sections,
        text=text,
        status=status,
        issued=issued,
        encoding=_encoding(ds),
        identifiers=identifiers,
    )
    return Candidate(report, (issued or "", position))
