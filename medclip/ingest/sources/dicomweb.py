"""DICOMweb: QIDO-RS lists studies and series, WADO-RS streams their instances (dicomweb-client).

Credentials, never on the command line: ``MEDCLIP_DICOMWEB_TOKEN`` (a bearer token), or
``MEDCLIP_DICOMWEB_USER`` + ``MEDCLIP_DICOMWEB_PASSWORD`` (HTTP basic), or else the host's entry in ``~/.netrc``
(or the file ``NETRC`` names), which requests reads itself. Transient HTTP failures (connection errors, 429, 5xx)
are retried with exponential backoff by urllib3; a study that still fails is retried whole by the sync.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import default as default_policy

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from medclip.errors import SourceError
from medclip.ingest.sources import PacsSource
from medclip.ingest.sources.refs import SeriesRef, StudyRef, study_filters
from medclip.ingest.sources.sink import StudySink

logger = logging.getLogger(__name__)

ENV_USER, ENV_PASSWORD, ENV_TOKEN = "MEDCLIP_DICOMWEB_USER", "MEDCLIP_DICOMWEB_PASSWORD", "MEDCLIP_DICOMWEB_TOKEN"
STUDY_FIELDS = ("StudyInstanceUID", "AccessionNumber", "PatientID", "StudyDate", "NumberOfStudyRelatedInstances")
SERIES_FIELDS = ("SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances")
# Ask for the instances as stored (any transfer syntax): no server-side transcoding, so pixels are the PACS's own.
AS_STORED = (("application/dicom", "*"),)
PAGE = 500  # QIDO results per request


def make_session(retries: int = 4) -> requests.Session:
    """A requests session with the environment's credentials (else netrc) and backoff on transient failures."""
    session = requests.Session()
    token, user, password = os.environ.get(ENV_TOKEN), os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user:
        session.auth = (user, password or "")
    retry = Retry(
        total=retries, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
        raise_on_status=False,
    )  # fmt: skip
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=32)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _paged(search, *args, page: int = PAGE, **kwargs) -> Iterator[dict]:
    """Every result of a QIDO search, ``page`` at a time with explicit limit + offset.

    (dicomweb-client's ``get_remaining`` sends an offset without a limit, which some servers, Orthanc 1.10 among
    them, answer with the whole list again: it would never end.)
    """
    offset = 0
    while True:
        found = search(*args, limit=page, offset=offset, **kwargs)
        yield from found
        if len(found) < page:
            return
        offset += len(found)


def _value(item: Dataset, keyword: str, cast: type = str):
    value = item.get(keyword)
    if value is None or value == "":
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        return None


class DicomWebSource:
    """One DICOMweb service; a client per thread (requests sessions are not shared across threads)."""

    def __init__(self, source: PacsSource, *, retries: int = 4):
        self.source, self.retries = source, retries
        self._local = threading.local()

    @property
    def client(self) -> DICOMwebClient:
        if getattr(self._local, "client", None) is None:
            self._local.client = DICOMwebClient(self.source.url, session=make_session(self.retries), timeout=(10, 300))
        return self._local.client

    def check(self) -> None:
        """One cheap query, so a wrong URL or credential fails before anything else (with a readable reason)."""
        try:
            self.client.search_for_studies(limit=1, fields=["StudyInstanceUID"])
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            hint = (
                f"set {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}, or add the host to ~/.netrc"
                if status in (401, 403)
                else "check the URL (it names the DICOMweb root, e.g. http://pacs:8042/dicom-web)"
            )
            raise SourceError(f"{self.source.label}: QIDO-RS answered HTTP {status}; {hint}") from None
        except requests.ConnectionError:
            raise SourceError(f"{self.source.label}: cannot connect; is the server up and the port right?") from None

    def studies(self, modalities: tuple[str, ...] | None, since: str | None) -> Iterator[StudyRef]:
        for filters in study_filters(modalities, since):
            found = _paged(self.client.search_for_studies, fields=list(STUDY_FIELDS), search_filters=filters)
            for item in found:
                ds = Dataset.from_json(item)
                uid = _value(ds, "StudyInstanceUID")
                if uid:
                    yield StudyRef(
                        uid=uid,
                        accession=_value(ds, "AccessionNumber"),
                        patient_id=_value(ds, "PatientID"),
                        date=_value(ds, "StudyDate"),
                        instances=_value(ds, "NumberOfStudyRelatedInstances", int),
                    )

    def series(self, study_uid: str) -> list[SeriesRef]:
        found = _paged(self.client.search_for_series, study_uid, fields=list(SERIES_FIELDS))
        out = []
        for item in found:
            ds = Dataset.from_json(item)
            if uid := _value(ds, "SeriesInstanceUID"):
                modality = (_value(ds, "Modality") or "").upper() or None
                out.append(SeriesRef(uid, modality, _value(ds, "NumberOfSeriesRelatedInstances", int)))
        return out

    def instances(self, study_uid: str, series_uid: str) -> list[str]:
        found = _paged(self.client.search_for_instances, study_uid, series_uid, fields=["SOPInstanceUID"])
        return [uid for item in found if (uid := _value(Dataset.from_json(item), "SOPInstanceUID"))]

    def fetch_series(self, study_uid: str, series_uid: str, sink: StudySink) -> None:
        """Stream a series into ``sink``; an instance pydicom cannot parse sends the rest through one by one."""
        try:
            for ds in self.client.iter_series(study_uid, series_uid, media_types=AS_STORED):
                sink.add(ds)
        except requests.RequestException:
            raise  # the network: the sync retries the study
        except Exception:  # noqa: BLE001 - a part that is not plain DICOM (headless, corrupt): per instance, raw
            logger.debug("series stream failed; retrieving its instances one by one", exc_info=True)
            for sop in self.instances(study_uid, series_uid):
                self.fetch_instance(study_uid, series_uid, sop, sink)

    def fetch_instance(self, study_uid: str, series_uid: str, sop_uid: str, sink: StudySink) -> None:
        """One instance as the bytes the PACS stores, judged by the file readers (a bad one is a reject)."""
        url = f"{self.source.url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        response = self.client._session.get(url, headers={"Accept": accept}, timeout=(10, 300))
        response.raise_for_status()
        for part in _multipart_parts(response):
            sink.add_raw(part, sop_uid)

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client._session.close()  # noqa: SLF001 - dicomweb-client offers no close()


def _multipart_parts(response: requests.Response) -> list[bytes]:
    """The bodies of a multipart/related response (the stdlib MIME parser), or the body itself if not multipart."""
    content_type = response.headers.get("Content-Type", "")
    if not content_type.lower().startswith("multipart/"):
        return [response.content]
    message = BytesParser(policy=default_policy).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + response.content
    )
    return [part.get_payload(decode=True) for part in message.iter_parts()]
