"""What happens to each retrieved instance: header facts and identifiers read, then stored de-identified.

Shared by the DICOMweb and DIMSE sources so both give the same records and rejects as the ``dicom`` file layout:
the same :func:`medclip.io.dicom.header_facts`, the same modality rule and the same pixel check
(:func:`medclip.io.dicom.load_image` on the stored file), with every id a salted key (:func:`key_record`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydicom.dataset import Dataset

from medclip.deid.dicom import deidentify_dataset
from medclip.deid.identifiers import KnownIdentifiers, dataset_identifiers
from medclip.deid.text import TextScrubber
from medclip.ingest.rejects import reject
from medclip.ingest.ris.base import Candidate, resolve
from medclip.ingest.ris.sr import is_sr, read_sr_file
from medclip.ingest.splits import id_key, key_record, site_key, study_key
from medclip.io.dicom import ReadError, header_facts, load_image, read_dataset

logger = logging.getLogger(__name__)

RECORD_FIELDS = (
    "patient_id", "study_uid", "series_uid", "sop_uid", "accession", "modality", "view", "rows", "columns",
    "photometric", "bits_stored", "body_part", "transfer_syntax", "number_of_frames", "keyed",
    "sex", "age_band", "manufacturer", "site",  # subgroups; the site (InstitutionName) as its salted key
)  # fmt: skip


@dataclass
class StudySink:
    """Collects one study's instances into ``folder`` (its partial folder); ``add`` is thread-safe."""

    study: str  # the study's salted key
    folder: Path
    salt: str
    label: str  # the source, for reject paths: "<label>/studies/<study>/series/<series>/instances/<sop>"
    modalities: tuple[str, ...] | None = None
    verify_pixels: bool = True
    known: set[str] = field(default_factory=set)  # raw sop keys already stored (an incremental fetch skips them)
    records: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    identifiers: set[tuple[str, str]] = field(default_factory=set)
    received: int = 0
    scrubber: TextScrubber | None = None  # scrubs the text of SR reports found in the study (None: kept as is)
    reports: list = field(default_factory=list)  # SR report candidates (medclip.ingest.ris.base.Candidate)
    report_rejects: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, ds: Dataset) -> None:
        with self._lock:
            self.received += 1
            n = self.received
        facts = key_record(header_facts(ds), self.salt)
        facts["site"] = site_key(facts["site"], self.salt)  # keyed like every id here (the stored copy drops it)
        idents = dataset_identifiers(ds)
        series, sop = facts["series_uid"] or "noseries", facts["sop_uid"] or f"instance{n:06d}"
        where = f"{self.label}/studies/{self.study}/series/{series}/instances/{sop}"
        rel = f"{series}/{sop}.dcm"
        with self._lock:
            self.identifiers |= idents
            if sop in self.known:
                return
            self.known.add(sop)
        if is_sr(ds):  # a report stored in the PACS: its text (scrubbed) is kept, the object itself is not
            self._add_sr(ds, sop, where)
            return
        if self.modalities and facts["modality"] not in self.modalities:
            detail = f"{where}: modality {facts['modality']} is not one of {self.modalities}"
            self._reject(reject(where, "modality", detail))
            return
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            deidentify_dataset(ds, self.salt).save_as(path, enforce_file_format=True)
            if self.verify_pixels:
                load_image(path)
        except ReadError as exc:
            path.unlink(missing_ok=True)
            self._reject(reject(where, exc.reason, exc.detail.replace(str(path), where)))
            return
        except Exception as exc:  # an instance pydicom cannot write back (a broken element): one reject, not a crash
            path.unlink(missing_ok=True)
            logger.debug("instance %s failed", where, exc_info=True)
            self._reject(reject(where, "unreadable", f"{where}: cannot be stored ({type(exc).__name__})"))
            return
        record = {k: facts.get(k) for k in RECORD_FIELDS} | {"file": rel}
        with self._lock:
            self.records.append(record)

    def add_raw(self, data: bytes, sop_uid: str) -> None:
        """An instance as bytes (pydicom could not parse it as sent): read like a file of the ``dicom`` layout."""
        sop = id_key("sop", sop_uid, self.salt)
        with self._lock:
            if sop in self.known:
                return
        probe = self.folder / f".raw-{sop}"
        probe.write_bytes(data)
        try:
            ds = read_dataset(probe)
        except ReadError as exc:
            with self._lock:
                self.received += 1
                self.known.add(sop)
            where = f"{self.label}/studies/{self.study}/instances/{sop}"
            self._reject(reject(where, exc.reason, exc.detail.replace(str(probe), where)))
            return
        finally:
            probe.unlink(missing_ok=True)
        self.add(ds)

    def _add_sr(self, ds: Dataset, sop: str, where: str) -> None:
        probe = self.folder / f".sr-{sop}.dcm"  # inside the partial folder; removed at once
        try:
            ds.save_as(probe, enforce_file_format=True)
            found = read_sr_file(probe, len(self.reports) + len(self.report_rejects))
        except Exception:  # noqa: BLE001 - an SR pydicom cannot write back is one reject
            found = reject(where, "malformed_report", f"{where}: an SR that cannot be read", kind="report")
        finally:
            probe.unlink(missing_ok=True)
        with self._lock:
            if isinstance(found, Candidate):
                found.report = replace(found.report, id=where)
                self.reports.append(found)
            else:
                self.report_rejects.append(
                    {**found, "path": where, "detail": found["detail"].replace(str(probe), where)}
                )

    def _stored_reports(self, salt: str) -> tuple[list[dict], list[dict]]:
        """The study's current SR reports, scrubbed, keyed, ready for the state file (+ superseded rejects)."""
        read = resolve(self.reports, inputs=len(self.reports))
        out = []
        for r in read.reports:
            known = KnownIdentifiers.from_pairs(set(r.identifiers) | self.identifiers)
            sections, text, n = r.sections, r.text, 0
            if self.scrubber is not None:
                done = self.scrubber.scrub(text, known)
                text, n = done.text, done.replacements
                if sections:
                    sections = {k: self.scrubber.scrub(v, known).text if v else v for k, v in sections.items()}
            out.append(
                {
                    "id": r.id, "accession": study_key(r.accession, salt) if r.accession else None,
                    "study_uid": study_key(r.study_uid, salt) if r.study_uid else None, "sections": sections,
                    "text": text, "encoding": r.encoding, "replacements": n,
                }
            )  # fmt: skip
        return out, read.rejects

    def _reject(self, row: dict) -> None:
        with self._lock:
            self.rejects.append(row)

    def entry(self, salt: str, previous: dict | None = None) -> dict:
        """The study's state line (merged with the ``previous`` one of an incremental fetch)."""
        known = KnownIdentifiers.from_pairs(self.identifiers)
        hashes = set(known.hashed(salt)) | set((previous or {}).get("id_hashes", []))
        records = [*(previous or {}).get("instances", []), *self.records]
        rejects = [*(previous or {}).get("rejects", []), *self.rejects]
        reports, report_rejects = self._stored_reports(salt)
        return {
            "study": self.study,
            "instances": sorted(records, key=lambda r: r["file"]),
            "rejects": sorted(rejects, key=lambda r: r["path"]),
            "reports": [*(previous or {}).get("reports", []), *reports],
            "report_rejects": [*(previous or {}).get("report_rejects", []), *report_rejects, *self.report_rejects],
            "id_hashes": sorted(hashes),
        }
