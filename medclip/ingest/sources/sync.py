"""Sync a PACS into the store of an output folder: list, fetch what is new in parallel, commit study by study.

Each study is fetched by one worker (``workers`` in parallel): its series one after another, streamed instance by
instance into a partial folder (memory stays at a few instances per worker, whatever the number of studies),
retried whole with exponential backoff (tenacity) on any failure, then committed. A study the PACS reports with
more instances than were synced (new images arrived) gets only the missing instances. A study that still fails
is a ``fetch_failed`` reject of this run and is tried again by the next one.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import Retrying, stop_after_attempt, wait_exponential
from tqdm.auto import tqdm

from medclip.deid.text import TextScrubber
from medclip.ingest.rejects import reject
from medclip.ingest.sources import PacsSource
from medclip.ingest.sources.redact import Redactor
from medclip.ingest.sources.refs import StudyRef
from medclip.ingest.sources.sink import StudySink
from medclip.ingest.sources.store import SyncStore
from medclip.ingest.splits import id_key, patient_key, salt_fingerprint, study_key

logger = logging.getLogger(__name__)


class IncompleteStudy(RuntimeError):
    pass


@dataclass
class SyncReport:
    listed: int = 0
    already: int = 0  # finished before this run, nothing new
    fetched: int = 0  # new studies committed this run
    updated: int = 0  # finished studies that got new instances
    series_skipped: int = 0  # series of another modality, not fetched
    instances: int = 0  # instances received this run
    failed: list[dict] = field(default_factory=list)  # fetch_failed rejects (retried next run)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "failed"} | {"failed": len(self.failed)}


def open_source(source: PacsSource, *, retries: int, retrieve: str, calling_ae: str, store_port: int):
    if source.kind == "dicomweb":
        from medclip.ingest.sources.dicomweb import DicomWebSource

        return DicomWebSource(source, retries=retries)
    from medclip.ingest.sources.dimse import DimseSource

    return DimseSource(source, calling_ae=calling_ae, retrieve=retrieve, store_port=store_port)


def sync(
    source: PacsSource,
    out_dir: str | Path,
    *,
    salt: str,
    modalities: tuple[str, ...] | None = None,
    since: str | None = None,
    workers: int = 8,
    retries: int = 4,
    verify_pixels: bool = True,
    show_progress: bool = True,
    retrieve: str = "get",
    calling_ae: str = "MEDCLIP",
    store_port: int = 0,
    redactor: Redactor | None = None,
    deid: bool = True,
) -> tuple[SyncStore, SyncReport]:
    """Bring ``out_dir``'s store up to date with ``source``; returns the store and what this run did."""
    redactor = redactor or Redactor()
    store = SyncStore(out_dir, salt_fingerprint=salt_fingerprint(salt), source=source.label)
    store.clean()
    report = SyncReport()
    client = open_source(source, retries=retries, retrieve=retrieve, calling_ae=calling_ae, store_port=store_port)
    try:
        with redactor.installed():
            client.check()
            refs: dict[str, StudyRef] = {}
            for ref in client.studies(modalities, since):
                refs.setdefault(ref.uid, ref)
            todo = []
            for ref in sorted(refs.values(), key=lambda r: r.uid):
                key = study_key(ref.uid, salt)
                redactor.add(ref.uid, key)
                redactor.add(ref.accession, study_key(ref.accession, salt) if ref.accession else key)
                redactor.add(ref.patient_id, patient_key(ref.patient_id, salt) if ref.patient_id else key)
                previous = store.studies.get(key)
                if previous is None:
                    todo.append((ref, key, None))
                elif ref.instances is not None and ref.instances > previous.get("pacs_instances", 0):
                    todo.append((ref, key, previous))
                else:
                    report.already += 1
            report.listed = len(refs)
            logger.info(
                "%s: %d studies listed, %d already synced, %d to fetch", source.label, report.listed, report.already,
                len(todo),
            )  # fmt: skip
            scrubber = TextScrubber() if deid else None
            fetch = _Fetcher(client, store, salt, source.label, modalities, verify_pixels, retries, redactor, scrubber)
            with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fetch") as pool:
                futures = {pool.submit(fetch, ref, key, previous): (key, previous) for ref, key, previous in todo}
                bar = tqdm(total=len(futures), desc="sync", unit="study", disable=not show_progress, leave=False)
                for future in as_completed(futures):
                    key, previous = futures[future]
                    bar.update()
                    try:
                        entry, folder, sink = future.result()
                    except Exception as exc:  # noqa: BLE001 - after the retries: this study fails, the rest goes on
                        detail = redactor.redact(f"{source.label}/studies/{key}: {type(exc).__name__}: {exc}")
                        logger.warning("study %s not fetched after %d tries: %s", key, retries, detail)
                        report.failed.append(reject(f"{source.label}/studies/{key}", "fetch_failed", detail))
                        continue
                    report.series_skipped += entry.pop("_series_skipped", 0)
                    store.commit(entry, folder)
                    report.instances += sink.received
                    if previous is None:
                        report.fetched += 1
                    else:
                        report.updated += 1
                bar.close()
    finally:
        client.close()
    store.finish()
    return store, report


class _Fetcher:
    """Fetch one study (a callable for the thread pool)."""

    def __init__(self, client, store, salt, label, modalities, verify_pixels, retries, redactor, scrubber):
        self.client, self.store, self.salt, self.label, self.scrubber = client, store, salt, label, scrubber
        self.modalities, self.verify_pixels, self.retries, self.redactor = modalities, verify_pixels, retries, redactor

    def __call__(self, ref: StudyRef, key: str, previous: dict | None):
        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.retries)), wait=wait_exponential(multiplier=0.5, max=30), reraise=True
        )
        for attempt in retrying:
            with attempt:
                return self._once(ref, key, previous)
        raise AssertionError("unreachable")

    def _once(self, ref: StudyRef, key: str, previous: dict | None):
        folder = self.store.begin(key)
        known = {r["sop_uid"] for r in (previous or {}).get("instances", [])}
        known |= {r["path"].rsplit("/", 1)[-1] for r in (previous or {}).get("rejects", [])}
        sink = StudySink(
            key, folder, self.salt, self.label, self.modalities, self.verify_pixels, known=set(known),
            scrubber=self.scrubber,
        )  # fmt: skip
        skipped, expected = 0, 0
        for series in self.client.series(ref.uid):
            self.redactor.add(series.uid, id_key("series", series.uid, self.salt))
            other = self.modalities and series.modality and series.modality not in self.modalities
            if other and series.modality != "SR":  # SR series hold reports: always fetched
                skipped += 1
                continue
            if previous is None:
                self.client.fetch_series(ref.uid, series.uid, sink)
                expected += series.instances or 0
                continue
            for sop in self.client.instances(ref.uid, series.uid):
                if id_key("sop", sop, self.salt) not in known:
                    self.client.fetch_instance(ref.uid, series.uid, sop, sink)
                    expected += 1
        if sink.received < expected:
            raise IncompleteStudy(f"{sink.received} of {expected} instances arrived")
        entry = sink.entry(self.salt, previous)
        entry["pacs_instances"] = max(ref.instances or 0, len(entry["instances"]) + len(entry["rejects"]))
        entry["_series_skipped"] = skipped
        return entry, folder, sink
