"""Fixtures for the PACS tests: a real Orthanc (with its DICOMweb plugin) on free ports, and synthetic studies.

Orthanc comes from the Debian packages `orthanc` and `orthanc-dicomweb` (.ci/run installs them when missing);
where they are absent every test using `orthanc` skips with the reason.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `pytest` (not `python -m pytest`) in importlib mode leaves the repo root off sys.path
    sys.path.insert(0, _ROOT)

from tests.pacs.orthanc import Orthanc, missing_reason, start_orthanc  # noqa: E402
from tests.pacs.studies import SyntheticStudy, make_cxr_archive  # noqa: E402

ORTHANC_USER = "medclip"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Orthanc:
    """A fresh Orthanc per test module: HTTP basic auth as ORTHANC_USER (password in `orthanc.users`), DICOMweb at
    `orthanc.dicomweb_url`, DIMSE at 127.0.0.1:`orthanc.dicom_port` (AE `orthanc.aet`), empty storage."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"), users={ORTHANC_USER: secrets.token_urlsafe(12)})
    yield server
    server.stop()


@pytest.fixture
def dicomweb_credentials(orthanc, monkeypatch) -> tuple[str, str]:
    """Puts the Orthanc user and password in MEDCLIP_DICOMWEB_USER / MEDCLIP_DICOMWEB_PASSWORD for one test."""
    user, password = orthanc.auth
    monkeypatch.setenv("MEDCLIP_DICOMWEB_USER", user)
    monkeypatch.setenv("MEDCLIP_DICOMWEB_PASSWORD", password)
    return user, password


@pytest.fixture(scope="module")
def cxr_studies(tmp_path_factory) -> list[SyntheticStudy]:
    """Six synthetic chest X-ray studies (two images each, DX and CR) from four patients (0, 2 with two studies), written to a temp dir."""
    return make_cxr_archive(tmp_path_factory.mktemp("cxr_studies"), 6, seed=19)
