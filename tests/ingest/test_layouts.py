"""Archive layouts (dicom + report tables, mimic-cxr-jpg, openi, csv) on tiny trees written in tmp dirs."""

from __future__ import annotations

import gzip
import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medclip.cli import main
from medclip.ingest.archive import LAYOUTS, InlineReport, read_report_table, sections_text
from medclip.ingest.layouts.csv_table import csv_columns
from medclip.ingest.layouts.public import parse_openi_xml, scan_openi
from medclip.ingest.manifest import COLUMNS, REJECT_REASONS, build_manifest, check_patients, reconcile
from medclip.reports.sections import normalize_deid, parse_sections, sections_from_fields

REPORT = "FINDINGS: Lungs are clear. No effusion.\nIMPRESSION: No acute disease.\n"


def write_dicom(path: Path, *, acc: str, patient: str, study: str, **attrs) -> Path:
    """A 64x48 CR image with the given ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.AccessionNumber = "CR", patient, study, acc
    ds.SeriesInstanceUID, ds.ViewPosition = generate_uid(), "PA"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 64, 48
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64 * 48) % 4000 + 50).astype(np.uint16).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, *, bits: int = 8, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.arange(size[0] * size[1]).reshape(size)
    arr = (ramp % 250).astype(np.uint8) if bits == 8 else (ramp * 20).astype(np.uint16)
    Image.fromarray(arr).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")
    return path


def build(root: Path, layout: str, **kwargs):
    result = build_manifest(root, layout=layout, salt="s", show_progress=False, **kwargs)
    reconcile(result.meta)
    return result


def reasons(result) -> list[str]:
    return sorted(result.rejects["reason"])


# ---------------------------------------------------------------- registry, schema, reconciliation


def test_layouts_registered():
    assert {"dicom", "mimic-cxr-jpg", "openi", "csv"} <= set(LAYOUTS.list())


def test_manifest_columns_and_reconcile():
    required = {"image_path", "study_id", "patient_key", "split", "modality", "view", "findings", "impression"}
    assert required | {"text"} <= set(COLUMNS)
    reconcile({"counts": {"inputs": 3, "kept": 2, "rejected": 1}})
    with pytest.raises(RuntimeError, match="does not reconcile"):
        reconcile({"counts": {"inputs": 3, "kept": 2, "rejected": 0}})


def test_check_patients_rejects_later_conflict():
    imgs = [
        {"image_path": "a", "patient_id": "P1", "study_uid": "S"},
        {"image_path": "b", "patient_id": "P2", "study_uid": "S"},
        {"image_path": "c", "patient_id": "", "study_uid": "T"},
    ]
    kept, rejects = check_patients(imgs)
    assert [i["image_path"] for i in kept] == ["a"]
    assert [(r["path"], r["reason"]) for r in rejects] == [("b", "patient_conflict"), ("c", "no_patient")]


# ---------------------------------------------------------------- dicom + report tables


def test_dicom_txt_reports_by_accession_or_study_uid(tmp_path):
    write_dicom(tmp_path / "a/1.dcm", acc="A1", patient="P1", study="1.2.1")
    write_dicom(tmp_path / "b/1.dcm", acc="", patient="P2", study="1.2.2")
    (tmp_path / "deep/er").mkdir(parents=True)
    (tmp_path / "deep/er/A1.txt").write_text(REPORT)
    (tmp_path / "1.2.2.txt").write_text(REPORT)
    result = build(tmp_path, "dicom")
    assert result.meta["counts"]["kept"] == 2 and reasons(result) == []
    assert set(result.manifest["impression"]) == {"No acute disease."}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "folder"])
def test_dicom_reports_option(tmp_path, fmt):
    root = tmp_path / "arc"
    write_dicom(root / "1.dcm", acc="A1", patient="P1", study="1.2.1")
    write_dicom(root / "2.dcm", acc="", patient="P2", study="1.2.2")
    rows = [{"AccessionNumber": "A1", "report": REPORT}, {"AccessionNumber": "", "report": REPORT}]
    if fmt == "csv":  # key = accession; the row without one is a malformed report, 2.dcm has none
        pd.DataFrame(rows).to_csv(src := tmp_path / "reports.csv", index=False)
        expected = ["malformed_report", "no_report"]
    elif fmt == "jsonl":  # key = StudyInstanceUID; sections as columns; a broken line
        lines = [
            json.dumps({"StudyInstanceUID": s, "findings": "Clear.", "impression": "Normal."})
            for s in ("1.2.1", "1.2.2")
        ] + ["{not json"]
        (src := tmp_path / "reports.jsonl").write_text("\n".join(lines))
        expected = ["malformed_report"]
    else:
        (src := tmp_path / "txt").mkdir()
        (src / "A1.txt").write_text(REPORT)
        (src / "1.2.2.txt").write_text(REPORT)
        expected = []
    result = build(root, "dicom", reports=src)
    assert reasons(result) == expected
    assert result.meta["counts"]["kept"] == 2 - expected.count("no_report")


def test_report_table_errors_name_columns(tmp_path):
    pd.DataFrame({"id": ["1"], "body": ["x"]}).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(ValueError, match=r"it has: \['id', 'body'\]"):
        read_report_table(tmp_path / "r.csv")
    (tmp_path / "r.xlsx").write_text("x")
    with pytest.raises(ValueError, match="unknown format"):
        read_report_table(tmp_path / "r.xlsx")


def test_report_table_cp1252_cell_and_duplicate(tmp_path):
    body = b"accession,text\nA1,FINDINGS: caf\xe9 clear.\nA2,Normal chest.\nA2,Again.\n"
    (tmp_path / "r.csv").write_bytes(body)
    table, rejects = read_report_table(tmp_path / "r.csv")
    assert set(table) == {"A1", "A2"} and table["A2"].id.endswith("r.csv#row=3")
    assert (table["A1"].text, table["A1"].encoding) == ("FINDINGS: caf\xe9 clear.", "cp1252")
    assert [r["reason"] for r in rejects] == ["duplicate_report"]
    root = tmp_path / "arc"
    write_dicom(root / "1.dcm", acc="A1", patient="P1", study="1.2.1")
    result = build(root, "dicom", reports=tmp_path / "r.csv")
    assert reasons(result) == ["duplicate_report", "orphan_report"]
    assert result.manifest[["findings", "report_encoding"]].values.tolist() == [["caf\xe9 clear.", "cp1252"]]


# ---------------------------------------------------------------- mimic-cxr-jpg


def mimic_tree(root: Path, *, metadata: bool = True) -> Path:
    study = root / "files/p10/p10000032/s50414267"
    write_png(study / "d1.jpg")
    write_png(study / "d2.jpg")
    (root / "files/p10/p10000032/s50414267.txt").write_text(REPORT)
    write_png(root / "files/p11/p11000011/s51000011/d3.jpg")  # study without report
    (study / "index.html").write_text("<html/>")
    if metadata:
        rows = [
            ("d1", "10000032", "50414267", "PA"),
            ("d2", "10000032", "50414267", "LL"),
            ("d3", "11000011", "51000011", "AP"),
        ]
        df = pd.DataFrame(rows, columns=["dicom_id", "subject_id", "study_id", "ViewPosition"])
        with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as fh:
            df.to_csv(fh, index=False)
    return root


def test_mimic_layout(tmp_path):
    result = build(mimic_tree(tmp_path), "mimic-cxr-jpg")
    df = result.manifest
    assert len(df) == 2 and set(df["study_id"]) == {"50414267"} and sorted(df["view"]) == ["LATERAL", "PA"]
    assert set(df["sop_uid"]) == {"d1", "d2"} and set(df["modality"]) == {"DX"} and set(df["rows"]) == {64}
    assert reasons(result) == ["no_report"] and result.meta["counts"]["sidecar_files_skipped"] >= 2


def test_mimic_without_metadata_and_reports_table(tmp_path):
    root = mimic_tree(tmp_path / "m", metadata=False)
    pd.DataFrame({"study": ["s51000011"], "text": [REPORT]}).to_csv(tmp_path / "r.csv", index=False)
    result = build(root, "mimic-cxr-jpg", reports=tmp_path / "r.csv", verify_pixels=False)
    assert len(result.manifest) == 3 and result.manifest["view"].isna().all()
    assert result.manifest.groupby("study_id")["patient_key"].nunique().max() == 1


def test_mimic_path_and_metadata_conflicts(tmp_path):
    root = mimic_tree(tmp_path)
    write_png(root / "files/p10/stray.jpg")
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    meta.loc[meta["dicom_id"] == "d2", "study_id"] = "59999999"
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    result = build(root, "mimic-cxr-jpg")
    assert reasons(result) == ["layout_path", "metadata_conflict", "no_report"]


# ---------------------------------------------------------------- openi


def openi_xml(uid: str, sections: dict[str, str], images: list[str]) -> str:
    texts = "".join(f'<AbstractText Label="{k}">{v}</AbstractText>' for k, v in sections.items())
    parents = "".join(f'<parentImage id="{i}"><caption>PA and lateral</caption></parentImage>' for i in images)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="{uid}"/><MedlineCitation><Article>'
        f"<Abstract>{texts}</Abstract></Article></MedlineCitation>{parents}</eCitation>"
    )


OPENI_SECTIONS = {
    "COMPARISON": "None.",
    "INDICATION": "INDICATION: Positive TB test",  # the label repeated inside the text
    "FINDINGS": "The heart is normal.\n   There are no XXXX of effusion. COMPARISON : XXXX.",  # inline header
    "IMPRESSION": "1. Normal chest x-XXXX. 2. No change.",
}


def expected_section(label: str, raw: str) -> str | None:
    """The XML text with whitespace collapsed, de-id placeholders normalised and a repeated own label dropped."""
    text = " ".join(normalize_deid(raw).split())
    text = text[len(label) + 1 :].strip() if text.upper().startswith(label.upper() + ":") else text
    return text if any(c.isalnum() for c in text) else None


def test_openi_sections_roundtrip(tmp_path):
    (tmp_path / "ecgen-radiology").mkdir()
    xml = tmp_path / "ecgen-radiology/1.xml"
    xml.write_text(openi_xml("CXR1", OPENI_SECTIONS, ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]))
    write_png(tmp_path / "png/CXR1_1_IM-0001-3001.png", bits=16)
    write_png(tmp_path / "png/CXR1_1_IM-0001-4001.png")
    result = build(tmp_path, "openi")
    df = result.manifest
    assert len(df) == 2 and set(df["study_id"]) == {"CXR1"} and df["patient_key"].nunique() == 1
    parsed = sections_from_fields(scan_openi(tmp_path, show_progress=False).reports["CXR1"].sections)
    for label, raw in OPENI_SECTIONS.items():
        assert (parsed[label.lower()] or "").casefold() == (expected_section(label, raw) or "").casefold(), label
    assert parsed["findings"] == "The heart is normal. There are no ___ of effusion. COMPARISON : ___."
    assert df["impression"][0] == "1. Normal chest x-___. 2. No change."


def test_sections_text_skips_unknown_and_empty():
    text = sections_text({"findings": "  Clear.\n", "impression": "", "signature": "Dr X"})
    assert text == "FINDINGS: Clear."
    assert parse_sections(text)["impression"] is None


def test_section_fields_are_not_reparsed(tmp_path):
    # A findings column that mentions "IMPRESSION:" keeps it: the table's split into columns is the truth.
    (tmp_path / "r.csv").write_text(
        "study_uid,findings,impression\n1.2,Normal. CT: none. IMPRESSION: see above.,Clear.\n", encoding="utf-8"
    )
    table, rejects = read_report_table(tmp_path / "r.csv")
    assert not rejects and table["1.2"].text.splitlines()[0].startswith("FINDINGS: Normal.")
    sections = sections_from_fields(table["1.2"].sections)
    assert sections["findings"] == "Normal. CT: none. IMPRESSION: see above."
    assert sections["impression"] == "Clear."


def test_report_table_jsonl_gz(tmp_path):
    rows = [{"study_uid": "1.2", "text": REPORT}, {"study_uid": "1.3", "text": None}, [1, 2]]
    (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
    table, rejects = read_report_table(tmp_path / "r.jsonl.gz")
    assert table["1.2"].text == REPORT and table["1.3"].text == "" and table["1.2"].id.endswith("#line=1")
    assert [r["reason"] for r in rejects] == ["malformed_report"]


def test_openi_rejects(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x/1.xml").write_text(openi_xml("CXR1", {"FINDINGS": "Clear."}, ["IM1", "IM2"]))
    (tmp_path / "x/2.xml").write_text(openi_xml("CXR2", {"IMPRESSION": "Normal."}, []))
    (tmp_path / "x/3.xml").write_text("<eCitation><uId id='CXR3'></eCitation>")
    write_png(tmp_path / "IM1.png")
    write_png(tmp_path / "IM9.png")
    result = build(tmp_path, "openi")
    assert len(result.manifest) == 1
    assert reasons(result) == ["malformed_xml", "missing_file", "no_report", "orphan_report"]
    with pytest.raises(ValueError, match="drop --reports"):
        build_manifest(tmp_path, layout="openi", reports=tmp_path / "x", salt="s")


def _openi_reports(tmp_path: Path, limit: int | None) -> Path:
    spec = importlib.util.find_spec("torchxrayvision")  # importing it needs imageio; only its data file is used
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchxrayvision is not installed (its Open-i reports are the real-data sample)")
    tgz = Path(next(iter(spec.submodule_search_locations))) / "data" / "NLMCXR_reports.tgz"
    if not tgz.is_file():
        pytest.skip(f"{tgz} is absent")
    with tarfile.open(tgz) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".xml")][:limit]
        tar.extractall(tmp_path, members=members, filter="data")
    return tmp_path


def _check_real_openi(root: Path) -> int:
    scan = scan_openi(root, show_progress=False, verify_pixels=False)
    n = 0
    for uid, report in scan.reports.items():
        assert isinstance(report, InlineReport)
        got_uid, sections, _ = parse_openi_xml(Path(report.id))
        parsed = sections_from_fields(report.sections)  # what the manifest takes: the XML's own sections
        assert got_uid == uid
        for label, raw in sections.items():
            assert (parsed[label] or "").casefold() == (expected_section(label, raw) or "").casefold(), report.id
            n += 1
    assert {r["reason"] for r in scan.rejects} == {"missing_file"}  # no PNGs ship with the reports
    return n


def test_openi_real_reports_sample(tmp_path):
    assert _check_real_openi(_openi_reports(tmp_path, 300)) >= 1000


@pytest.mark.slow
def test_openi_real_reports_all(tmp_path):
    root = _openi_reports(tmp_path, None)
    assert _check_real_openi(root) >= 15000
    result = build(root, "openi", verify_pixels=False)
    assert result.meta["counts"]["kept"] == 0 and result.meta["counts"]["inputs"] > 7000


# ---------------------------------------------------------------- csv


def test_csv_autodetect_relative_absolute_and_two_image_columns(tmp_path):
    write_png(tmp_path / "img/a_pa.png")
    write_png(tmp_path / "img/a_lat.png", bits=16)
    abs_png = write_png(tmp_path / "elsewhere/b.jpg")
    df = pd.DataFrame(
        {
            "Patient ID": ["P1", "P2"],
            "Study": ["S1", "S2"],
            "frontal_path": ["img/a_pa.png", abs_png],
            "lateral_path": ["img/a_lat.png", ""],
            "Report": [REPORT, "IMPRESSION: Normal."],
            "View": ["PA", "ap"],
        }
    )
    df.to_csv(tmp_path / "cases.csv", index=False)
    roles = csv_columns(tmp_path / "cases.csv", list(df.columns), None)
    assert roles["image"] == ["frontal_path", "lateral_path"] and roles["patient"] == ["Patient ID"]
    result = build(tmp_path, "csv")  # the folder holds exactly one CSV
    assert len(result.manifest) == 3 and reasons(result) == []
    assert sorted(result.manifest["view"]) == ["AP", "PA", "PA"] and set(result.manifest["modality"]) == {"DX"}


def test_csv_explicit_columns_report_paths_and_dicom(tmp_path):
    write_png(tmp_path / "a.png")
    write_dicom(tmp_path / "b.dcm", acc="A2", patient="ignored", study="1.2.2")
    (tmp_path / "r1.txt").write_text(REPORT)
    df = pd.DataFrame({"pic": ["a.png", "b.dcm"], "who": ["P1", "P2"], "rep": ["r1.txt", "r1.txt"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    result = build(
        tmp_path / "t.csv", "csv", layout_options={"columns": {"image": "pic", "patient": "who", "report_path": "rep"}}
    )
    assert len(result.manifest) == 2 and set(result.manifest["modality"]) == {"DX", "CR"}
    with pytest.raises(ValueError, match=r"no column \['nope'\].*columns \['pic', 'who', 'rep'\]"):
        build_manifest(tmp_path / "t.csv", layout="csv", salt="s", layout_options={"columns": {"image": "nope"}})
    with pytest.raises(ValueError, match="unknown CSV column role"):
        build_manifest(tmp_path / "t.csv", layout="csv", salt="s", layout_options={"columns": {"img": "pic"}})


def test_csv_missing_roles_say_which_columns_exist(tmp_path):
    pd.DataFrame({"image": ["a.png"], "notes": ["x"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"no patient column found among \['image', 'notes'\]"):
        build_manifest(tmp_path / "t.csv", layout="csv", salt="s")
    (tmp_path / "u.csv").write_text("x")
    with pytest.raises(ValueError, match="CSV files there: t.csv, u.csv"):
        build_manifest(tmp_path, layout="csv", salt="s")


def test_csv_modality_column_filters(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    df = pd.DataFrame(
        {"image": ["a.png", "b.png"], "patient": ["P1", "P2"], "text": [REPORT, REPORT], "modality": ["cr", "US"]}
    )
    df.to_csv(tmp_path / "t.csv", index=False)
    assert reasons(build(tmp_path / "t.csv", "csv")) == ["modality", "orphan_report"]


# ---------------------------------------------------------------- CLI


def test_cli_manifest_csv_layout(tmp_path, capsys):
    write_png(tmp_path / "a.png")
    pd.DataFrame(
        {"png": ["a.png", "gone.png"], "patient": ["P1", "P1"], "text": [REPORT, REPORT], "study": ["S1", "S1"]}
    ).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "out"
    argv = ["-q", "manifest", str(tmp_path / "t.csv"), "--layout", "csv", "--out", str(out), "--salt", "s"]
    assert main([*argv, "--column", "image=png"]) == 0
    printed = capsys.readouterr().out
    assert "inputs = kept + rejected: 2 = 1 + 1" in printed and "rejected missing_file: 1" in printed
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert list(rejects.columns) == ["path", "kind", "reason", "detail"] and len(rejects) == 1
    assert set(rejects["reason"]) <= set(REJECT_REASONS) | {"missing_file"}
    assert main([*argv, "--column", "image"]) == 2
    assert "use ROLE=COLUMN" in capsys.readouterr().err
    assert main(["-q", "manifest", str(tmp_path), "--layout", "dicom", "--out", str(out), "--column", "a=b"]) == 2


def test_cli_manifest_reports_option(tmp_path, capsys):
    write_dicom(tmp_path / "arc/1.dcm", acc="A1", patient="P1", study="1.2.1")
    (tmp_path / "r.jsonl").write_text(json.dumps({"accession": "A1", "text": REPORT}) + "\n")
    argv = [
        "-q",
        "manifest",
        str(tmp_path / "arc"),
        "--out",
        str(tmp_path / "o"),
        "--reports",
        str(tmp_path / "r.jsonl"),
    ]
    assert main(argv) == 0
    assert "inputs = kept + rejected: 1 = 1 + 0" in capsys.readouterr().out
