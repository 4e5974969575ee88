"""Report bytes -> text: the one place that decides how a report file or report table is decoded.

Archives hold reports written by many systems: UTF-8, UTF-8 with a BOM, UTF-16 from Windows tools, and Windows-1252 /
Latin-1 from older RIS exports (an accented name, a "°" sign). :func:`decode_text` keeps all of them and rejects only
bytes that are not text at all (an image, a PDF, random data), with :class:`NotTextError`. The encoding it used is
returned, so the manifest can record it per report.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from pydicom import charset as dicom_charset
from pydicom import config as dicom_config

from medclip.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["LEGACY_ENCODINGS", "NotTextError", "decode_text", "read_text", "split_lines"]

# Byte-order marks, longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# File signatures of the binary files that end up where reports are expected (a scanned PDF, a screenshot, a zipped
# Word file, a DICOM object). Eight fixed prefixes do not justify a dependency on libmagic; anything else binary is
# caught by its control-character share below.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (e.g. a .docx)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE2 document (e.g. a .doc)"),
    (b"\x1f\x8b", "gzip data"),
)
# The legacy fallback, in order: Windows-1252 is a superset of Latin-1's printable characters (it assigns 0x80-0x9F,
# where Latin-1 has C1 control codes that never occur in typed text); it leaves 0x81 0x8D 0x8F 0x90 0x9D undefined, and
# Latin-1 decodes any byte. A statistical detector is deliberately not used: on short reports such as
# "Patient: José Müller. Temp 38.5°C." charset-normalizer 3.4 gave back 2 of 7 cp1252 and 1 of 6 Latin-1 texts exactly
# (it picked iso8859_14, iso8859_10, cp1250, utf_16_be) and even 9 of 10 UTF-8 texts ("Temp 39°C." became big5), while
# this fixed order gives back all of them (scripts/bench_text_decoding.py). Its blind spot is other legacy code pages
# (cp1250, ISO-8859-2: 0 of 6, the detector 3 of 6): a wrong but readable letter replaces e.g. "ř", so such a source
# must declare its charset.
LEGACY_ENCODINGS = ("cp1252", "latin-1")
# C0 control characters that do not occur in text files. Allowed: tab, line feed, vertical tab, form feed (page
# breaks in printed reports), carriage return (0x09-0x0D), SUB (0x1A, the DOS end-of-file mark) and ESC (0x1B, ISO 2022
# escape sequences).
_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x19\x1c-\x1f]")
_MAX_CONTROL_SHARE = 0.05  # random bytes hold ~11% C0 controls; text with more than 5% is not text
_MAX_STRAY_CONTROLS = 2  # a couple of stray control bytes (a BEL, a NUL) in a short report do not make it binary


class NotTextError(InputError):
    """Bytes that are not text (``reason`` "binary"); ``detail`` says what they look like, e.g. "a PNG image"."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.reason = "binary"
        self.detail = detail


def _binary_reason(text: str) -> str | None:
    """Why decoded ``text`` is not text (too many control characters), or None."""
    body = text.rstrip("\x00")  # NUL padding after the text (fixed-length database fields) is not content
    controls = len(_CONTROL_RE.findall(body))
    if controls > max(_MAX_STRAY_CONTROLS, _MAX_CONTROL_SHARE * len(body)):
        nul = "NUL bytes and " if "\x00" in body else ""
        return f"binary data ({nul}{controls} control characters in {len(body)})"
    return None


def _declared_codecs(declared: str | Sequence[str] | None) -> list[str] | None:
    """A declared charset (a Python codec name or DICOM Specific Character Set terms) -> Python codecs, or None.

    DICOM terms go through pydicom's own table and rules (spelling fixes such as "ISO-IR 100", multi-valued sets
    whose first value is a stand-alone charset). No value, "" and "ISO_IR 6" name the default repertoire (ASCII):
    that says nothing about the bytes, so detection decides. An unknown name falls through to detection too.
    """
    values = [declared] if isinstance(declared, str) else list(declared or ())
    values = [str(v).strip() for v in values]
    if not any(values) or values == ["ISO_IR 6"]:
        return None
    try:
        with dicom_config.strict_reading(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom also logs a fixed spelling ("ISO-IR 100") itself
            return dicom_charset.convert_encodings(values)
    except LookupError:
        logger.debug("unknown declared charset %r; detecting the encoding instead", declared)
        return None


def _decode_declared(raw: bytes, declared: str | Sequence[str] | None) -> tuple[str, str] | None:
    encodings = _declared_codecs(declared)
    if encodings is None:
        return None
    try:
        # pydicom's decoder switches charsets at ISO 2022 escape sequences; strict, so a mismatch raises.
        with dicom_config.strict_reading():
            text = dicom_charset.decode_bytes(raw, encodings, dicom_charset.TEXT_VR_DELIMS)
    except (UnicodeError, LookupError):
        logger.debug("bytes do not decode as the declared charset %r; detecting the encoding instead", declared)
        return None
    # Code extensions (ISO 2022) are named after the base charset: "iso8859-1+iso2022_jp".
    return text, "+".join(dict.fromkeys(codecs.lookup(e).name for e in encodings))


def _utf16_without_bom(raw: bytes) -> str | None:
    """The codec of UTF-16 without a BOM ("utf-16-le" / "utf-16-be") when every other byte is NUL, else None."""
    if len(raw) < 4 or len(raw) % 2:
        return None
    even, odd = raw[0::2], raw[1::2]
    half = len(raw) // 2
    nul_even, nul_odd = even.count(0) / half, odd.count(0) / half
    if nul_odd >= 0.7 and nul_even <= 0.05:
        return "utf-16-le"
    if nul_even >= 0.7 and nul_odd <= 0.05:
        return "utf-16-be"
    return None


def _decode_legacy(raw: bytes) -> tuple[str, str]:
    """Lines that are valid UTF-8 stay UTF-8; the others are cp1252, or Latin-1 when cp1252 cannot decode them.

    Line by line, so that a UTF-8 table with one row typed on an old system keeps its other rows exactly as UTF-8
    decoded them. The name is the legacy codec, or "utf-8+<codec>" when UTF-8 lines with non-ASCII text remain.
    """
    lines = raw.splitlines(keepends=True)  # bytes split on \n, \r and \r\n only, which no codec here reuses
    utf8 = []
    for line in lines:
        try:
            line.decode("utf-8")
            utf8.append(True)
        except UnicodeDecodeError:
            utf8.append(False)
    legacy = b"".join(line for line, ok in zip(lines, utf8, strict=True) if not ok)
    codec = next(c for c in LEGACY_ENCODINGS if _decodes(legacy, c))
    text = "".join(line.decode("utf-8" if ok else codec) for line, ok in zip(lines, utf8, strict=True))
    mixed = any(ok and not line.isascii() for line, ok in zip(lines, utf8, strict=True))
    return text, f"utf-8+{codec}" if mixed else codec


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def decode_text(raw: bytes, declared: str | Sequence[str] | None = None) -> tuple[str, str]:
    """Decode a report's bytes: ``(text, encoding used)``, or :class:`NotTextError` for binary data.

    The order: a byte-order mark (UTF-8, UTF-16, UTF-32) wins; then ``declared``, when the bytes decode as it; then
    UTF-16 without a BOM when every other byte is NUL (a candidate so far whose text is mostly control characters is
    skipped); then strict UTF-8, so whatever decoded as UTF-8 before still does; then :data:`LEGACY_ENCODINGS` line
    by line (see ``_decode_legacy``), rejected when the result is mostly control characters.

    Args:
        raw: the file's bytes.
        declared: the charset the source names: a Python codec name ("cp1250") or the value of a DICOM Specific
            Character Set (0008,0005), a string or a list ("ISO_IR 100", "ISO_IR 192", ["", "ISO 2022 IR 87"]),
            resolved and decoded with pydicom's tables, ISO 2022 escape sequences included. The DICOM SR reader
            must pass the dataset's SpecificCharacterSet here when it decodes a raw text value itself; a pydicom
            Dataset already decodes its text elements by that charset when they are accessed (``ds.TextValue``).

    Returns:
        The text (a BOM removed) and a codec name: "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32",
        "cp1252", "latin-1", "utf-8+cp1252" (mixed lines), or the declared codec ("iso8859-2", ...).

    Raises:
        NotTextError: a known binary signature (PNG, JPEG, PDF, ZIP, ...), a DICOM file, or bytes that are not
            UTF-8 and hold more than a few control characters (NUL included) in every other decoding.
    """
    for magic, what in _MAGIC:
        if raw.startswith(magic):
            raise NotTextError(f"binary data ({what}), not text")
    if raw[128:132] == b"DICM":
        raise NotTextError("binary data (a DICOM file), not text")
    candidates: list[tuple[str, str] | None] = []
    bom = next((name for mark, name in _BOMS if raw.startswith(mark)), None)
    if bom is not None:
        candidates.append(_strict(raw, bom))
    candidates.append(_decode_declared(raw, declared))
    if utf16 := _utf16_without_bom(raw):  # before UTF-8: ASCII text in UTF-16 is valid UTF-8 full of NULs
        candidates.append(_strict(raw, utf16))
    for candidate in candidates:
        if candidate is not None and _binary_reason(candidate[0]) is None:
            return candidate
    utf8 = _strict(raw, "utf-8")
    if utf8 is not None and any(c.isalpha() for c in utf8[0]):
        return utf8  # whatever decoded as UTF-8 before still does, control characters and all (never lost now)
    text, encoding = _decode_legacy(raw)
    if reason := _binary_reason(text):
        raise NotTextError(f"{reason}, not text")
    return text, encoding


def _strict(raw: bytes, encoding: str) -> tuple[str, str] | None:
    try:
        return raw.decode(encoding), encoding
    except UnicodeDecodeError:
        return None


def read_text(path: str | Path, declared: str | Sequence[str] | None = None) -> tuple[str, str]:
    """A text file (gunzipped first when its name ends in ``.gz``) -> :func:`decode_text` of its bytes.

    Raises:
        OSError: the file cannot be read.
        NotTextError: binary data; the message names ``path``.
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: not readable gzip data ({exc}); re-copy the file") from exc
    try:
        return decode_text(raw, declared)
    except NotTextError as exc:
        raise NotTextError(f"{path}: {exc.detail}") from None


def split_lines(text: str) -> list[str]:
    """Lines ending at \\n, \\r or \\r\\n only, like a file read in text mode (JSON Lines records).

    ``str.splitlines`` also splits at U+2028, U+0085 and other separators that a JSON string may hold.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
