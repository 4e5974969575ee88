"""De-identification inside a manifest build: the identifiers to scrub from each report, scrubbing its sections,
and keying every header id of a scan (:func:`medclip.ingest.splits.key_record`)."""

from __future__ import annotations

from collections import Counter

from medclip.deid.identifiers import KnownIdentifiers
from medclip.deid.text import TextScrubber
from medclip.ingest.archive import ArchiveScan, InlineReport
from medclip.ingest.sources.redact import Redactor
from medclip.ingest.splits import key_record, study_key


def study_identifiers(scan: ArchiveScan, images: list[dict], salt: str) -> dict[str, KnownIdentifiers]:
    """Report key -> the identifiers to scrub from it: its own source's, and those of its study's DICOM headers."""
    pairs: dict[str, set] = {}
    hashes: dict[str, set] = {}
    for img in images:
        key = scan.report_for(img.get("accession"), img.get("study_uid"))
        if key is not None:
            pairs.setdefault(key, set()).update(img.get("identifiers") or ())
            hashes.setdefault(key, set()).update(img.get("id_hashes") or ())
    out = {}
    for key, source in scan.reports.items():
        known = KnownIdentifiers.from_pairs(
            (source.identifiers if isinstance(source, InlineReport) else set()) | pairs.get(key, set())
        )
        if hashes.get(key):  # a synced study keeps its header identifiers only as salted hashes: match all hashed
            known = KnownIdentifiers.from_hashes(sorted(hashes[key] | set(known.hashed(salt))), salt)
        out[key] = known
    return out


def scrub_sections(sections: dict, scrubber: TextScrubber, known: KnownIdentifiers | None) -> tuple[dict, int, Counter]:
    out, total, kinds = dict(sections), 0, Counter()
    for name, body in sections.items():
        if isinstance(body, str) and body:
            done = scrubber.scrub(body, known)
            out[name], total = done.text, total + done.replacements
            kinds.update(done.by_kind)
    return out, total, kinds


def deid_scan(scan: ArchiveScan, salt: str, redactor: Redactor) -> ArchiveScan:
    """The scan with every header id keyed (:func:`key_record`), report keys too; ``redactor`` learns the raw ids."""
    if scan.keyed:
        return scan
    images = []
    for img in scan.images:
        keyed = key_record(img, salt)
        for name in ("patient_id", "study_uid", "accession", "series_uid", "sop_uid"):
            redactor.add(img.get(name), keyed[name] or "")
        images.append(keyed)
    key = lambda k: study_key(str(k), salt)  # noqa: E731 - accession and StudyInstanceUID share the study key
    for k in scan.reports:
        redactor.add(k, key(k))
    reports = {key(k): v for k, v in scan.reports.items()}
    aliases = {key(k): key(v) for k, v in scan.aliases.items()}
    return ArchiveScan(images, reports, scan.rejects, scan.skipped, scan.inputs, aliases, keyed=True)
