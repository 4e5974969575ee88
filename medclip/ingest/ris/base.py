"""Types and rules shared by the RIS readers: the report record, version resolution, times, sectioned text.

Nothing here imports :mod:`medclip.ingest.archive` (which imports this package to read ``--reports``).

A reader turns each input (an SR file, an HL7 ORU result, a FHIR DiagnosticReport) into one :class:`Candidate` or
one reject; :func:`resolve` then keeps the one current version per study key and rejects the others, so that
``inputs == len(reports) + len(rejects)`` holds for every source.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medclip.ingest.rejects import reject
from medclip.reports.headers import HEADER_OF, WEAK_HEADERS
from medclip.reports.sections import SECTION_NAMES

# Report statuses a kept report may have, and the one a reader gives a cancelled / entered-in-error input.
STATUSES = ("final", "preliminary", "corrected", "amended")
CANCELLED = "cancelled"

# Coded section names -> sections. DCM codes are SR concept names (TID 2000 Basic Diagnostic Imaging Report);
# LOINC codes are the report sections of HL7 OBX-3 and of LOINC-coded SR containers. "_other" (recommendations)
# ends a section but belongs to none.
CODED_SECTIONS: dict[str, str] = {
    "121070": "findings",  # Findings
    "121071": "findings",  # Finding
    "121072": "impression",  # Impressions
    "121073": "impression",  # Impression
    "121076": "impression",  # Conclusions
    "121077": "impression",  # Conclusion
    "121111": "impression",  # Summary
    "121060": "history",  # History
    "121062": "indication",  # Request
    "121109": "indication",  # Indications for Procedure
    "121064": "technique",  # Current Procedure Descriptions
    "121065": "technique",  # Procedure Description
    "121066": "comparison",  # Prior Procedure Descriptions
    "121068": "comparison",  # Previous Findings
    "121058": "examination",  # Procedure reported
    "121078": "addendum",  # Addendum
    "121074": "_other",  # Recommendations
    "121075": "_other",  # Recommendation
    "18782-3": "findings",  # Radiology Study observation (narrative)
    "59776-5": "findings",  # Procedure findings
    "19005-8": "impression",  # Radiology Imaging study [Impression] (narrative)
    "55752-0": "history",  # Clinical information
    "11329-0": "history",  # History general
    "18834-2": "comparison",  # Radiology Comparison study (narrative)
    "18785-6": "indication",  # Radiology Reason for study
}
# Suffixes of local OBX-3 codes that some RIS send ("CXR&IMP"): impression, addendum. "&GDT" (general data text) is
# the report body, which often holds every section under its own headers: it gets no section, so the manifest's
# section parser reads it whole.
_SUFFIX_SECTIONS = {"IMP": "impression", "ADT": "addendum", "ADD": "addendum"}

_UID_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)+$")


@dataclass(frozen=True)
class RisReport:
    """One report read from a RIS source.

    ``id`` is path-like ("msgs/a.hl7#message=3", "export.ndjson#line=7", the SR file's path) and never carries a
    value from the content. ``sections`` is set only when the source keeps sections apart (SR containers, coded
    OBX results); otherwise the manifest parses ``text``. ``issued`` is an ISO-8601 string (UTC when the source gave
    an offset) that sorts in time order. ``identifiers`` are (kind, raw value) pairs for exact-match scrubbing: in
    memory only, never to be written anywhere.
    """

    id: str
    accession: str | None
    study_uid: str | None
    sections: dict[str, str | None] | None
    text: str
    status: str
    issued: str | None
    encoding: str
    identifiers: frozenset[tuple[str, str]] = frozenset()


@dataclass
class RisRead:
    """What a RIS source held: kept reports (input order), rejects, and how many report inputs it saw."""

    reports: list[RisReport] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    inputs: int = 0


@dataclass
class Candidate:
    """A report version before :func:`resolve`; ``order`` sorts versions of one study oldest first."""

    report: RisReport
    order: tuple = ()


def section_of(code: object = None, meaning: object = None) -> str | None:
    """A coded concept (a DCM / LOINC code, "CODE&GDT", or a code meaning such as "Impression") -> a section name
    of :data:`SECTION_NAMES`, "_other", or None when it names no section."""
    code = str(code or "").strip()
    if code in CODED_SECTIONS:
        return CODED_SECTIONS[code]
    suffix = code.rpartition("&")[2].upper() if "&" in code else ""
    if suffix in _SUFFIX_SECTIONS:
        return _SUFFIX_SECTIONS[suffix]
    words = " ".join(re.sub(r"[^a-z ]", " ", str(meaning or "").lower()).split())
    # Weak headers ("Report", "Study", "Exam") name a whole report as often as a section: no section.
    return None if words in WEAK_HEADERS else HEADER_OF.get(words)


def report_reject(path: Path | str, reason: str, detail: str) -> dict:
    """A reject of a report input; ``detail`` must name no report text and no identifier."""
    return reject(path, reason, detail, kind="report")


def clean_uid(value: object) -> str | None:
    """A DICOM UID ("1.2.840...", also from "urn:oid:1.2...") or None when ``value`` is not one."""
    text = str(value or "").strip().removeprefix("urn:oid:").strip()
    return text if len(text) <= 64 and _UID_RE.match(text) else None


def clean_key(value: object) -> str | None:
    """An accession number as text (surrounding blanks dropped), or None when empty."""
    text = str(value or "").strip()
    return text or None


_COMPACT_RE = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?(?:\.(?P<f>\d{1,6}))?"
    r"(?P<tz>[+-]\d{4})?$"
)
_ISO_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})(?:[T ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})"
    r"(?:\.(?P<f>\d{1,9}))?)?)?)?)?(?P<tz>Z|[+-]\d{2}:?\d{2})?$"
)


def sortable_time(value: object) -> str | None:
    """An HL7 TS / DICOM DT ("20200102030405.12+0100"), a DICOM DA+TM pair joined, or an ISO / FHIR instant ->
    "YYYY-MM-DDTHH:MM:SS.ffffff" (converted to UTC when an offset is given), or None when it is not a time.

    Missing parts count as their smallest value, so a date alone sorts before any time of that day.
    """
    text = str(value or "").strip()
    m = _COMPACT_RE.match(text) or _ISO_RE.match(text)
    if m is None:
        return None
    parts = m.groupdict()
    try:
        when = dt.datetime(
            int(parts["y"]),
            int(parts["mo"] or 1),
            int(parts["d"] or 1),
            int(parts["h"] or 0),
            int(parts["mi"] or 0),
            min(int(parts["s"] or 0), 59),  # a leap second sorts as :59
            int((parts["f"] or "0")[:6].ljust(6, "0")),
        )
    except ValueError:
        return None
    tz = parts["tz"]
    if tz:
        if tz == "Z":
            offset = dt.timedelta(0)
        else:
            digits = tz[1:].replace(":", "")
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            offset = -offset if tz[0] == "-" else offset
        when -= offset
    return when.isoformat(timespec="microseconds")


def assemble(pieces: Iterable[tuple[str | None, str]]) -> tuple[dict[str, str | None] | None, str]:
    """Ordered (section or None, text) pieces -> (sections, full text).

    When every piece has a known section, the sections are the source's own split (all :data:`SECTION_NAMES`
    keys, None where absent) and the text is "FINDINGS: ...\\nIMPRESSION: ...". When some text has no section,
    ``sections`` is None and the text keeps the pieces in order, each known section under its header, so that the
    manifest's section parser sees the whole report and nothing is dropped. Pieces of an unknown section (a
    recommendation, a call-back note) are kept in the text but in no section.
    """
    pieces = [(name, " ".join(text.split()) if name else text.strip()) for name, text in pieces]
    pieces = [(name, text) for name, text in pieces if text]
    if not pieces:
        return None, ""
    if all(name in SECTION_NAMES for name, _ in pieces):
        joined: dict[str, list[str]] = {}
        for name, text in pieces:
            joined.setdefault(name, []).append(text)
        sections = {name: " ".join(joined[name]) if name in joined else None for name in SECTION_NAMES}
        return sections, "\n".join(f"{name.upper()}: {body}" for name, body in sections.items() if body)
    lines = []
    for name, text in pieces:
        lines.append(f"{name.upper()}: {text}" if name in SECTION_NAMES else text)
    return None, "\n".join(lines)


def _study_key(report: RisReport) -> str:
    # Accession first: one order is one report; a study uid may hold several orders (and their reports).
    return f"accession:{report.accession}" if report.accession else f"study:{report.study_uid}"


def resolve(candidates: Sequence[Candidate], *, inputs: int, rejects: Sequence[dict] = ()) -> RisRead:
    """Keep the current version of each study's report; reject the others.

    Versions of one study (same accession, else same study uid) are ordered by ``Candidate.order``. When the latest
    is cancelled (entered in error, withdrawn), the report is gone: it is ``cancelled_report`` and every earlier
    version ``superseded_report``. Otherwise the latest version that is not preliminary wins (a preliminary one only
    when there is nothing else), an earlier cancelled one is ``cancelled_report`` and all others are
    ``superseded_report``. Every candidate must have an accession or a study uid (the readers reject those without).
    """
    out = RisRead(rejects=list(rejects), inputs=inputs)
    groups: dict[str, list[tuple[int, Candidate]]] = {}
    for position, cand in enumerate(candidates):
        groups.setdefault(_study_key(cand.report), []).append((position, cand))
    kept: list[tuple[int, RisReport]] = []
    for versions in groups.values():
        versions.sort(key=lambda pc: (pc[1].order, pc[0]))
        latest = versions[-1][1]
        if latest.report.status == CANCELLED:
            winner = None
        else:
            live = [pc for pc in versions if pc[1].report.status != CANCELLED]
            winner = max(live, key=lambda pc: (pc[1].report.status != "preliminary", pc[1].order, pc[0]))[1]
        for position, cand in versions:
            if cand is winner:
                kept.append((position, cand.report))
            elif cand.report.status == CANCELLED:
                out.rejects.append(report_reject(cand.report.id, "cancelled_report", f"{cand.report.id}: cancelled"))
            else:
                by = latest if winner is None else winner
                why = "cancelled by a later version" if winner is None else "replaced by a later version"
                out.rejects.append(
                    report_reject(cand.report.id, "superseded_report", f"{cand.report.id}: {why} ({by.report.id})")
                )
    out.reports = [report for _, report in sorted(kept, key=lambda pr: pr[0])]
    return out
