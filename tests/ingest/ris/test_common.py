"""Shared RIS rules: times, sectioned text, version resolution, detection, and no identifier in logs or rejects."""

from __future__ import annotations

import json
import logging

import pytest

from medclip.errors import InputError
from medclip.ingest.ris import detect, read_ris
from medclip.ingest.ris.base import Candidate, RisReport, assemble, resolve, section_of, sortable_time


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20200102030405", "2020-01-02T03:04:05.000000"),
        ("20200102030405.12+0100", "2020-01-02T02:04:05.120000"),
        ("202001021015", "2020-01-02T10:15:00.000000"),
        ("20200102", "2020-01-02T00:00:00.000000"),
        ("2020-01-02T03:04:05Z", "2020-01-02T03:04:05.000000"),
        ("2020-01-02T03:04:05.123456789-05:00", "2020-01-02T08:04:05.123456"),
        ("2020-01-02", "2020-01-02T00:00:00.000000"),
        ("", None),
        ("yesterday", None),
        ("20201340", None),
    ],
)
def test_sortable_time(value, expected):
    assert sortable_time(value) == expected


def test_assemble_sections_only_when_all_text_is_sectioned():
    sections, text = assemble([("findings", "Clear\n lungs."), ("impression", "Normal."), ("findings", "No effusion.")])
    assert sections["findings"] == "Clear lungs. No effusion." and sections["history"] is None
    assert text == "FINDINGS: Clear lungs. No effusion.\nIMPRESSION: Normal."
    sections, text = assemble([(None, "Report body."), ("impression", "Normal."), ("_other", "Follow up in 6 weeks.")])
    assert sections is None
    assert text == "Report body.\nIMPRESSION: Normal.\nFollow up in 6 weeks."
    assert assemble([(None, "  ")]) == (None, "")


@pytest.mark.parametrize(
    ("code", "meaning", "expected"),
    [("121070", "", "findings"), ("19005-8", "", "impression"), ("X&IMP", "", "impression"), ("X&GDT", "", None)]
    + [("LOCAL", "Clinical History", "history"), ("LOCAL", "Report", None), ("", "Impresion", "impression")],
)
def test_section_of(code, meaning, expected):
    assert section_of(code, meaning) == expected


def _cand(rid, status, order, accession="A", study_uid=None):
    return Candidate(RisReport(rid, accession, study_uid, None, rid, status, None, "utf-8"), (order,))


def test_resolve_rules():
    cands = [
        _cand("a1", "final", 1),
        _cand("a2", "corrected", 2),
        _cand("b1", "preliminary", 1, "B"),  # only a preliminary: kept
        _cand("c1", "final", 2, "C"),
        _cand("c2", "preliminary", 3, "C"),  # a later preliminary never replaces a final
        _cand("d1", "cancelled", 1, "D"),
        _cand("d2", "final", 2, "D"),  # re-issued after a cancellation
        _cand("s1", "final", 1, None, "1.2.3"),
        _cand("s2", "amended", 5, None, "1.2.3"),
    ]
    read = resolve(cands, inputs=len(cands))
    assert [r.id for r in read.reports] == ["a2", "b1", "c1", "d2", "s2"]  # input order
    assert {r["path"]: r["reason"] for r in read.rejects} == {
        "a1": "superseded_report",
        "c2": "superseded_report",
        "d1": "cancelled_report",
        "s1": "superseded_report",
    }
    assert read.inputs == len(read.reports) + len(read.rejects)


def test_detect_plain_sources_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("FINDINGS: normal.")
    (tmp_path / "b.txt").write_text("IMPRESSION: normal.")
    (tmp_path / "c.txt").write_text("MSH|^~\\&|one stray message")
    (tmp_path / "reports.csv").write_text("accession,text\n1,normal\n")
    assert detect(tmp_path) is None
    assert detect(tmp_path / "reports.csv") is None
    assert detect(tmp_path / "missing") is None
    with pytest.raises(InputError, match="not a RIS report source"):
        read_ris(tmp_path)
    with pytest.raises(InputError, match="use one of sr, hl7, fhir"):
        read_ris(tmp_path, "pdf")
    with pytest.raises(InputError, match="does not exist"):
        read_ris(tmp_path / "missing")


PLANTED = ("ZEBULON", "QUIXOTE", "MRN9137", "19510607", "555-0199")


def test_no_identifier_in_logs_or_rejects(tmp_path, caplog):
    """Bad inputs of each kind carrying identifiers: nothing of them in the log or in a reject."""
    pid = "PID|1||MRN9137||QUIXOTE^ZEBULON||19510607|||||555-0199"
    msh = "MSH|^~\\&|RIS|H|||20200101||ORU^R01|1|P|2.5"
    bad_escapes = "OBX|1|TX|&GDT||ZEBULON \\Zodd\\ \\Cxxyy\\ \\X4G\\ QUIXOTE||||||F"
    (tmp_path / "hl7").mkdir()
    (tmp_path / "hl7" / "a.hl7").write_text(
        "\r".join([msh, pid, "OBR|1||ACC5", bad_escapes, "stray ZEBULON", "MSH|^~\\&|x", pid])
    )
    (tmp_path / "hl7" / "b.hl7").write_text("ZEBULON QUIXOTE MRN9137 before any message")
    (tmp_path / "fhir").mkdir()
    bad = {"resourceType": "DiagnosticReport", "status": "final", "subject": {"display": "ZEBULON QUIXOTE"}}
    bad["identifier"] = [{"system": "accession", "value": "MRN9137", "period": "19510607"}]  # invalid period
    (tmp_path / "fhir" / "r.ndjson").write_text(json.dumps(bad) + '\n{"MRN9137": 555-0199\n')
    with caplog.at_level(logging.DEBUG):
        reads = [read_ris(tmp_path / "hl7", "hl7"), read_ris(tmp_path / "fhir", "fhir")]
    assert all(r.rejects for r in reads)
    dumped = caplog.text + json.dumps([r.rejects for r in reads])
    for value in PLANTED:
        assert value not in dumped
