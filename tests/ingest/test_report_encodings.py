"""Reports in legacy encodings are kept with their exact text and a ``report_encoding``; binary reports are rejected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medclip.cli import main
from medclip.ingest.manifest import COLUMNS, build_manifest, read_manifest, reconcile, write_manifest
from medclip.ingest.tables import manifest_table

FINDINGS = "Patient José Müller, temp 38.5°C. Lungs are clear – no effusion."
REPORT = f"FINDINGS: {FINDINGS}\nIMPRESSION: No acute disease.\n"
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(40)
RAMP = (np.arange(64 * 48).reshape(64, 48) % 250).astype(np.uint8)


def write_dicom(path: Path, *, acc: str, patient: str, study: str) -> None:
    """A 64x48 CR image with the given ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.AccessionNumber = "CR", patient, study, acc
    ds.SeriesInstanceUID = generate_uid()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", *RAMP.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (RAMP.astype(np.uint16) * 16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RAMP).save(path)


def _build(root: Path, layout: str = "dicom", **kwargs):
    result = build_manifest(root, layout=layout, salt="s", show_progress=False, **kwargs)
    reconcile(result.meta)
    return result


def _by_accession(result) -> dict[str, tuple[str, str]]:
    df = result.manifest
    return {a: (f, e) for a, f, e in zip(df["accession"], df["findings"], df["report_encoding"], strict=True)}


def test_dicom_txt_reports_in_every_encoding(tmp_path):
    reports = {"A1": REPORT.encode(), "A2": REPORT.encode("cp1252"), "A3": REPORT.encode("utf-16"), "A4": PNG_BYTES}
    for i, (acc, raw) in enumerate(reports.items()):
        write_dicom(tmp_path / f"{acc}.dcm", acc=acc, patient=f"P{i}", study=f"1.2.{i}")
        (tmp_path / f"{acc}.txt").write_bytes(raw)
    result = _build(tmp_path)
    assert _by_accession(result) == {"A1": (FINDINGS, "utf-8"), "A2": (FINDINGS, "cp1252"), "A3": (FINDINGS, "utf-16")}
    rejects = result.rejects.set_index("reason")
    assert sorted(rejects.index) == ["report_binary", "report_rejected"]
    assert rejects.loc["report_binary", "path"].endswith("A4.txt") and "PNG" in rejects.loc["report_binary", "detail"]
    counts = result.meta["counts"]
    assert (counts["inputs"], counts["kept"], counts["rejected"]) == (4, 3, 1)
    assert counts["report_encodings"] == {"utf-8": 1, "cp1252": 1, "utf-16": 1}
    assert list(result.manifest.columns) == list(COLUMNS)


def test_legacy_fallback_is_counted_in_the_log(tmp_path, caplog):
    write_dicom(tmp_path / "1.dcm", acc="A1", patient="P1", study="1.2.1")
    (tmp_path / "A1.txt").write_bytes(REPORT.encode("cp1252"))
    caplog.set_level("INFO", logger="medclip.ingest.manifest")
    _build(tmp_path)
    assert "1 of 1 reports needed a legacy-encoding fallback" in caplog.text
    assert "José" not in caplog.text and "Müller" not in caplog.text  # no report text in logs


@pytest.mark.parametrize(
    ("name", "encode", "encoding"),
    [
        (
            "r.csv",
            lambda rows: ("accession,text\n" + "".join(f'{a},"{t}"\n' for a, t in rows)).encode("cp1252"),
            "cp1252",
        ),
        (
            "r.tsv",
            lambda rows: ("accession\ttext\n" + "".join(f"{a}\t{t}\n" for a, t in rows)).encode("utf-16"),
            "utf-16",
        ),
        (
            "r.jsonl",
            lambda rows: "\n".join(json.dumps({"accession": a, "text": t}, ensure_ascii=False) for a, t in rows).encode(
                "cp1252"
            ),
            "cp1252",
        ),
    ],
)
def test_report_tables_in_legacy_encodings(tmp_path, name, encode, encoding):
    text = REPORT.replace("\n", " ")
    (tmp_path / name).write_bytes(encode([("A1", text), ("A2", text)]))
    root = tmp_path / "arc"
    write_dicom(root / "1.dcm", acc="A1", patient="P1", study="1.2.1")
    result = _build(root, reports=tmp_path / name)
    assert _by_accession(result) == {"A1": (FINDINGS, encoding)}
    assert sorted(result.rejects["reason"]) == ["orphan_report"]
    assert result.rejects["path"].iloc[0].endswith(("#row=3", "#line=2"))  # row ids as before


def test_binary_report_table_is_an_input_error(tmp_path):
    (tmp_path / "r.csv").write_bytes(PNG_BYTES)
    write_dicom(tmp_path / "arc" / "1.dcm", acc="A1", patient="P1", study="1.2.1")
    with pytest.raises(ValueError, match=r"r\.csv: binary data \(a PNG image\)"):
        _build(tmp_path / "arc", reports=tmp_path / "r.csv")


def test_csv_layout_inline_and_report_file_encodings(tmp_path):
    for name in ("a", "b", "c"):
        write_png(tmp_path / f"{name}.png")
    (tmp_path / "b.txt").write_bytes(REPORT.encode("utf-16"))
    (tmp_path / "c.txt").write_bytes(PNG_BYTES)
    table = (
        "image_path,patient_id,accession,report,report_path\n"
        f'a.png,P1,A1,"{REPORT}",\n'
        "b.png,P2,A2,,b.txt\n"
        "c.png,P3,A3,,c.txt\n"
    )
    (tmp_path / "index.csv").write_bytes(table.encode("cp1252"))
    result = _build(tmp_path / "index.csv", layout="csv", layout_options={"columns": {"study": "accession"}})
    df = result.manifest.set_index("study_id")
    assert df.loc["A1", ["findings", "report_encoding"]].tolist() == [FINDINGS, "cp1252"]  # the table's encoding
    assert df.loc["A2", ["findings", "report_encoding"]].tolist() == [FINDINGS, "utf-16"]  # the file's own
    assert sorted(result.rejects["reason"]) == ["report_binary", "report_rejected"]
    assert result.meta["counts"]["report_encodings"] == {"cp1252": 1, "utf-16": 1}


def test_openi_reports_are_recorded_as_xml(tmp_path):
    xml = '<?xml version="1.0" encoding="ISO-8859-1"?><eCitation><uId id="CXR1"/><Abstract>'
    xml += f'<AbstractText Label="FINDINGS">{FINDINGS}</AbstractText></Abstract><parentImage id="IM1"/></eCitation>'
    (tmp_path / "1.xml").write_bytes(xml.encode("latin-1", errors="replace"))
    write_png(tmp_path / "IM1.png")
    result = _build(tmp_path, layout="openi")
    assert result.manifest[["report_encoding"]].values.tolist() == [["xml"]]
    assert "38.5°C" in result.manifest["findings"][0]


def test_manifest_without_report_encoding_still_loads(tmp_path):
    write_dicom(tmp_path / "arc" / "1.dcm", acc="A1", patient="P1", study="1.2.1")
    (tmp_path / "arc" / "A1.txt").write_text(REPORT, encoding="utf-8")
    out = write_manifest(_build(tmp_path / "arc"), tmp_path / "m")
    df, _ = read_manifest(out)
    assert df["report_encoding"].tolist() == ["utf-8"]
    shutil.rmtree(out / "manifest.parquet")  # a single file without the column, as an older medclip wrote
    df.drop(columns="report_encoding").to_parquet(out / "manifest.parquet", index=False)
    old, _ = read_manifest(out)
    assert "report_encoding" not in old.columns
    assert manifest_table(out, text_policy="findings_impression").rows["report"].str.contains("38.5°C").all()


def test_cli_label_reads_a_cp1252_table(tmp_path, capsys):
    rows = pd.DataFrame({"id": ["r1", "r2"], "text": ["Dr. José Müller: small left pleural effusion.", "Temp 39°C."]})
    (tmp_path / "r.csv").write_bytes(rows.to_csv(index=False).encode("cp1252"))
    assert main(["label", str(tmp_path / "r.csv"), "--out", str(tmp_path / "labels.csv")]) == 0
    out = pd.read_csv(tmp_path / "labels.csv", dtype=str, keep_default_na=False)
    assert out["id"].tolist() == ["r1", "r2"] and out["Pleural Effusion"].tolist() == ["1", ""]
