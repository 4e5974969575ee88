"""FHIR DiagnosticReport: JSON, Bundle, NDJSON bulk export, presented forms, keys, versions, identifiers, rejects."""

from __future__ import annotations

import base64
import json

import pytest

from medclip.ingest.ris import detect, read_ris
from medclip.ingest.ris.fhir import html_text

ACSN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "urn:mrn", "value": "MRN5521"}],
    "name": [{"family": "Doe", "given": ["Jane", "Q"]}],
    "birthDate": "1970-03-04",
    "telecom": [{"system": "phone", "value": "555-867-5309"}, {"system": "email", "value": "jd@example.org"}],
    "address": [{"line": ["42 Oak Avenue"], "city": "Springfield", "state": "IL", "postalCode": "62704"}],
}
STUDY = {
    "resourceType": "ImagingStudy",
    "id": "s1",
    "status": "available",
    "subject": {"reference": "Patient/p1"},
    "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4.99"}],
}


def _form(text: str, content_type: str = "text/plain") -> dict:
    return {"contentType": content_type, "data": base64.b64encode(text.encode("utf-8")).decode()}


def report(rid="r1", accession="ACC1", *, status="final", text="FINDINGS: Clear lungs.\nIMPRESSION: Normal.", **kw):
    res = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": status,
        "code": {"text": "XR Chest"},
        "subject": {"reference": "Patient/p1", "display": "Jane Doe"},
        "issued": "2020-01-02T03:04:05+01:00",
        "resultsInterpreter": [{"display": "Dr. Alan Grant"}],
    }
    if accession:
        res["identifier"] = [{"type": ACSN, "value": accession}]
    if text is not None:
        res["presentedForm"] = [_form(text)]
    res.update(kw)
    return res


def _ndjson(path, *resources):
    path.write_text("\n".join(json.dumps(r) for r in resources) + "\n")
    return path


def test_single_resource_sections_keys_identifiers(tmp_path):
    path = tmp_path / "bundle.json"
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in (PATIENT, STUDY)]
    entries.append({"resource": report(imagingStudy=[{"reference": "ImagingStudy/s1"}])})
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": entries}))
    read = read_ris(path)
    assert read.inputs == 1 and not read.rejects
    (rep,) = read.reports
    assert rep.id == f"{path}#entry=3"
    assert (rep.accession, rep.study_uid, rep.status) == ("ACC1", "1.2.3.4.99", "final")
    assert rep.sections["findings"] == "Clear lungs." and rep.sections["impression"] == "Normal."
    assert rep.issued == "2020-01-02T02:04:05.000000"
    assert rep.encoding == "utf-8"
    expected = {
        ("name", "Doe^Jane Q"),
        ("name", "Jane Doe"),
        ("name", "Dr. Alan Grant"),
        ("id", "MRN5521"),
        ("id", "ACC1"),
        ("date", "1970-03-04"),
        ("phone", "555-867-5309"),
        ("email", "jd@example.org"),
        ("address", "42 Oak Avenue"),
        ("address", "62704"),
    }
    assert expected <= set(rep.identifiers)


def test_ndjson_bulk_export_folder_with_versions_and_cancellation(tmp_path):
    _ndjson(tmp_path / "Patient.ndjson", PATIENT)
    _ndjson(tmp_path / "ImagingStudy.ndjson", STUDY)
    v1 = report("r1", text="IMPRESSION: First read.", meta={"versionId": "1", "lastUpdated": "2020-01-02T00:00:00Z"})
    v2 = report(
        "r1",
        status="amended",
        text="IMPRESSION: Amended read.",
        meta={"versionId": "2", "lastUpdated": "2020-01-03T00:00:00Z"},
    )
    gone = report("r2", "ACC2", status="entered-in-error")
    by_study = report("r3", None, imagingStudy=[{"reference": "ImagingStudy/s1"}])
    _ndjson(tmp_path / "DiagnosticReport.ndjson", v2, v1, gone, by_study)
    assert detect(tmp_path) == "fhir"
    read = read_ris(tmp_path)
    assert read.inputs == 4 == len(read.reports) + len(read.rejects)
    assert {(r.accession, r.study_uid, r.status) for r in read.reports} == {
        ("ACC1", None, "amended"),
        (None, "1.2.3.4.99", "final"),
    }
    amended = next(r for r in read.reports if r.accession == "ACC1")
    assert amended.sections["impression"] == "Amended read."
    assert amended.id.endswith("DiagnosticReport.ndjson#line=1")
    assert sorted(r["reason"] for r in read.rejects) == ["cancelled_report", "superseded_report"]
    by_study_report = next(r for r in read.reports if r.study_uid)
    assert ("id", "MRN5521") in by_study_report.identifiers  # Patient from another file of the export


def test_html_form_and_conclusion(tmp_path):
    html = "<html><head><style>p{}</style></head><body><p><b>FINDINGS:</b> Clear&nbsp;lungs.</p><p>No effusion.</p></body></html>"
    res = report(text=None, presentedForm=[_form(html, "text/html; charset=utf-8")], conclusion="No acute disease.")
    _ndjson(tmp_path / "r.ndjson", res)
    (rep,) = read_ris(tmp_path / "r.ndjson").reports
    assert rep.sections["findings"] == "Clear lungs. No effusion."
    assert rep.sections["impression"] == "No acute disease."  # the form had none: the conclusion fills it
    assert html_text("<p>a</p><script>x()</script><div>b<br>c</div>") == "a\nb\nc"


def test_conclusion_only_and_pdf_only(tmp_path):
    pdf = {"contentType": "application/pdf", "data": base64.b64encode(b"%PDF-1.4").decode()}
    only_conclusion = report("a", "A1", text=None, conclusion="Normal chest.")
    only_pdf = report("b", "B1", text=None, presentedForm=[pdf])
    _ndjson(tmp_path / "r.ndjson", only_conclusion, only_pdf)
    read = read_ris(tmp_path / "r.ndjson")
    assert [(r.accession, r.text) for r in read.reports] == [("A1", "IMPRESSION: Normal chest.")]
    assert [r["reason"] for r in read.rejects] == ["report_binary"]


@pytest.mark.parametrize(
    "line",
    [
        "{not json",
        "[1, 2]",
        json.dumps({"id": "x"}),
        json.dumps(report(accession=None)),  # no accession, no study
        json.dumps(report(status="weird")),
    ],
)
def test_malformed_lines_are_rejects(tmp_path, line):
    path = tmp_path / "r.ndjson"
    path.write_text(line + "\n" + json.dumps(report("ok", "OK1")) + "\n")
    read = read_ris(path, "fhir")
    assert [r.accession for r in read.reports] == ["OK1"]
    assert [r["reason"] for r in read.rejects] == ["malformed_report"]
    assert read.rejects[0]["path"] == f"{path}#line=1"
    assert "MRN" not in read.rejects[0]["detail"] and "Jane" not in read.rejects[0]["detail"]


def test_non_conforming_resource_is_still_read(tmp_path):
    odd = report(unexpectedField=True)  # fails strict R4 validation; everything we need is well formed
    _ndjson(tmp_path / "r.ndjson", odd)
    (rep,) = read_ris(tmp_path / "r.ndjson").reports
    assert rep.accession == "ACC1" and rep.sections["impression"] == "Normal."


def test_based_on_service_request_and_contained_patient(tmp_path):
    request = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "identifier": [{"system": "urn:accession", "value": "SR9"}],
    }
    patient = dict(PATIENT, id="cp")
    res = report(accession=None, basedOn=[{"reference": "#sr1"}], contained=[request, patient])
    res["subject"] = {"reference": "#cp"}
    (tmp_path / "r.json").write_text(json.dumps(res))
    (rep,) = read_ris(tmp_path / "r.json").reports
    assert rep.accession == "SR9" and ("id", "MRN5521") in rep.identifiers
