"""DICOM SR reports: content tree -> sections, keys, status, versions, rejects (SRs written with highdicom)."""

from __future__ import annotations

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medclip.ingest.ris import detect, read_ris
from medclip.ingest.ris.sr import read_sr_file

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _image(study_uid: str, accession: str = "ACC100") -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "DOE^JOHN^Q", "MRN7781", "19600102", "M"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid(), generate_uid()
    ds.SOPClassUID, ds.Modality, ds.AccessionNumber = "1.2.840.10008.5.1.4.1.1.1.1", "DX", accession
    ds.StudyID, ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "S1", "20200101", "120000", "WHO^ANNA"
    return ds


def _text(concept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=concept, value=value, relationship_type="CONTAINS")


def _container(concept, *children) -> hd.sr.ContainerContentItem:
    item = hd.sr.ContainerContentItem(name=concept, relationship_type="CONTAINS")
    item.ContentSequence = list(children)
    return item


def write_sr(path, children, *, study_uid=None, accession="ACC100", final=True, when="20200102", sop=None, **kw):
    """A Comprehensive SR (or, with ``sop``, the same tree under another SR class) with ``children`` under a
    "Diagnostic Imaging Report" root."""
    image = _image(study_uid or generate_uid(), accession)
    root = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept("18748-4", "LN", "Diagnostic Imaging Report"))
    root.ContentSequence = list(children)
    sr = hd.sr.ComprehensiveSR(
        evidence=[image],
        content=root,
        series_instance_uid=generate_uid(),
        series_number=1,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        is_complete=final,
        is_final=final,
        is_verified=final,
        verifying_observer_name="SMITH^JANE" if final else None,
        verifying_organization="Hospital" if final else None,
        **kw,
    )
    sr.ContentDate, sr.ContentTime = when, "101500"
    if sop:
        sr.SOPClassUID = sop
        sr.file_meta.MediaStorageSOPClassUID = sop
    sr.save_as(path)
    return image


FINDINGS = _container(codes.DCM.Findings, _text(codes.DCM.Finding, "Lungs are clear."))
IMPRESSION = _container(codes.DCM.Conclusions, _text(codes.DCM.Impression, "No acute disease."))


@pytest.mark.parametrize("sop", [None, BASIC_TEXT_SR])
def test_sections_keys_and_identifiers(tmp_path, sop):
    image = write_sr(tmp_path / "r.dcm", [FINDINGS, IMPRESSION], sop=sop)
    cand = read_sr_file(tmp_path / "r.dcm")
    report = cand.report
    assert report.sections["findings"] == "Lungs are clear."
    assert report.sections["impression"] == "No acute disease."
    assert report.text == "FINDINGS: Lungs are clear.\nIMPRESSION: No acute disease."
    assert (report.accession, report.study_uid) == ("ACC100", image.StudyInstanceUID)
    assert report.status == "final" and report.issued == "2020-01-02T10:15:00.000000"
    assert {("name", "DOE^JOHN^Q"), ("id", "MRN7781"), ("name", "SMITH^JANE"), ("date", "19600102")} <= set(
        report.identifiers
    )
    assert report.id == str(tmp_path / "r.dcm")


def test_unsectioned_text_is_left_to_the_section_parser(tmp_path):
    local = hd.sr.CodedConcept("1234", "99LOCAL", "Report text")  # a concept that names no section
    write_sr(tmp_path / "r.dcm", [_text(local, "Heart normal.\nIMPRESSION: normal")])
    report = read_sr_file(tmp_path / "r.dcm").report
    assert report.sections is None
    assert report.text == "Heart normal.\nIMPRESSION: normal"


def test_coded_and_numeric_items_become_text(tmp_path):
    nodule = hd.sr.CodeContentItem(
        name=codes.DCM.Finding,
        value=hd.sr.CodedConcept("427359005", "SCT", "Solitary nodule"),
        relationship_type="CONTAINS",
    )
    size = hd.sr.NumContentItem(
        name=hd.sr.CodedConcept("81827009", "SCT", "Diameter"),
        value=4.5,
        unit=hd.sr.CodedConcept("mm", "UCUM", "millimeter"),
        relationship_type="CONTAINS",
    )
    write_sr(tmp_path / "r.dcm", [_container(codes.DCM.Findings, nodule, size)])
    assert read_sr_file(tmp_path / "r.dcm").report.sections["findings"] == "Solitary nodule. Diameter: 4.5 mm."


def test_preliminary_then_amended_version(tmp_path):
    study = generate_uid()
    write_sr(tmp_path / "a_prelim.dcm", [FINDINGS], study_uid=study, final=False, when="20200102")
    later = _container(codes.DCM.Findings, _text(codes.DCM.Finding, "Small left effusion."))
    write_sr(tmp_path / "b_final.dcm", [later], study_uid=study, when="20200103")
    read = read_ris(tmp_path)
    assert read.inputs == 2 and len(read.reports) == 1
    assert read.reports[0].sections["findings"] == "Small left effusion."
    assert [r["reason"] for r in read.rejects] == ["superseded_report"]
    assert read.rejects[0]["path"].endswith("a_prelim.dcm")


def test_later_final_replaces_earlier_even_in_other_file_order(tmp_path):
    study = generate_uid()
    write_sr(tmp_path / "a.dcm", [IMPRESSION], study_uid=study, when="20200105")
    write_sr(tmp_path / "b.dcm", [FINDINGS], study_uid=study, when="20200101")
    read = read_ris(tmp_path, "sr")
    assert [r.id for r in read.reports] == [str(tmp_path / "a.dcm")]
    assert read.rejects[0]["path"] == str(tmp_path / "b.dcm")


def test_bad_files_are_rejects_and_counts_reconcile(tmp_path):
    write_sr(tmp_path / "good.dcm", [FINDINGS])
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    (tmp_path / "notes.bin").write_bytes(b"hello")
    image = _image(generate_uid())
    image.file_meta = FileMetaDataset()
    image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    image.file_meta.MediaStorageSOPClassUID = image.SOPClassUID
    image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
    pydicom.dcmwrite(tmp_path / "image.dcm", image, enforce_file_format=True)
    (tmp_path / "README.md").write_text("not an input")
    read = read_ris(tmp_path, "sr")
    reasons = sorted(r["reason"] for r in read.rejects)
    assert reasons == ["malformed_report", "malformed_report", "not_a_report"]
    assert read.inputs == 4 == len(read.reports) + len(read.rejects)
    for rej in read.rejects:
        assert rej["kind"] == "report" and "MRN7781" not in rej["detail"] and "DOE" not in rej["detail"]


def test_no_key_is_malformed(tmp_path):
    write_sr(tmp_path / "r.dcm", [FINDINGS])
    ds = pydicom.dcmread(tmp_path / "r.dcm")
    del ds.StudyInstanceUID, ds.CurrentRequestedProcedureEvidenceSequence
    ds.AccessionNumber = ""
    ds.save_as(tmp_path / "r.dcm")
    out = read_sr_file(tmp_path / "r.dcm")
    assert isinstance(out, dict) and out["reason"] == "malformed_report"


def test_detect_sr_file_and_folder(tmp_path):
    write_sr(tmp_path / "r.dcm", [FINDINGS])
    assert detect(tmp_path / "r.dcm") == "sr"
    assert detect(tmp_path) == "sr"
