"""Bad-input corpus: every kind of malformed input becomes a reject with its reason code; nothing crashes.

Each case writes one bad input (plus whatever it needs) into a tmp archive next to a good study, builds the
manifest with its layout, and checks that the rejects are exactly the expected reasons, that each bad path is among
them, and that ``inputs = kept + rejected``. ``test_all_kinds_in_one_archive`` puts every case of a layout into one
archive. Outcomes that are *not* rejects are documented by cases with no expected reason:

- an RGB (``RGB``/``YBR``) DICOM is kept and converted to luminance; only ``PALETTE COLOR`` is rejected (``rgb``);
- a 16-bit PNG is kept (min-max scaled); a PNG saved under a ``.jpg`` name is kept (Pillow reads the content);
- a CR image object whose PixelData is missing is ``truncated`` (an image object cut short), while a non-image SOP
  class without pixels is ``no_pixel_data``; a zero-byte file is ``truncated``;
- a report in Latin-1, cp1252 or UTF-16 is kept (``medclip.io.text.decode_text``); only binary data is
  ``report_binary``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from medclip.ingest.manifest import REJECT_REASONS, build_manifest
from medclip.io.dicom import REASONS

REPORT = "FINDINGS: Lungs are clear.\nIMPRESSION: No acute disease.\n"
CR_IMAGE, RAW_DATA = "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.66"


@dataclass
class Built:
    expected: list[tuple[str, str]] = field(default_factory=list)  # (fragment of the reject path, reason)
    kept: int = 0
    rows: list[dict] = field(default_factory=list)  # csv rows / MIMIC metadata rows


@dataclass
class Ids:
    acc: str
    patient: str
    study: str


def ids(tag: str) -> Ids:
    h = hashlib.sha1(tag.encode()).hexdigest()
    return Ids(acc=f"A{h[:10]}", patient=f"P{h[10:20]}", study=f"1.2.826.0.1.{int(h[20:32], 16)}")


def ramp(h: int = 64, w: int = 48) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 4000 + 50).astype(np.uint16)


def dcm(path: Path, tag: str, arr: np.ndarray | None = None, **attrs) -> Path:
    """A CR DICOM with ids from ``tag``; ``arr`` uint16 [H, W] (default: a ramp); ``attrs`` override the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    i, arr = ids(tag), ramp() if arr is None else arr
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CR_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.AccessionNumber = "CR", i.patient, i.study, i.acc
    ds.SeriesInstanceUID = generate_uid()
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.Rows, ds.Columns, ds.PixelData = *arr.shape, arr.astype(np.uint16).tobytes()
    for key, value in attrs.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def png(path: Path, *, bits: int = 8, size: tuple[int, int] = (64, 48), fmt: str = "PNG", const: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.arange(size[0] * size[1]).reshape(size) * (0 if const else 1)
    arr = (arr % 250).astype(np.uint8) if bits == 8 else (arr * 20).astype(np.uint16)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def report(root: Path, tag: str, text: str | bytes = REPORT, name: str | None = None) -> Path:
    path = root / tag / f"{name or ids(tag).acc}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ---------------------------------------------------------------- dicom layout cases


def good_dicom(root: Path, tag: str) -> Built:
    dcm(root / tag / "1.dcm", tag)
    report(root, tag)
    return Built(kept=1)


def image_case(reason: str, make: Callable[[Path, str], Path]) -> Callable[[Path, str], Built]:
    """A case whose single bad image (no report, so no orphan) is rejected with ``reason``."""

    def build(root: Path, tag: str) -> Built:
        return Built([(make(root / tag, tag).name, reason)])

    return build


def _cut(folder: Path, tag: str, keep: int) -> Path:
    data = dcm(folder / "whole.dcm", tag).read_bytes()
    (folder / "whole.dcm").unlink()
    (cut := folder / f"cut{keep}.dcm").write_bytes(data[:keep])
    return cut


def _undecodable(folder: Path, tag: str) -> Path:
    path = dcm(folder / "jpeg.dcm", tag, PixelData=encapsulate([b"\xff\xd8 not a jpeg" * 9]))
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit  # a JPEG syntax UID over bytes that are no JPEG stream
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path


def _nan(folder: Path, tag: str) -> Path:
    values = ramp().astype(np.float32)
    values[3, 3] = np.nan
    return dcm(folder / "nan.dcm", tag, PixelData=None, BitsAllocated=32, FloatPixelData=values.tobytes())


def _text(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def _empty_dir(folder: Path, tag: str) -> Path:
    (folder / "series.dcm").mkdir(parents=True)
    return folder / "series.dcm"


def _broken_link(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True)
    os.symlink(folder / "gone.dcm", folder / "link.dcm")  # unreadable input; root reads everything, so a dangling link
    return folder / "link.dcm"


def report_case(reason: str | None, text: str | bytes) -> Callable[[Path, str], Built]:
    """A good image whose report is bad: the report is rejected with ``reason`` and the image with report_rejected
    (``reason`` None: an odd report that is kept)."""

    def build(root: Path, tag: str) -> Built:
        dcm(root / tag / "1.dcm", tag)
        name = report(root, tag, text).name
        return Built([(name, reason), ("1.dcm", "report_rejected")]) if reason else Built(kept=1)

    return build


def duplicate_sop(root: Path, tag: str) -> Built:
    first = dcm(root / tag / "a.dcm", tag)
    (root / tag / "b.dcm").write_bytes(first.read_bytes())  # the same instance exported twice
    report(root, tag)
    return Built([("b.dcm", "duplicate_sop")], kept=1)


def two_patient_ids(root: Path, tag: str) -> Built:
    dcm(root / tag / "a.dcm", tag)
    dcm(root / tag / "b.dcm", tag, PatientID=ids(tag + "other").patient)
    report(root, tag)
    return Built([("b.dcm", "patient_conflict")], kept=1)


def orphan_report(root: Path, tag: str) -> Built:
    return Built([(report(root, tag).name, "orphan_report")])


def duplicate_report(root: Path, tag: str) -> Built:
    dcm(root / tag / "1.dcm", tag)
    for sub in ("a", "b"):  # two reports named by the same accession, in two folders: the second is rejected
        report(root / tag, sub, name=ids(tag).acc)
    return Built([(f"b/{ids(tag).acc}.txt", "duplicate_report")], kept=1)


def rgb_dicom(root: Path, tag: str) -> Built:
    rgb = np.stack([ramp().astype(np.uint8)] * 3, axis=-1)
    dcm(
        root / tag / "rgb.dcm",
        tag,
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelData=rgb.tobytes(),
    )
    report(root, tag)
    return Built(kept=1)  # kept: converted to luminance


def _png_bytes() -> bytes:
    out = io.BytesIO()
    Image.fromarray((np.arange(64 * 48).reshape(64, 48) % 250).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


DICOM_CASES: dict[str, Callable[[Path, str], Built]] = {
    "truncated_pixels": image_case("truncated", lambda f, t: _cut(f, t, -500)),
    "truncated_header": image_case("truncated", lambda f, t: _cut(f, t, 300)),
    "zero_byte_file": image_case("truncated", lambda f, t: _text(f, "zero.dcm", b"")),
    "text_named_dcm": image_case("not_dicom", lambda f, t: _text(f, "note.dcm", b"a plain text note\n" * 20)),
    "random_bytes": image_case("not_dicom", lambda f, t: _text(f, "junk.dcm", bytes(range(256)) * 4)),
    "png_named_dcm": image_case("not_dicom", lambda f, t: _text(f, "img.dcm", _png_bytes())),
    "png_in_dicom_tree": image_case("not_dicom", lambda f, t: _text(f, "img.png", _png_bytes())),
    "no_pixel_data": image_case(
        "no_pixel_data", lambda f, t: dcm(f / "raw.dcm", t, SOPClassUID=RAW_DATA, PixelData=None)
    ),
    "image_without_pixels": image_case("truncated", lambda f, t: dcm(f / "nopix.dcm", t, PixelData=None)),
    "jpeg_syntax_raw_bytes": image_case("undecodable", _undecodable),
    "zero_rows": image_case("empty_image", lambda f, t: dcm(f / "zero.dcm", t, Rows=0, Columns=0, PixelData=b"")),
    "one_by_one": image_case("tiny_image", lambda f, t: dcm(f / "dot.dcm", t, np.array([[7]], np.uint16))),
    "nan_pixels": image_case("nonfinite", _nan),
    "constant_pixels": image_case("constant_image", lambda f, t: dcm(f / "flat.dcm", t, np.full((64, 48), 300))),
    "palette_color": image_case("rgb", lambda f, t: dcm(f / "pal.dcm", t, PhotometricInterpretation="PALETTE COLOR")),
    "modality_us": image_case("modality", lambda f, t: dcm(f / "us.dcm", t, Modality="US")),
    # an SR among the images is a report input (medclip.ingest.ris), not an image: alone, it is an orphan report
    "sr_without_images": image_case("orphan_report", lambda f, t: dcm(f / "sr.dcm", t, Modality="SR", PixelData=None)),
    "modality_seg": image_case("modality", lambda f, t: dcm(f / "seg.dcm", t, Modality="SEG")),
    "modality_rtstruct": image_case("modality", lambda f, t: dcm(f / "rts.dcm", t, Modality="RTSTRUCT")),
    "modality_missing": image_case("modality", lambda f, t: dcm(f / "nomod.dcm", t, Modality=None)),
    "no_patient_id": image_case("no_patient", lambda f, t: dcm(f / "anon.dcm", t, PatientID=None)),
    "study_without_report": image_case("no_report", lambda f, t: dcm(f / "lonely.dcm", t)),
    "directory_named_dcm": image_case("unreadable", _empty_dir),
    "broken_symlink": image_case("missing_file", _broken_link),
    "empty_report": report_case("empty_report", ""),
    "header_only_report": report_case("empty_report", "FINDINGS:\nIMPRESSION:\n"),
    "placeholder_only_report": report_case("empty_report", "FINDINGS: XXXX.\nIMPRESSION: ___\n"),
    "latin1_report_kept": report_case(None, "FINDINGS: Caf\xe9 clear.\nIMPRESSION: Normal.".encode("latin-1")),
    "cp1252_report_kept": report_case(None, "FINDINGS: 38.5\xb0C \u2013 clear.\nIMPRESSION: Normal.".encode("cp1252")),
    "utf16_report_kept": report_case(None, REPORT.encode("utf-16")),
    "png_saved_as_report": report_case("report_binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)),
    "random_bytes_report": report_case("report_binary", np.random.default_rng(0).bytes(512)),
    "duplicate_sop_uid": duplicate_sop,
    "study_under_two_patient_ids": two_patient_ids,
    "orphan_report": orphan_report,
    "duplicate_report": duplicate_report,
    "rgb_dicom_kept": rgb_dicom,
}


# ---------------------------------------------------------------- csv layout cases


def csv_row(tag: str, image: str = "", text: str = REPORT, **extra) -> dict:
    i = ids(tag)
    return {"image_path": image, "patient_id": i.patient, "study_id": i.acc, "report": text, "report_path": ""} | extra


def good_csv(root: Path, tag: str) -> Built:
    png(root / tag / "a.png")
    return Built(kept=1, rows=[csv_row(tag, f"{tag}/a.png")])


def csv_image_case(reason: str | None, make: Callable[[Path], Path | None]) -> Callable[[Path, str], Built]:
    """One CSV row whose image is ``make(folder)`` (None: no file written); no report unless it is kept."""

    def build(root: Path, tag: str) -> Built:
        made = make(root / tag)
        name = made.name if made is not None else "missing.png"
        row = csv_row(tag, f"{tag}/{name}", text=REPORT if reason is None else "")
        return Built([(name, reason)] if reason else [], kept=0 if reason else 1, rows=[row])

    return build


def _bad_png(folder: Path, name: str, data: Callable[[bytes], bytes]) -> Path:
    good = png(folder / "tmp.png").read_bytes()
    (folder / "tmp.png").unlink()
    return _text(folder, name, data(good))


def csv_missing_report(root: Path, tag: str) -> Built:
    png(root / tag / "a.png")
    return Built([(f"{tag}/a.png", "no_report")], rows=[csv_row(tag, f"{tag}/a.png", text="")])


def csv_no_image(root: Path, tag: str) -> Built:
    return Built([("#row=", "no_image")], rows=[csv_row(tag, "", text="")])


def csv_non_utf8(root: Path, tag: str) -> Built:
    png(root / tag / "a.png")
    text = "FINDINGS: Caf\udce9 clear."  # surrogate-escaped latin-1 byte: the CSV is written with surrogateescape
    return Built(kept=1, rows=[csv_row(tag, f"{tag}/a.png", text=text)])  # that line decodes as cp1252


def csv_binary_report_file(root: Path, tag: str) -> Built:
    png(root / tag / "a.png")
    _text(root / tag, "scan.txt", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
    row = csv_row(tag, f"{tag}/a.png", text="", report_path=f"{tag}/scan.txt")
    return Built([("scan.txt", "report_binary"), ("a.png", "report_rejected")], rows=[row])


def csv_duplicate_image(root: Path, tag: str) -> Built:
    png(root / tag / "a.png")
    rows = [csv_row(tag, f"{tag}/a.png"), csv_row(tag, f"{tag}/a.png")]
    return Built([("a.png", "duplicate_sop")], kept=1, rows=rows)


def csv_missing_report_file(root: Path, tag: str) -> Built:
    png(root / tag / "a.png")
    row = csv_row(tag, f"{tag}/a.png", text="", report_path=f"{tag}/gone.txt")
    return Built([("gone.txt", "report_unreadable"), ("a.png", "report_rejected")], rows=[row])


def csv_blank_patient(root: Path, tag: str) -> Built:
    png(root / tag / "a.png")
    return Built([("a.png", "no_patient")], rows=[csv_row(tag, f"{tag}/a.png", text="", patient_id="")])


CSV_CASES: dict[str, Callable[[Path, str], Built]] = {
    "csv_missing_image_file": csv_image_case("missing_file", lambda f: None),
    "csv_corrupt_png": csv_image_case("unreadable", lambda f: _bad_png(f, "junk.png", lambda b: b[:8] + b"\0" * 64)),
    "csv_truncated_png": csv_image_case("truncated", lambda f: _bad_png(f, "cut.png", lambda b: b[:-40])),
    "csv_truncated_jpeg": csv_image_case(
        "truncated", lambda f: _text(f, "cut.jpg", png(f / "x.jpg", fmt="JPEG").read_bytes()[:300])
    ),
    "csv_tiny_png": csv_image_case("tiny_image", lambda f: png(f / "icon.png", size=(16, 16))),
    "csv_constant_png": csv_image_case("constant_image", lambda f: png(f / "flat.png", const=True)),
    "csv_16bit_png_kept": csv_image_case(None, lambda f: png(f / "deep.png", bits=16)),
    "csv_png_named_jpg_kept": csv_image_case(None, lambda f: png(f / "wrong.jpg")),
    "csv_missing_report": csv_missing_report,
    "csv_row_without_image": csv_no_image,
    "csv_non_utf8_report_kept": csv_non_utf8,
    "csv_binary_report_file": csv_binary_report_file,
    "csv_same_image_twice": csv_duplicate_image,
    "csv_missing_report_file": csv_missing_report_file,
    "csv_blank_patient": csv_blank_patient,
}


# ---------------------------------------------------------------- openi and mimic-cxr-jpg cases


def openi_xml(uid: str, sections: dict[str, str], images: list[str]) -> str:
    texts = "".join(f'<AbstractText Label="{k}">{v}</AbstractText>' for k, v in sections.items())
    parents = "".join(f'<parentImage id="{i}"/>' for i in images)
    return f'<eCitation><uId id="{uid}"/><Abstract>{texts}</Abstract>{parents}</eCitation>'


def good_openi(root: Path, tag: str, sections: dict | None = None, image: bool = True) -> Built:
    images = [f"{tag}_IM-1"] if image else []
    _text(root / tag, "r.xml", openi_xml(f"CXR-{tag}", sections or {"FINDINGS": "Clear."}, images).encode())
    for image_id in images:
        png(root / tag / f"{image_id}.png")
    return Built(kept=len(images))


def openi_missing_png(root: Path, tag: str) -> Built:
    _text(root / tag, "r.xml", openi_xml(f"CXR-{tag}", {"FINDINGS": "Clear."}, [f"{tag}_IM-9"]).encode())
    return Built([(f"{tag}_IM-9", "missing_file"), ("r.xml", "orphan_report")])


OPENI_CASES: dict[str, Callable[[Path, str], Built]] = {
    "openi_xml_without_images": lambda r, t: Built([(good_openi(r, t, image=False) and "r.xml", "orphan_report")]),
    "openi_malformed_xml": lambda r, t: Built([(_text(r / t, "bad.xml", b"<eCitation><uId").name, "malformed_xml")]),
    "openi_listed_png_missing": openi_missing_png,
    "openi_unlisted_png": lambda r, t: Built([(png(r / t / "stray.png").name, "no_report")]),
    "openi_empty_sections": lambda r, t: Built(good_openi(r, t, {"FINDINGS": " ", "IMPRESSION": ""}).expected
                                               + [("r.xml", "empty_report"), (f"{t}_IM-1", "report_rejected")]),
}  # fmt: skip


def mimic_ids(tag: str) -> tuple[str, str]:
    h = int(hashlib.sha1(tag.encode()).hexdigest()[:8], 16)
    return str(10000000 + h % 9000000), str(50000000 + h % 9000000)


def good_mimic(root: Path, tag: str) -> Built:
    subject, study = mimic_ids(tag)
    folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
    png(folder / f"s{study}" / f"{tag}.jpg", fmt="JPEG")
    (folder / f"s{study}.txt").write_text(REPORT)
    return Built(kept=1, rows=[{"dicom_id": tag, "subject_id": subject, "study_id": study, "ViewPosition": "PA"}])


def mimic_conflict(root: Path, tag: str) -> Built:
    built = good_mimic(root, tag)
    built.rows[0]["study_id"] = "59999999"
    return Built([(f"{tag}.jpg", "metadata_conflict"), (".txt", "orphan_report")], rows=built.rows)


def mimic_cut_jpeg(root: Path, tag: str) -> Built:
    subject, study = mimic_ids(tag)
    path = png(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / "cut.jpg", fmt="JPEG")
    path.write_bytes(path.read_bytes()[:300])
    return Built([("cut.jpg", "truncated")])


MIMIC_CASES: dict[str, Callable[[Path, str], Built]] = {
    "mimic_jpg_outside_study_folder": lambda r, t: Built([(png(r / "files/p10" / f"{t}.jpg").name, "layout_path")]),
    "mimic_metadata_conflict": mimic_conflict,
    "mimic_truncated_jpeg": mimic_cut_jpeg,
}


# ---------------------------------------------------------------- harness

LAYOUT_CASES = {"dicom": DICOM_CASES, "csv": CSV_CASES, "openi": OPENI_CASES, "mimic-cxr-jpg": MIMIC_CASES}
GOOD = {"dicom": good_dicom, "csv": good_csv, "openi": good_openi, "mimic-cxr-jpg": good_mimic}
ALL_CASES = [(layout, name) for layout, cases in LAYOUT_CASES.items() for name in cases]


def finish(root: Path, layout: str, built: list[Built]) -> Path:
    """Write the CSV / metadata file a layout needs; return what build_manifest is pointed at."""
    rows = [row for b in built for row in b.rows]
    if layout == "csv":
        out = io.StringIO()  # the csv module, not pandas: a cell may hold a surrogate-escaped non-UTF-8 byte
        writer = csv.DictWriter(out, fieldnames=list(csv_row("x")))
        writer.writeheader()
        writer.writerows(rows)
        text = out.getvalue()
        (root / "index.csv").write_bytes(text.encode("utf-8", "surrogateescape"))
        return root / "index.csv"
    if layout == "mimic-cxr-jpg":
        pd.DataFrame(rows).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    return root


def run_and_check(root: Path, layout: str, built: list[Built]) -> None:
    result = build_manifest(finish(root, layout, built), layout=layout, salt="s", show_progress=False)
    counts, rejects = result.meta["counts"], result.rejects
    expected = [reason for b in built for _, reason in b.expected]
    assert sorted(rejects["reason"]) == sorted(expected), rejects[["path", "reason", "detail"]].to_string()
    for fragment, reason in (e for b in built for e in b.expected):
        hits = rejects[(rejects["reason"] == reason) & rejects["path"].str.contains(fragment, regex=False)]
        assert len(hits) >= 1, (fragment, reason, rejects.to_string())
    assert counts["kept"] == sum(b.kept for b in built)
    assert counts["inputs"] == counts["kept"] + counts["rejected"]
    assert set(rejects["reason"]) <= set(REASONS) | set(REJECT_REASONS)
    assert set(rejects["kind"]) <= {"image", "report"}
    assert not rejects["path"].str.contains("InlineReport(", regex=False).any()  # ids, not reprs
    assert (rejects["detail"].str.len() > 10).all()  # every reject says what is wrong


@pytest.mark.parametrize(("layout", "name"), ALL_CASES, ids=[name for _, name in ALL_CASES])
def test_bad_input_kind(tmp_path, layout, name):
    built = [GOOD[layout](tmp_path, "good"), LAYOUT_CASES[layout][name](tmp_path, name)]
    run_and_check(tmp_path, layout, built)


@pytest.mark.parametrize("layout", list(LAYOUT_CASES))
def test_all_kinds_in_one_archive(tmp_path, layout):
    built = [GOOD[layout](tmp_path, f"good{i}") for i in range(3)]
    built += [make(tmp_path, name) for name, make in LAYOUT_CASES[layout].items()]
    run_and_check(tmp_path, layout, built)


# Reason codes no case of this corpus can produce, with the test file that exercises each instead: the CT series
# readers' codes (no 2-D layout reads a series), a frame past NumberOfFrames (the layouts read frame 0) and a bad line
# of a --reports table (this harness passes none).
TESTS = Path(__file__).resolve().parents[1]
ELSEWHERE: dict[str, Path] = {
    **{code: TESTS / "io" / "test_dicom.py" for code in REASONS if code.startswith("series_")},
    "bad_frame": TESTS / "io" / "test_dicom.py",
    "malformed_report": TESTS / "ingest" / "test_layouts.py",
    **{code: TESTS / "ingest" / "ris" / "test_common.py" for code in ("superseded_report", "cancelled_report")},
    "not_a_report": TESTS / "ingest" / "ris" / "test_hl7v2.py",
    "fetch_failed": TESTS / "pacs" / "test_pacs_sync.py",
    "deid_failed": TESTS / "ingest" / "test_deid_manifest.py",
}


def test_corpus_covers_every_reason_code(tmp_path):
    """Every reject reason the readers and layouts define (REASONS, REJECT_REASONS) is the expected outcome of at
    least one case here, or is exercised in the test file ELSEWHERE names: a new code without a case fails."""
    codes = set(REASONS) | set(REJECT_REASONS)
    exercised = set()
    for layout, cases in LAYOUT_CASES.items():
        for name, make in cases.items():
            exercised |= {reason for _, reason in make(tmp_path / layout / name, name).expected}
    assert exercised <= codes
    assert set(ELSEWHERE) <= codes, set(ELSEWHERE) - codes  # no stale exclusion
    assert not exercised & set(ELSEWHERE), exercised & set(ELSEWHERE)  # a code with a case here is no exclusion
    assert codes - set(ELSEWHERE) <= exercised, sorted(codes - set(ELSEWHERE) - exercised)
    for code, path in ELSEWHERE.items():
        assert f'"{code}"' in path.read_text(), (code, path)
