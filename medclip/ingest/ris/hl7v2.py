"""HL7 v2 ORU^R01 result messages -> report versions, one per OBR (an order's result).

python-hl7 (``hl7``) parses the segments and fields: it is small, maintained and permissive (it does not validate a
message against a version's message structure, which real RIS feeds often bend), while hl7apy validates by default
and is not installed here. Two pieces are our own on purpose: splitting a file into messages (python-hl7's
``split_file`` wants CR-only ends and logs the content of stray lines) and unescaping (python-hl7's ``unescape``
logs whole field values on an unknown escape, and report text must never reach a log).

Accession: OBR-3 (filler order number), else OBR-18 (placer field 1), else OBR-2 (placer order number), the first
that is not empty. Study uid: a ZDS-1 segment, or an OBX whose OBX-3 names the Study Instance UID. Versions of one
accession are ordered by OBR-22 (results report / status change time), then MSH-7, then input order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import hl7

from medclip.ingest.ris.base import (
    CANCELLED,
    Candidate,
    RisReport,
    assemble,
    clean_key,
    clean_uid,
    report_reject,
    section_of,
    sortable_time,
)
from medclip.io.text import NotTextError, decode_text

logger = logging.getLogger(__name__)

HL7_SUFFIXES = {".hl7", ".txt", ".msg", ".oru"}
_BATCH_SEGMENTS = {"FHS", "BHS", "FTS", "BTS"}
_TEXT_TYPES = {"TX", "FT", "ST"}
_BINARY_TYPES = {"ED", "RP"}
# HL7 table 0211 (MSH-18) -> a codec decode_text accepts; "ASCII" says nothing, so detection decides.
_CHARSETS = {"8859/1": "latin-1", "8859/15": "iso8859-15", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8"}
_CHARSETS.update({f"8859/{n}": f"iso8859-{n}" for n in range(2, 10)})
# OBR-25 (HL7 table 0123) and OBX-11 (table 0085) result statuses.
_OBR_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "A": "preliminary", "R": "preliminary"}
_OBR_STATUS.update({"I": "preliminary", "O": "preliminary", "S": "preliminary", "X": CANCELLED})
_OBX_STATUS = {"F": "final", "U": "final", "C": "corrected", "P": "preliminary", "R": "preliminary"}
_OBX_STATUS.update({"S": "preliminary", "I": "preliminary", "D": CANCELLED, "W": CANCELLED, "X": CANCELLED})
_STUDY_UID_CODES = {"110180"}  # DCM "Study Instance UID"
# Fields with patient / staff identifiers: segment -> {field: kind}; "xcn" is a person (id^family^given^middle),
# "ndl" a result interpreter (id&family&given as subcomponents), "xpn" a name, "xad" an address, "xtn" a phone.
_IDENTIFIER_FIELDS = {
    "PID": {2: "id", 3: "id", 4: "id", 5: "xpn", 6: "xpn", 7: "date", 9: "xpn", 11: "xad", 13: "xtn", 14: "xtn"}
    | {18: "id", 19: "id", 20: "id"},
    "NK1": {2: "xpn", 4: "xad", 5: "xtn", 6: "xtn"},
    "PV1": {7: "xcn", 8: "xcn", 9: "xcn", 17: "xcn", 19: "id", 50: "id"},
    "ORC": {2: "id", 3: "id", 10: "xcn", 11: "xcn", 12: "xcn"},
    "OBR": {2: "id", 3: "id", 16: "xcn", 18: "id", 19: "id", 28: "xcn", 32: "ndl", 33: "ndl", 34: "ndl", 35: "ndl"},
    "OBX": {16: "xcn"},
}


class _Seps:
    """A message's separators (MSH-1, MSH-2) and HL7 escape decoding with them."""

    def __init__(self, msg: hl7.Message):
        self.field, self.rep, self.comp, self.sub = msg.separators[1:5]
        self.esc = msg.esc
        names = {"F": self.field, "S": self.comp, "T": self.sub, "R": self.rep, "E": self.esc}
        self._names = names
        self._esc_re = re.compile(
            re.escape(self.esc) + r"([^" + re.escape(self.esc) + r"\r\n]{1,64})" + re.escape(self.esc)
        )

    def unescape(self, value: str) -> str:
        """HL7 escapes -> text: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\Xhh..\\ bytes, \\.br\\ line breaks; highlighting,
        charset switches and local (\\Z..\\) escapes dropped."""
        return self._esc_re.sub(self._escape, value) if self.esc and self.esc in value else value

    def _escape(self, m: re.Match[str]) -> str:
        code = m.group(1)
        if code in self._names:
            return self._names[code]
        if code.startswith((".br", ".sp", ".ce")):
            return "\n"
        if code.startswith((".in", ".ti", ".sk")):
            return " "
        if code[0] == "X" and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", code[1:]):
            raw = bytes.fromhex(code[1:])
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
        return ""  # \H\ \N\ highlighting, \.fi\ \.nf\, \Cxxyy\ \Mxxyyzz\ charset switches, \Z..\ local escapes

    def reps(self, raw: str) -> list[str]:
        return [r for r in raw.split(self.rep) if r] if raw else []

    def comps(self, rep: str) -> list[str]:
        return rep.split(self.comp)


def _field(seg: hl7.Segment, n: int) -> str:
    """Field ``n`` of a segment as raw (escaped) text; '' when absent."""
    return str(seg[n]) if len(seg) > n else ""


def _comp(seps: _Seps, raw: str, n: int = 0) -> str:
    """Component ``n`` (0-based) of a field's first repetition, unescaped."""
    reps = seps.reps(raw)
    parts = seps.comps(reps[0]) if reps else []
    return seps.unescape(parts[n]).strip() if len(parts) > n else ""


def declared_charset(raw: bytes) -> str | None:
    """MSH-18 of the first message in ``raw`` as a codec name for :func:`decode_text`, or None."""
    m = re.search(rb"MSH(.)", raw)
    if m is None:
        return None
    line = re.split(rb"[\r\n\x1c]", raw[m.start() :], maxsplit=1)[0]
    parts = line.split(m.group(1))
    if len(parts) < 18:
        return None
    value = parts[17].split(b"~")[0].decode("ascii", "replace").strip().upper()
    return _CHARSETS.get(value)


def split_messages(text: str) -> list[list[str]]:
    """Decoded file text -> messages as lists of segment strings.

    Segments may end in CR, LF or CRLF; MLLP framing (\\x0b ... \\x1c\\r) and batch / file header and trailer
    segments (FHS, BHS, BTS, FTS) are dropped. A line that does not open a segment continues the one before it (a
    report line broken by an export), kept as a line break inside the field.
    """
    messages: list[list[str]] = []
    current: list[str] | None = None
    for line in re.split(r"\r\n|\r|\n|\x0b|\x1c", text):
        if not line.strip():
            continue
        if line.startswith("MSH") and len(line) > 3:
            current = [line]
            messages.append(current)
            continue
        field_sep = current[0][3] if current else "|"
        if line[:3] in _BATCH_SEGMENTS and line[3:4] in (field_sep, ""):
            current = None
        elif current is None:
            logger.debug("HL7 text outside any message skipped")
        elif re.match(r"[A-Z][A-Z0-9]{2}" + re.escape(field_sep), line):
            current.append(line)
        else:
            current[-1] += "\n" + line
    return messages


def _identifiers(msg: hl7.Message, seps: _Seps) -> frozenset[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for seg in msg:
        fields = _IDENTIFIER_FIELDS.get(str(seg[0]))
        for n, kind in (fields or {}).items():
            for rep in seps.reps(_field(seg, n)):
                found.update(_person(seps, kind, [seps.unescape(c).strip() for c in seps.comps(rep)]))
    return frozenset((kind, value) for kind, value in found if value)


def _person(seps: _Seps, kind: str, c: list[str]) -> Iterator[tuple[str, str]]:
    """Identifier pairs of one field repetition's components ``c`` (see ``_IDENTIFIER_FIELDS``)."""
    c = c + [""] * 12
    first = c[0].split(seps.sub)
    if kind == "id":
        yield "id", first[0]
    elif kind == "date":
        yield "date", c[0][:8]
    elif kind == "xpn":
        yield "name", "^".join([first[0], c[1], c[2]]).rstrip("^")
    elif kind == "xcn":
        yield "id", first[0]
        yield "name", "^".join([c[1].split(seps.sub)[0], c[2], c[3]]).rstrip("^")
    elif kind == "ndl":
        sub = first + [""] * 4
        yield "id", sub[0]
        yield "name", "^".join(sub[1:4]).rstrip("^")
    elif kind == "xad":
        street = " ".join(first).strip()
        yield "address", ", ".join(p for p in [street, c[1], c[2], c[3], c[4]] if p)
        yield "address", street
        yield "address", c[4]  # zip / postal code
    elif kind == "xtn":
        yield "phone", c[0]
        yield "phone", " ".join(p for p in (c[4], c[5], c[6]) if p) if c[6] else ""
        yield "phone", c[11]  # unformatted telephone number
        yield "email", c[3]
    else:
        raise ValueError(f"unknown identifier field kind {kind!r}")


def _groups(msg: hl7.Message) -> tuple[list[hl7.Segment], list[list[hl7.Segment]]]:
    """Message -> (segments before the first OBR, one segment list per OBR); an ORC goes with the OBR after it."""
    header: list[hl7.Segment] = []
    groups: list[list[hl7.Segment]] = []
    pending: list[hl7.Segment] = []
    for seg in msg:
        name = str(seg[0])
        if name == "OBR":
            groups.append([*pending, seg])
            pending = []
        elif name == "ORC":
            pending.append(seg)
        elif groups:
            groups[-1].append(seg)
        else:
            header.append(seg)
    return header, groups


def _status(seps: _Seps, obr: hl7.Segment, obxs: list[hl7.Segment]) -> str:
    code = _comp(seps, _field(obr, 25)).upper()[:1]
    if code:
        return _OBR_STATUS.get(code, CANCELLED if code in "YZ" else "preliminary")
    statuses = {_OBX_STATUS.get(_comp(seps, _field(obx, 11)).upper()[:1], "final") for obx in obxs}
    if statuses == {CANCELLED}:
        return CANCELLED
    for status in ("corrected", "preliminary"):
        if status in statuses:
            return status
    return "final"


def _result(seps: _Seps, header: list, group: list) -> tuple[list[tuple[str | None, str]], str | None, bool]:
    """An OBR group -> (section pieces, study uid, whether it held binary results); a ZDS before the first OBR
    applies to every OBR group that has none of its own."""
    pieces: list[tuple[str | None, str]] = []
    study_uid, binary = None, False
    for seg in group:
        name = str(seg[0])
        if name == "ZDS":
            study_uid = study_uid or clean_uid(_comp(seps, _field(seg, 1)))
        if name != "OBX":
            continue
        value_type = _comp(seps, _field(seg, 2)).upper()
        code, meaning = _comp(seps, _field(seg, 3), 0), _comp(seps, _field(seg, 3), 1)
        if code in _STUDY_UID_CODES or "study instance uid" in meaning.lower():
            study_uid = study_uid or clean_uid(_comp(seps, _field(seg, 5)))
        elif value_type in _TEXT_TYPES:
            lines = [seps.unescape(rep) for rep in _field(seg, 5).split(seps.rep)]
            pieces.append((section_of(code, meaning), "\n".join(lines)))
        elif value_type in _BINARY_TYPES:
            binary = True
    for seg in header:
        if str(seg[0]) == "ZDS":
            study_uid = study_uid or clean_uid(_comp(seps, _field(seg, 1)))
    return pieces, study_uid, binary


def _message_candidates(msg: hl7.Message, where: str, position: int, encoding: str) -> list[Candidate | dict]:
    seps = _Seps(msg)
    msh = msg.segment("MSH")
    if _comp(seps, _field(msh, 9)).upper() != "ORU":
        return [report_reject(where, "not_a_report", f"{where}: an HL7 message that is not an ORU result")]
    header, groups = _groups(msg)
    if not groups:
        return [report_reject(where, "malformed_report", f"{where}: an ORU message without an OBR segment")]
    identifiers = _identifiers(msg, seps)
    sent = sortable_time(_comp(seps, _field(msh, 7)))
    out: list[Candidate | dict] = []
    for k, group in enumerate(groups, start=1):
        rid = f"{where}/obr={k}" if len(groups) > 1 else where
        obr = next(seg for seg in group if str(seg[0]) == "OBR")
        accession = next(filter(None, (clean_key(_comp(seps, _field(obr, n))) for n in (3, 18, 2))), None)
        pieces, study_uid, binary = _result(seps, header, group)
        if not accession and not study_uid:
            out.append(report_reject(rid, "malformed_report", f"{rid}: no accession number or study instance uid"))
            continue
        if binary and not pieces:
            out.append(report_reject(rid, "report_binary", f"{rid}: only encapsulated / referenced results, no text"))
            continue
        sections, text = assemble(pieces)
        reported = sortable_time(_comp(seps, _field(obr, 22)))
        obxs = [seg for seg in group if str(seg[0]) == "OBX"]
        report = RisReport(
            id=rid,
            accession=accession,
            study_uid=study_uid,
            sections=sections,
            text=text,
            status=_status(seps, obr, obxs),
            issued=reported or sent,
            encoding=encoding,
            identifiers=identifiers,
        )
        out.append(Candidate(report, (reported or sent or "", sent or "", position)))
    return out


def read_hl7_file(path: Path, position: int = 0) -> tuple[list[Candidate | dict], int]:
    """One file of messages -> (a candidate or reject per result, inputs seen); never raises on bad data."""
    try:
        raw = path.read_bytes()
        text, encoding = decode_text(raw, declared_charset(raw))
    except (OSError, NotTextError) as exc:
        detail = exc.detail if isinstance(exc, NotTextError) else type(exc).__name__
        return [report_reject(path, "malformed_report", f"{path}: not readable as HL7 text ({detail})")], 1
    messages = split_messages(text)
    if not messages:
        return [report_reject(path, "malformed_report", f"{path}: no HL7 message (no MSH segment)")], 1
    out: list[Candidate | dict] = []
    for n, segments in enumerate(messages, start=1):
        where = f"{path}#message={n}"
        try:
            msg = hl7.parse("\r".join(segments))
            out += _message_candidates(msg, where, position + len(out), encoding)
        # python-hl7 raises several types (ParseException, IndexError, ...) on a broken message; one is one input.
        except Exception as exc:
            out.append(
                report_reject(where, "malformed_report", f"{where}: unparseable HL7 message ({type(exc).__name__})")
            )
    return out, len(out)


def looks_like_hl7(head: bytes) -> bool:
    """Whether a file's first bytes open an HL7 v2 message or batch (after a BOM, blanks or MLLP start byte)."""
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n\x0b")
    return head[:3] in (b"MSH", b"FHS", b"BHS") and len(head) > 3
