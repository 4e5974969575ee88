"""HL7 v2 ORU^R01 reports: message splitting, OBX text, sections, keys, versions, identifiers, rejects."""

from __future__ import annotations

import pytest

from medclip.ingest.ris import detect, read_ris
from medclip.ingest.ris.hl7v2 import declared_charset, split_messages

PID = "PID|1||MRN4471^^^HOSP^MR~ALT992^^^OTHER||DOE^JOHN^Q||19600102|M|||12 ELM STREET^^SPRINGFIELD^IL^62701||(555)123-4567"
PV1 = "PV1|1|O|||||1234^WHO^ANNA^^^DR"


def oru(
    accession="ACC9",
    obx=("OBX|1|TX|18782-3^FINDINGS^LN||Lungs are clear.||||||F",),
    *,
    status="F",
    when="20200102101500",
    sent="20200102101600",
    extra=(),
    msh18="",
):
    msh = f"MSH|^~\\&|RIS|HOSP|PACS|HOSP|{sent}||ORU^R01|MSG{accession}|P|2.5||||||{msh18}"
    obr = f"OBR|1|PL{accession}|{accession}|CXR^Chest||||||||||||777^KEEN^ROB||||||{when}|||{status}"
    return "\r".join([msh, PID, PV1, *extra, obr, *obx])


def _write(path, *messages, sep="\r"):
    path.write_bytes(sep.join(m.replace("\r", sep) for m in messages).encode("utf-8") + sep.encode())
    return path


def test_sections_keys_status_and_identifiers(tmp_path):
    obx = (
        "OBX|1|TX|18782-3^FINDINGS^LN||Lungs are clear.~Heart normal.||||||F",
        "OBX|2|TX|19005-8^IMPRESSION^LN||No acute disease.||||||F",
        "OBX|3|ST|110180^Study Instance UID^DCM||1.2.3.4.5||||||F",
    )
    read = read_ris(_write(tmp_path / "a.hl7", oru(obx=obx)), "hl7")
    assert read.inputs == 1 and not read.rejects
    (report,) = read.reports
    assert report.id == f"{tmp_path / 'a.hl7'}#message=1"
    assert (report.accession, report.study_uid, report.status) == ("ACC9", "1.2.3.4.5", "final")
    assert report.sections["findings"] == "Lungs are clear. Heart normal."
    assert report.sections["impression"] == "No acute disease."
    assert report.issued == "2020-01-02T10:15:00.000000"
    expected = {
        ("id", "MRN4471"),
        ("id", "ALT992"),
        ("name", "DOE^JOHN^Q"),
        ("date", "19600102"),
        ("address", "12 ELM STREET"),
        ("address", "62701"),
        ("phone", "(555)123-4567"),
        ("name", "WHO^ANNA"),
        ("name", "KEEN^ROB"),
        ("id", "ACC9"),
    }
    assert expected <= set(report.identifiers)


def test_escapes_and_line_breaks_in_unsectioned_text(tmp_path):
    obx = (
        "OBX|1|FT|RPT^Report||FINDINGS: a \\T\\ b \\F\\ c\\.br\\IMPRESSION: 5 \\S\\ 6 \\E\\ \\X41\\ \\H\\ok\\N\\||||||F",
    )
    (report,) = read_ris(_write(tmp_path / "a.hl7", oru(obx=obx)), "hl7").reports
    assert report.sections is None
    assert report.text == "FINDINGS: a & b | c\nIMPRESSION: 5 ^ 6 \\ A ok"


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_ends_and_mllp_framing(tmp_path, sep):
    framed = "".join(f"\x0b{m.replace(chr(13), sep)}{sep}\x1c\r" for m in (oru("A1"), oru("A2")))
    (tmp_path / "feed.txt").write_bytes(framed.encode())
    read = read_ris(tmp_path / "feed.txt", "hl7")
    assert [r.accession for r in read.reports] == ["A1", "A2"]
    assert [r.id.rsplit("#", 1)[1] for r in read.reports] == ["message=1", "message=2"]


def test_batch_headers_and_folder(tmp_path):
    batch = "\r".join(["FHS|^~\\&|RIS", "BHS|^~\\&|RIS", oru("B1"), oru("B2"), "BTS|2", "FTS|1"])
    (tmp_path / "msgs").mkdir()
    (tmp_path / "msgs" / "batch.hl7").write_text(batch)
    (tmp_path / "msgs" / "one.msg").write_text(oru("B3"))
    (tmp_path / "msgs" / "noext").write_text(oru("B4"))
    (tmp_path / "msgs" / "README.md").write_text("feed notes")
    assert detect(tmp_path / "msgs") == "hl7"
    read = read_ris(tmp_path / "msgs")
    assert sorted(r.accession for r in read.reports) == ["B1", "B2", "B3", "B4"]
    assert read.inputs == 4


def test_correction_replaces_earlier_and_preliminary_never_wins_over_final(tmp_path):
    first = oru("C1", status="P", when="20200101080000")
    final = oru("C1", obx=("OBX|1|TX|&GDT^Body||Final text.||||||F",), status="F", when="20200101090000")
    late_prelim = oru("C1", obx=("OBX|1|TX|&GDT^Body||Prelim again.||||||P",), status="P", when="20200101100000")
    corrected = oru("C2", obx=("OBX|1|TX|&IMP^Imp||Corrected.||||||C",), status="C", when="20200103000000")
    original = oru("C2", obx=("OBX|1|TX|&IMP^Imp||Original.||||||F",), status="F", when="20200102000000")
    read = read_ris(_write(tmp_path / "a.hl7", first, final, late_prelim, corrected, original), "hl7")
    # "&GDT" is the report body (it may hold every section): left to the section parser; "&IMP" is the impression.
    assert {r.accession: r.text for r in read.reports} == {"C1": "Final text.", "C2": "IMPRESSION: Corrected."}
    assert {r.accession: r.status for r in read.reports} == {"C1": "final", "C2": "corrected"}
    assert sorted(r["reason"] for r in read.rejects) == ["superseded_report"] * 3
    assert read.inputs == 5 == len(read.reports) + len(read.rejects)


def test_cancelled_latest_version_cancels_the_report(tmp_path):
    messages = [oru("X1", when="20200101000000"), oru("X1", status="X", when="20200102000000"), oru("K1")]
    read = read_ris(_write(tmp_path / "a.hl7", *messages), "hl7")
    assert [r.accession for r in read.reports] == ["K1"]
    assert sorted(r["reason"] for r in read.rejects) == ["cancelled_report", "superseded_report"]


def test_bad_messages_never_stop_the_rest(tmp_path):
    no_obr = "\r".join(["MSH|^~\\&|RIS|HOSP|||20200101||ORU^R01|1|P|2.5", PID])
    adt = "\r".join(["MSH|^~\\&|RIS|HOSP|||20200101||ADT^A01|2|P|2.5", PID])
    no_key = oru("").replace("|PL|", "||")
    pdf_only = oru("P1", obx=("OBX|1|ED|PDF^Report||^application^pdf^Base64^JVBERi0=||||||F",))
    read = read_ris(_write(tmp_path / "a.hl7", no_obr, adt, no_key, pdf_only, oru("OK1")), "hl7")
    (tmp_path / "junk.hl7").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0binary")
    folder = read_ris(tmp_path, "hl7")
    assert [r.accession for r in read.reports] == ["OK1"]
    reasons = sorted(r["reason"] for r in read.rejects)
    assert reasons == ["malformed_report", "malformed_report", "not_a_report", "report_binary"]
    assert folder.inputs == read.inputs + 1 == len(folder.reports) + len(folder.rejects)
    for rej in folder.rejects:
        assert "MRN4471" not in rej["detail"] and "DOE" not in rej["detail"] and rej["kind"] == "report"


def test_several_obr_per_message_and_accession_fallback(tmp_path):
    fields = ["OBR", "2", "PL77", "", "CT^Head"] + [""] * 13 + ["ACC-FROM-OBR18"]  # OBR-3 empty, OBR-18 set
    obr2 = "|".join(fields)
    msg = oru("M1") + "\r" + obr2 + "\rOBX|1|TX|&GDT||Second report.||||||F"
    read = read_ris(_write(tmp_path / "a.hl7", msg), "hl7")
    assert [(r.accession, r.id.rsplit("#", 1)[1]) for r in read.reports] == [
        ("M1", "message=1/obr=1"),
        ("ACC-FROM-OBR18", "message=1/obr=2"),
    ]


def test_declared_charset_decodes_latin1(tmp_path):
    msg = oru(obx=("OBX|1|TX|&GDT||Lésion stable, côté gauche.||||||F",), msh18="8859/1")
    (tmp_path / "a.hl7").write_bytes(msg.encode("latin-1"))
    assert declared_charset(msg.encode("latin-1")) == "latin-1"
    (report,) = read_ris(tmp_path / "a.hl7", "hl7").reports
    assert report.text == "Lésion stable, côté gauche." and report.encoding == "iso8859-1"


def test_wrapped_report_line_continues_the_segment():
    messages = split_messages("MSH|^~\\&|A\nOBX|1|TX|&GDT||first half\nsecond half||||||F\n")
    assert messages == [["MSH|^~\\&|A", "OBX|1|TX|&GDT||first half\nsecond half||||||F"]]
