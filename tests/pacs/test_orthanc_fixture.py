"""The Orthanc fixture itself: it starts, stores uploads, answers QIDO-RS / WADO-RS with auth, and speaks DIMSE."""

from __future__ import annotations

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from tests.pacs.orthanc import free_port


@pytest.fixture(scope="module")
def loaded(orthanc, cxr_studies):
    results = orthanc.upload([f for s in cxr_studies for f in s.files])
    return orthanc, cxr_studies, results


def test_upload_accepts_valid_files_and_refuses_garbage(loaded):
    orthanc, studies, results = loaded
    assert [r["status"] for r in results] == ["Success"] * sum(len(s.files) for s in studies)
    again = orthanc.upload([studies[0].files[0], b"not a DICOM file"])
    assert [r["status"] for r in again] == ["AlreadyStored", "Refused"]
    assert len(orthanc.studies()) == len(studies)
    assert len(orthanc.instances()) == sum(len(s.files) for s in studies)


def test_http_needs_the_password(loaded):
    orthanc, _, _ = loaded
    assert requests.get(orthanc.dicomweb_url + "/studies", timeout=10).status_code == 401
    assert requests.get(orthanc.dicomweb_url + "/studies", auth=("medclip", "wrong"), timeout=10).status_code == 401


def test_qido_lists_and_filters_studies(loaded):
    orthanc, studies, _ = loaded
    client = orthanc.dicomweb_client()
    found = {r["0020000D"]["Value"][0] for r in client.search_for_studies()}
    assert found == {s.study_uid for s in studies}
    dx = client.search_for_studies(search_filters={"ModalitiesInStudy": "DX"})
    assert {r["0020000D"]["Value"][0] for r in dx} == {s.study_uid for s in studies if s.modality == "DX"}
    one = client.search_for_studies(search_filters={"AccessionNumber": studies[2].accession})
    assert [r["0020000D"]["Value"][0] for r in one] == [studies[2].study_uid]
    assert len(client.search_for_instances(studies[0].study_uid)) == len(studies[0].files)


def test_wado_retrieves_the_stored_bytes(loaded):
    orthanc, studies, _ = loaded
    client = orthanc.dicomweb_client()
    # transfer-syntax=* asks for the stored syntax (no transcoding by Orthanc)
    got = client.retrieve_study(studies[0].study_uid, media_types=(("application/dicom", "*"),))
    originals = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, studies[0].files)}
    assert {ds.SOPInstanceUID for ds in got} == set(originals)
    for ds in got:
        assert ds.PixelData == originals[ds.SOPInstanceUID].PixelData
        assert ds.PatientID == studies[0].patient_id


def test_dimse_echo_find_and_get(loaded):
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import (
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        Verification,
    )

    orthanc, studies, _ = loaded
    ae = AE(ae_title="MEDCLIPTEST")
    for context in (
        Verification,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
    ):
        ae.add_requested_context(context)
    storage = (DigitalXRayImageStorageForPresentation, ComputedRadiographyImageStorage)
    for context in storage:
        ae.add_requested_context(context)
    received: list[str] = []

    def on_store(event):
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        orthanc.dicom_port,
        ae_title=orthanc.aet,
        ext_neg=[build_role(c, scp_role=True) for c in storage],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        query.AccessionNumber = studies[1].accession
        matches = [ds for _, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind) if ds]
        assert [ds.StudyInstanceUID for ds in matches] == [studies[1].study_uid]
        get = Dataset()
        get.QueryRetrieveLevel = "STUDY"
        get.StudyInstanceUID = studies[1].study_uid
        statuses = [s.Status for s, _ in assoc.send_c_get(get, StudyRootQueryRetrieveInformationModelGet)]
        assert statuses[-1] == 0x0000
    finally:
        assoc.release()
    assert sorted(received) == sorted(pydicom.dcmread(f).SOPInstanceUID for f in studies[1].files)


def test_c_move_needs_a_registered_destination(loaded):
    from pynetdicom import AE, StoragePresentationContexts, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    orthanc, studies, _ = loaded
    received: list[str] = []

    def on_store(event):
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    port = free_port()
    scp = AE(ae_title="MEDCLIPSTORE")
    scp.supported_contexts = StoragePresentationContexts
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        scu = AE(ae_title="MEDCLIPMOVE")
        scu.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        move = Dataset()
        move.QueryRetrieveLevel = "STUDY"
        move.StudyInstanceUID = studies[3].study_uid
        assoc = scu.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.aet)
        try:
            refused = [
                s.Status for s, _ in assoc.send_c_move(move, "MEDCLIPSTORE", StudyRootQueryRetrieveInformationModelMove)
            ]
            assert refused[-1] != 0x0000 and not received  # Orthanc does not know where MEDCLIPSTORE listens
            orthanc.add_modality("medclip-store", aet="MEDCLIPSTORE", port=port)
            moved = [
                s.Status for s, _ in assoc.send_c_move(move, "MEDCLIPSTORE", StudyRootQueryRetrieveInformationModelMove)
            ]
            assert moved[-1] == 0x0000
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert sorted(received) == sorted(pydicom.dcmread(f).SOPInstanceUID for f in studies[3].files)


def test_clear_empties_the_server(orthanc, cxr_studies):
    orthanc.upload(cxr_studies[0].files)
    assert orthanc.instances()
    assert orthanc.clear() >= 1
    assert orthanc.instances() == []
