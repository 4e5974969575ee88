"""DIMSE: C-FIND lists studies and series, C-GET (default) or C-MOVE retrieves them (pynetdicom).

C-GET needs nothing but the association: the PACS sends the instances back on it, to us in the SCP role for the
storage classes we propose. C-MOVE sends them to a storage SCP that the PACS knows by AE title: we start one on
``store_port`` under ``calling_ae`` (the PACS must list that AE with this host and port, e.g. Orthanc's
``DicomModalities``). Incoming instances are routed to the study being fetched by their StudyInstanceUID; an
instance of a study nobody asked for is refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    StoragePresentationContexts,
    build_role,
    evt,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from medclip.errors import SourceError
from medclip.ingest.sources import PacsSource
from medclip.ingest.sources.refs import SeriesRef, StudyRef, study_filters
from medclip.ingest.sources.sink import StudySink

logger = logging.getLogger(__name__)

# C-GET proposes pynetdicom's 120 common storage classes (an association holds at most 128 contexts); the C-MOVE
# SCP accepts all of them. Each with every transfer syntax, so the PACS sends what it stores, untranscoded.
GET_STORAGE_CLASSES = tuple(cx.abstract_syntax for cx in StoragePresentationContexts)
MOVE_STORAGE_CLASSES = tuple(cx.abstract_syntax for cx in AllStoragePresentationContexts)
PENDING = (0xFF00, 0xFF01)


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value).strip() or None if value not in (None, "") else None


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(ds.get(keyword))
    except (TypeError, ValueError):
        return None


class DimseSource:
    """One DIMSE peer; each query or retrieval opens its own association (so threads never share one)."""

    def __init__(self, source: PacsSource, *, calling_ae: str = "MEDCLIP", retrieve: str = "get", store_port: int = 0):
        if retrieve not in ("get", "move"):
            raise ValueError(f"retrieve must be get or move, not {retrieve!r}")
        self.source, self.calling_ae, self.retrieve = source, calling_ae, retrieve
        self._sinks: dict[str, Callable[[Dataset], None]] = {}
        self._lock = threading.Lock()
        self._server = None
        if retrieve == "move":
            self._server = self._start_scp(store_port)

    # ---------------------------------------------------------------------------------------------- associations
    def _ae(self, *contexts: str, storage_scp: bool = False) -> AE:
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = 60
        ae.network_timeout = 300
        for cx in contexts:
            ae.add_requested_context(cx)
        if storage_scp:
            for uid in GET_STORAGE_CLASSES:
                ae.add_requested_context(uid, ALL_TRANSFER_SYNTAXES)
        return ae

    def _associate(self, ae: AE, **kwargs):
        assoc = ae.associate(self.source.host, self.source.port, ae_title=self.source.aet, **kwargs)
        if not assoc.is_established:
            raise SourceError(
                f"{self.source.label}: association refused or no answer; check the AE title, host and port, and that "
                f"the PACS accepts calling AE {self.calling_ae!r}"
            )
        return assoc

    def check(self) -> None:
        assoc = self._associate(self._ae(Verification))
        try:
            status = assoc.send_c_echo()
            if not status or status.Status != 0:
                raise SourceError(f"{self.source.label}: C-ECHO failed")
        finally:
            assoc.release()

    def _find(self, query: Dataset) -> Iterator[Dataset]:
        assoc = self._associate(self._ae(StudyRootQueryRetrieveInformationModelFind))
        try:
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if status and status.Status in PENDING and identifier is not None:
                    yield identifier
                elif status and status.Status not in PENDING and status.Status != 0:
                    raise SourceError(f"{self.source.label}: C-FIND failed (status 0x{status.Status:04X})")
        finally:
            assoc.release()

    # --------------------------------------------------------------------------------------------------- queries
    def studies(self, modalities: tuple[str, ...] | None, since: str | None) -> Iterator[StudyRef]:
        for filters in study_filters(modalities, since):
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            for keyword in ("StudyInstanceUID", "AccessionNumber", "PatientID", "StudyDate"):
                setattr(q, keyword, "")
            q.NumberOfStudyRelatedInstances = None
            for keyword, value in filters.items():
                setattr(q, keyword, value)
            for ds in self._find(q):
                if uid := _text(ds, "StudyInstanceUID"):
                    yield StudyRef(
                        uid, _text(ds, "AccessionNumber"), _text(ds, "PatientID"), _text(ds, "StudyDate"),
                        _int(ds, "NumberOfStudyRelatedInstances"),
                    )  # fmt: skip

    def series(self, study_uid: str) -> list[SeriesRef]:
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID, q.SeriesInstanceUID, q.Modality = study_uid, "", ""
        q.NumberOfSeriesRelatedInstances = None
        return [
            SeriesRef(uid, (_text(ds, "Modality") or "").upper() or None, _int(ds, "NumberOfSeriesRelatedInstances"))
            for ds in self._find(q)
            if (uid := _text(ds, "SeriesInstanceUID"))
        ]

    def instances(self, study_uid: str, series_uid: str) -> list[str]:
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID, q.SeriesInstanceUID, q.SOPInstanceUID = study_uid, series_uid, ""
        return [uid for ds in self._find(q) if (uid := _text(ds, "SOPInstanceUID"))]

    # ------------------------------------------------------------------------------------------------- retrieval
    def fetch_series(self, study_uid: str, series_uid: str, sink: StudySink) -> None:
        self._retrieve(study_uid, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": series_uid}, sink.add)

    def fetch_instance(self, study_uid: str, series_uid: str, sop_uid: str, sink: StudySink) -> None:
        keys = {"QueryRetrieveLevel": "IMAGE", "SeriesInstanceUID": series_uid, "SOPInstanceUID": sop_uid}
        self._retrieve(study_uid, keys, sink.add)

    def _retrieve(self, study_uid: str, keys: dict, sink: Callable[[Dataset], None]) -> None:
        q = Dataset()
        q.StudyInstanceUID = study_uid
        for keyword, value in keys.items():
            setattr(q, keyword, value)
        if self.retrieve == "get":
            ae = self._ae(StudyRootQueryRetrieveInformationModelGet, storage_scp=True)
            roles = [build_role(UID(uid), scp_role=True) for uid in GET_STORAGE_CLASSES]

            def on_store(event):
                ds = event.dataset
                ds.file_meta = event.file_meta
                sink(ds)
                return 0x0000

            assoc = self._associate(ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
            model, responses = StudyRootQueryRetrieveInformationModelGet, None
        else:
            ae = self._ae(StudyRootQueryRetrieveInformationModelMove)
            assoc = self._associate(ae)
            model = StudyRootQueryRetrieveInformationModelMove
            with self._lock:
                self._sinks[study_uid] = sink
        try:
            if self.retrieve == "get":
                responses = assoc.send_c_get(q, model)
            else:
                responses = assoc.send_c_move(q, self.calling_ae, model)
            for status, _ in responses:
                if status and status.Status not in PENDING and status.Status != 0:
                    failed = status.get("NumberOfFailedSuboperations", "?")
                    raise SourceError(
                        f"{self.source.label}: C-{self.retrieve.upper()} ended with status 0x{status.Status:04X} "
                        f"({failed} failed sub-operations)"
                    )
        finally:
            assoc.release()
            if self.retrieve == "move":
                with self._lock:
                    self._sinks.pop(study_uid, None)

    def _start_scp(self, port: int):
        ae = AE(ae_title=self.calling_ae)
        for uid in MOVE_STORAGE_CLASSES:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        ae.require_calling_aet = [self.source.aet]  # only the PACS we asked may store into us

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            with self._lock:
                sink = self._sinks.get(str(ds.get("StudyInstanceUID", "")))
            if sink is None:
                return 0xA801  # refused: not a study we asked for
            sink(ds)
            return 0x0000

        server = ae.start_server(("", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        self.store_port = server.server_address[1]
        logger.info("C-MOVE destination %s listening on port %d", self.calling_ae, self.store_port)
        return server

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
