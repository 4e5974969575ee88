"""decode_text: every encoding a report archive holds is decoded exactly; only binary data is rejected."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medclip.errors import InputError
from medclip.io.text import NotTextError, decode_text, read_text, split_lines

REPORT = "Patient: José Müller. Temp 38.5°C. FINDINGS: No focal consolidation. IMPRESSION: Normal."
SHORT = [
    REPORT,
    "Temp 39°C.",
    "IMPRESSION: Stable 5 mm nodule, ± 1 mm. Dr. Françoise Lefèvre.",
    "Befund: Herz normal groß. Beurteilung: Unauffälliger Thorax.",
    "Naïve lungs. Señor Núñez. FINDINGS: clear.",
]
CP1252_ONLY = "FINDINGS: Effusion – unchanged… “stable” €"  # 0x80-0x9F characters Latin-1 lacks
CENTRAL = "Pacient: Jiří Dvořák. Nález: plíce bez ložiskových změn. Łukasz Żółć."
# PS3.5 H.3.1: a Japanese person name in ISO 2022 IR 87 (JIS X 0208) with escape sequences.
JAPANESE = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"


@pytest.mark.parametrize(
    ("codec", "name"),
    [
        ("utf-8", "utf-8"),
        ("utf-8-sig", "utf-8-sig"),
        ("utf-16", "utf-16"),
        ("utf-16-le", "utf-16-le"),
        ("utf-16-be", "utf-16-be"),
        ("utf-32", "utf-32"),
        ("cp1252", "cp1252"),
        ("latin-1", "cp1252"),  # Latin-1 text without C1 controls is cp1252 text, byte for byte
    ],
)
@pytest.mark.parametrize("text", SHORT, ids=range(len(SHORT)))
def test_short_reports_decode_exactly(codec, name, text):
    assert decode_text(text.encode(codec)) == (text, name)


def test_cp1252_round_trips_exactly():
    raw = (REPORT + "\r\n" + CP1252_ONLY).encode("cp1252")
    text, name = decode_text(raw)
    assert name == "cp1252" and "38.5°C" in text and "José" in text
    assert text.encode("cp1252") == raw


def test_latin1_when_cp1252_leaves_a_byte_undefined():
    raw = b"FINDINGS: odd \x81 byte, caf\xe9."  # 0x81 is undefined in cp1252
    assert decode_text(raw) == ("FINDINGS: odd \x81 byte, café.", "latin-1")


@pytest.mark.parametrize("text", [*SHORT, "肺野清晰。", "Ok 👍", CENTRAL, "Ã© is two UTF-8 characters"])
def test_utf8_stays_utf8(text):
    raw = text.encode("utf-8")
    assert decode_text(raw) == (raw.decode("utf-8"), "utf-8")


def test_mixed_lines_keep_their_utf8():
    raw = "Dr. Müller (UTF-8)\n".encode() + "Temp 38.5°C (cp1252)\n".encode("cp1252")
    assert decode_text(raw) == ("Dr. Müller (UTF-8)\nTemp 38.5°C (cp1252)\n", "utf-8+cp1252")


def test_undeclared_central_european_is_readable_but_not_exact():
    """The documented blind spot: cp1250 / ISO-8859-2 text must be declared, else it reads as cp1252."""
    text, name = decode_text(CENTRAL.encode("cp1250"))
    assert name == "cp1252" and text != CENTRAL and text.startswith("Pacient: Ji")


@pytest.mark.parametrize(
    ("declared", "codec", "name"),
    [
        ("cp1250", "cp1250", "cp1250"),
        ("iso8859_2", "iso8859_2", "iso8859-2"),
        ("ISO_IR 101", "iso8859_2", "iso8859-2"),
        ("ISO 2022 IR 101", "iso8859_2", "iso8859-2"),
        (["ISO_IR 101"], "iso8859_2", "iso8859-2"),
        ("ISO-IR 101", "iso8859_2", "iso8859-2"),  # a common misspelling pydicom corrects
        ("ISO_IR 192", "utf-8", "utf-8"),
    ],
)
def test_declared_charsets(declared, codec, name):
    assert decode_text(CENTRAL.encode(codec), declared) == (CENTRAL, name)


def test_declared_latin1_and_dicom_code_extensions():
    assert decode_text(REPORT.encode("latin-1"), "ISO_IR 100") == (REPORT, "iso8859-1")
    assert decode_text(REPORT.encode("latin-1"), "ISO 2022 IR 100") == (REPORT, "iso8859-1")
    expected = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert decode_text(JAPANESE, ["", "ISO 2022 IR 87"]) == (expected, "iso8859-1+iso2022_jp")
    assert decode_text(JAPANESE, "ISO 2022 IR 87")[0] == expected
    assert decode_text(JAPANESE)[0] != expected  # undeclared, escape sequences are just ASCII bytes


def test_declared_stand_alone_charset_ignores_extensions():
    assert decode_text("Müller".encode(), ["ISO_IR 192", "ISO 2022 IR 87"]) == ("Müller", "utf-8")


@pytest.mark.parametrize("declared", ["ISO_IR 999", "no-such-codec", "", "ISO_IR 6", [""], None])
def test_unknown_or_default_charset_falls_through(declared, caplog):
    caplog.set_level("DEBUG", logger="medclip.io.text")
    assert decode_text(REPORT.encode("cp1252"), declared) == (REPORT, "cp1252")
    if declared in ("ISO_IR 999", "no-such-codec"):
        assert "unknown declared charset" in caplog.text


def test_declared_charset_that_does_not_fit_falls_through():
    assert decode_text(REPORT.encode("cp1252"), "ISO_IR 192") == (REPORT, "cp1252")
    assert decode_text(REPORT.encode("utf-8"), "ascii") == (REPORT, "utf-8")


def test_bom_wins_over_declared():
    assert decode_text(REPORT.encode("utf-16"), "ISO_IR 100") == (REPORT, "utf-16")
    assert decode_text(REPORT.encode("utf-8-sig"), "cp1252") == (REPORT, "utf-8-sig")


def _dicom_bytes() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientName = "SR", "Müller^José"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(20), "PNG"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
        (b"PK\x03\x04\x14\x00\x06\x00word/document.xml", "ZIP"),
        (gzip.compress(REPORT.encode()), "gzip"),
        (_dicom_bytes(), "DICOM"),
        (np.random.default_rng(0).bytes(4096), "NUL bytes"),
        (bytes(range(1, 32)) * 40, "control characters"),
        (REPORT.encode("utf-32-le"), "NUL bytes"),  # UTF-32 without a BOM is not recognised
    ],
)
def test_binary_is_rejected(raw, what):
    with pytest.raises(NotTextError, match=what) as info:
        decode_text(raw)
    assert info.value.reason == "binary" and isinstance(info.value, InputError)


@pytest.mark.parametrize(
    "raw",
    [
        b"FINDINGS: clear.\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",  # NUL padding of a fixed-length field
        b"FINDINGS: clear.\x07 IMPRESSION: normal.",  # a stray BEL
        b"FINDINGS: clear.\x0cIMPRESSION: normal.\r\n\x1a",  # a page break and the DOS end-of-file mark
        b"\t\tFINDINGS:\tclear.\x0bIMPRESSION: normal.",
    ],
)
def test_text_with_a_few_control_characters_is_kept(raw):
    assert decode_text(raw) == (raw.decode("utf-8"), "utf-8")


def test_read_text_gunzips_and_names_the_file(tmp_path):
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(REPORT.encode("cp1252")))
    assert read_text(tmp_path / "r.csv.gz") == (REPORT, "cp1252")
    (tmp_path / "scan.txt").write_bytes(b"%PDF-1.4\n")
    with pytest.raises(NotTextError, match=r"scan\.txt: binary data \(a PDF document\)"):
        read_text(tmp_path / "scan.txt")
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "absent.txt")


def test_split_lines_only_at_line_ends():
    assert split_lines('{"a": "x\u2028y"}\r\n{"b": 1}\r{"c": "\x85"}\n') == [
        '{"a": "x\u2028y"}',
        '{"b": 1}',
        '{"c": "\x85"}',
        "",
    ]


def test_utf8_with_many_control_bytes_is_kept() -> None:
    # A fixed-width export pads fields with NULs: valid UTF-8 with letters was kept before and must stay kept.
    raw = b"FINDINGS: Lungs clear." + b"\x00" * 80 + b"IMPRESSION: Normal." + b"\x07" * 10
    text, encoding = decode_text(raw)
    assert encoding == "utf-8" and text == raw.decode("utf-8")
