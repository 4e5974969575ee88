"""Radiology report text: section parsing, de-identification placeholders, sentences and pairing text.

Everything here is a pure function of strings: no I/O, and odd input (``None``, bytes, control characters, reports
without headers) degrades to missing sections instead of raising, because one broken report must never stop a corpus
build. The section parser follows the idea of MIT-LCP's mimic-cxr ``section_parser`` (headers only at line start,
last paragraph as the impression when nothing is labelled) but is an independent implementation.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from typing import Any

from medclip.errors import InputError
from medclip.registry import did_you_mean
from medclip.reports.headers import NON_IMAGING, cut_line, strip_own_header

SECTION_NAMES = (
    "findings",
    "impression",
    "indication",
    "history",
    "comparison",
    "technique",
    "examination",
    "addendum",
)
DEID_TOKEN = "___"
# Column names that hold a whole report in a table (CSV, JSONL, parquet), most likely first; compared loosely.
TEXT_COLUMNS = ("text", "report", "report_text", "findings_impression")
SENTENCE_POLICY = "sentence_sample"  # a text policy that samples sentences afresh at every training step
TEXT_POLICIES = ("impression", "findings", "findings_impression", "impression_or_findings", "sentence_sample")

_SEPARATOR_RE = re.compile(r"^\s*[_=*~#-]{5,}\s*$")
_FINAL_RE = re.compile(r"^\s*final\s+report\s*:?\s*$", re.IGNORECASE)
_FINAL_PREFIX_RE = re.compile(r"^\s*final\s+report\b\s*:?", re.IGNORECASE)
_WET_RE = re.compile(
    r"^\s*(?:wet\s+read(?:\s+version\s*#?\s*\d+)?|provisional\s+findings\s+impression(?:\s*\(pfi\))?)(?!\w)",
    re.IGNORECASE,
)
# The wet-read header line carries reader/time stamps ("WET READ: ___ ___ ___ 8:20 PM"), not findings.
_STAMP_RE = re.compile(r"^(?:\s|[:,\-_]|\d{1,2}:\d{2}(?:\s*[ap]\.?m\.?)?)*", re.IGNORECASE)
_SIGNATURE_RE = re.compile(
    r"(?:^|(?<=[.!?]))\s*(?:i\s+have\s+(?:personally\s+)?reviewed\b|i\s+agree\s+with\b|dictat(?:ed|ing)\b"
    r"|electronically\s+signed|e-?signed\b|signed\s*(?:by\b|electronically\b|:)|transcribed\s*(?:by\b|:)"
    r"|reviewed\s+and\s+(?:electronically\s+)?signed|(?:report\s+)?(?:verified|approved|finalized)\s+by\b"
    r"|interpreted\s+by\b|radiologist\s*:|attending\s*(?:radiologist\s*)?:)",
    re.IGNORECASE,
)
_LIST_ITEM_RE = re.compile(r"^\d{1,2}[.)]\s")
_BULLET_RE = re.compile(r"^[-*\u2022]\s+(?=\S)")
_CTRL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b\ufeff\ufffd]")  # \ufffd: bytes that were not UTF-8
_DEID_RE = re.compile(
    r"\[\*\*[^\n]{0,200}?\*\*\]"  # MIMIC-II/III: [**Hospital1 18**]
    r"|\*\*[A-Z][A-Z0-9_-]*(?:\[[^\]\n]*\])?\*\*"  # **NAME[AAA, BBB]**, **DATE[Jan 1 2000]**, **ID-NUM**
    r"|(?<![A-Za-z0-9])[Xx]{3,}(?![A-Za-z0-9])"  # Open-i: XXXX
    r"|_{2,}"  # MIMIC-CXR: ___
)


def _coerce(text: Any) -> str:
    """Any input -> clean str with ``\\n`` line ends and no control characters ('' for None / non-text)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    elif not isinstance(text, str):
        return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates would break JSON output and tokenisers later
        text = text.encode("utf-8", "replace").decode("utf-8")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "\n").replace("\x0b", "\n")
    return _CTRL_RE.sub(" ", text).replace("\t", " ").replace("\u00a0", " ")


def normalize_deid(text: str) -> str:
    """Every de-identification placeholder (``XXXX``, ``___``, ``[** .. **]``, ``**NAME[..]**``) -> ``DEID_TOKEN``."""
    return _DEID_RE.sub(DEID_TOKEN, _coerce(text))


_WORD_RE = re.compile(r"[^\W_]+|___")
_DEID_RUN_RE = re.compile(r"___(?: ___)+")


def normalize_text(text: str) -> str:
    """Canonical form for duplicate detection: lowercase words and numbers, de-id normalised, no punctuation.

    Runs of placeholders collapse to one, so reports differing only in how many words were redacted match.
    """
    words = " ".join(_WORD_RE.findall(normalize_deid(text).lower()))
    return _DEID_RUN_RE.sub(DEID_TOKEN, words)


def _ensure_stop(text: str) -> str:
    # Items and paragraphs without a full stop would run into the next one; one keeps sentences splittable.
    return text + "." if text and (text[-1].isalnum() or text[-1] == ")") else text


def _paragraphs(lines: list[str]) -> list[str]:
    """Raw lines -> paragraphs, wrapped lines joined; list items keep their markers and get a full stop."""
    paras: list[str] = []
    cur = ""
    for raw in lines:
        line = raw.strip()
        item = _LIST_ITEM_RE.match(line) is not None
        if _BULLET_RE.match(line):
            line, item = _BULLET_RE.sub("", line), True
        if not line:
            if cur:
                paras.append(cur)
            cur = ""
        elif not cur:
            cur = line
        elif item:
            cur = f"{_ensure_stop(cur)} {line}"
        elif cur.endswith("-") and cur[-2:-1].isalpha() and (line[0].isalnum() or line[0] == "_"):
            cur += line  # "air-\nfilled" was a compound split by hard wrapping
        else:
            cur = f"{cur} {line}"
    if cur:
        paras.append(cur)
    return paras


def _finish(paras: list[str]) -> str | None:
    """Paragraphs -> one normalised line (None when nothing is left)."""
    parts = [_ensure_stop(p) for p in paras[:-1]] + paras[-1:]
    text = " ".join(normalize_deid(" ".join(parts)).split())
    return text if any(c.isalnum() for c in text) else None


def _lines(text: str):
    """Report lines, with a "FINAL REPORT" marker that opens a line split off the text after it."""
    for line in text.split("\n"):
        m = _FINAL_PREFIX_RE.match(line)
        if m and line[m.end() :].strip():
            yield line[: m.end()]
            line = line[m.end() :]
        yield line


def _segments(text: str) -> list[tuple[tuple[str, ...], list[str]]]:
    """Text -> ordered (section keys, raw lines); pseudo keys ``_lead`` (before any header), ``_wet``, ``_other``."""
    segs: list[tuple[tuple[str, ...], list[str]]] = [(("_lead",), [])]
    flat = "\n" not in text.strip()
    for line in _lines(text):
        keys, lines = segs[-1]
        if not line.strip() or _SEPARATOR_RE.match(line):
            if keys == ("_wet",) and line.strip():
                segs.append((("_lead",), []))  # the rule under a wet read ends it
            lines.append("")
            continue
        if _FINAL_RE.match(line):
            # MIMIC: whatever precedes FINAL REPORT is a preamble; only a wet read in it is worth keeping.
            if all(k[0].startswith("_") for k, _ in segs):
                segs = [s for s in segs if s[0] == ("_wet",)] + [(("_lead",), [])]
            continue
        wet = _WET_RE.match(line)
        if wet:
            segs.append((("_wet",), [line[wet.end() :][_STAMP_RE.match(line[wet.end() :]).end() :]]))
            continue
        for piece_keys, piece in cut_line(line, flat=flat):
            if piece_keys is None:
                segs[-1][1].append(piece)
            elif piece_keys == ("_back",):  # the text after a mid-line call-back belongs to the section before it
                segs.append((segs[-2][0] if len(segs) > 1 else ("_lead",), [piece]))
            else:
                segs.append((piece_keys, [piece]))
    return segs


def _drop_signature(lines: list[str]) -> list[str]:
    """Cut dictation / sign-off artefacts: from the first one to the end of the section."""
    start, content = 0, False
    for i, line in enumerate(lines):
        m = _SIGNATURE_RE.search(line)
        if m is None:
            content = content or bool(line.strip())
        elif content or line[: m.start()].strip():
            return [*lines[start:i], line[: m.start()]]
        else:
            start = i + 1  # a sign-off line opening the section ("Dictated by" above the text): drop just that line
    return lines[start:]


def _last_block(paras: list[str]) -> int:
    """Index where the last paragraph starts, pulling in earlier items of a numbered list split by blank lines."""
    start = len(paras) - 1
    while start > 0:
        m = re.match(r"(\d{1,2})[.)]\s", paras[start])
        if m is None or int(m.group(1)) <= 1:
            break
        start -= 1
    return start


def _fallback(out: dict[str, Any], reasons: dict[str, str], segs: list, wet: list[str]) -> None:
    """Fill the impression when no findings / impression header exists at all."""
    body = [(k, p) for k, p in segs if k[0] == "_lead" or not k[0].startswith("_")]
    body = [(k, p) for k, p in body if p]
    if body:
        keys, paras = body[-1]
        # An unlabelled report is all impression candidates; a labelled section (e.g. "INDICATION: cough") keeps
        # its first paragraph, and only text after it can be the unlabelled conclusion.
        if keys == ("_lead",) or len(paras) > 1:
            start = max(_last_block(paras), 0 if keys == ("_lead",) else 1)
            out["impression"] = _finish(paras[start:])
            if out["impression"] is not None:
                reasons["impression"] = "fallback:last_paragraph"
                for key in keys if keys != ("_lead",) else ():
                    out[key] = _finish(paras[:start])
                return
        if len(keys) == 1 and keys[0] in NON_IMAGING and _imaging_tail(out, reasons, keys[0], paras):
            return
    out["impression"] = _finish(wet) if wet else None
    if out["impression"] is not None:
        reasons["impression"] = "fallback:wet_read"


# A sentence that describes an image: imaging words, or radiographic findings and anatomy.
_IMAGING_RE = re.compile(
    r"\b(?:cxr|x-?rays?|xr|radiographs?|radiographic(?:ally)?|films?|imaging|images?|ct|views?|projections?"
    r"|lungs?|heart\s+size|cardiac\s+silhouette|cardiomediastinal|mediastin\w*|hil(?:um|ar|a)|costophrenic|pleura\w*"
    r"|opaci\w*|consolidat\w*|effusions?|pneumothora\w*|atelecta\w*|cardiomegaly|infiltrat\w*|nodul\w*|edema)\b",
    re.IGNORECASE,
)


def _imaging_tail(out: dict[str, Any], reasons: dict[str, str], key: str, paras: list[str]) -> bool:
    """A note under a non-imaging header ("Past medical history: diabetes. CXR showing ...") whose later sentences
    describe the image: those become the impression (``fallback:trailing_text``); True when it did that."""
    sentences = split_sentences(" ".join(paras))
    first = next((i for i, s in enumerate(sentences) if i and _IMAGING_RE.search(s)), None)
    if first is None:
        return False
    out["impression"] = _finish([" ".join(sentences[first:])])
    if out["impression"] is None:
        return False
    out[key] = _finish([" ".join(sentences[:first])])
    reasons["impression"] = "fallback:trailing_text"
    return True


def _leading_paragraphs(segs: list) -> list[str]:
    """Paragraphs before the first real section header."""
    lead: list[str] = []
    for keys, paras in segs:
        if not keys[0].startswith("_"):
            break
        if keys == ("_lead",):
            lead += paras
    return lead


def parse_sections(text: str | None) -> dict[str, Any]:
    """Report text -> normalised sections.

    Returns:
        Every key of ``SECTION_NAMES`` (text or None) plus ``"_reasons"``: section -> why it is missing or derived
        (``missing``, ``empty``, ``merged``, ``fallback:last_paragraph``, ``fallback:wet_read``,
        ``fallback:leading_text``, ``fallback:trailing_text``). Never raises.
    """
    segs = [(keys, _drop_signature(lines)) for keys, lines in _segments(_coerce(text))]
    segs = [(keys, _paragraphs(lines)) for keys, lines in segs]
    dedicated: dict[str, list[str]] = {}
    merged: dict[str, list[str]] = {}
    wet: list[str] = []
    for keys, paras in segs:
        if keys == ("_wet",):
            wet += paras
        for key in keys:
            if not key.startswith("_"):
                (merged if len(keys) > 1 else dedicated).setdefault(key, []).extend(paras)
    out: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for name in SECTION_NAMES:
        # A dedicated header beats a merged one ("FINDINGS AND IMPRESSION:" followed by a real "IMPRESSION:").
        value = _finish(dedicated[name]) if dedicated.get(name) else None
        if value is None and merged.get(name):
            value = _finish(merged[name])
            reasons[name] = "merged" if value else "empty"
        elif value is None:
            reasons[name] = "empty" if name in dedicated or name in merged else "missing"
        out[name] = value
    if reasons.get("findings") == reasons.get("impression") == "missing":
        _fallback(out, reasons, segs, wet)
    elif reasons.get("findings") == "missing" and out["impression"]:
        lead = _leading_paragraphs(segs)
        if len(" ".join(lead).split()) >= 8 and any(c in p for p in lead for c in ".!?"):
            out["findings"] = _finish(lead)  # unlabelled prose before the first header, then an impression
            reasons["findings"] = "fallback:leading_text"
    out["_reasons"] = reasons
    return out


def sections_from_fields(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """Sections a source already keeps apart (an XML element or a table column per section) -> the
    :func:`parse_sections` shape, without searching the text for headers: the source's split is the truth.

    Each field is cleaned as a parsed section would be (wrapped lines joined, de-identification placeholders
    normalised, sign-off lines dropped, a repeated own header such as "INDICATION: INDICATION: cough" removed).
    Field names are compared loosely ("Findings", "FINDINGS"); unknown names are ignored.
    """
    out: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    by_name = {str(k).strip().lower(): v for k, v in (fields or {}).items()}
    for name in SECTION_NAMES:
        value = by_name.get(name)
        if not isinstance(value, str) or not value.strip():
            out[name] = None
            reasons[name] = "missing" if value is None else "empty"
            continue
        lines = _coerce(value).split("\n")
        lines[0] = strip_own_header(lines[0], name)  # a field that repeats its own header
        out[name] = _finish(_paragraphs(_drop_signature(lines))) if any(line.strip() for line in lines) else None
        if out[name] is None:
            reasons[name] = "empty"
    out["_reasons"] = reasons
    return out


def sections_json(text: str) -> str:
    """Pretty JSON of :func:`parse_sections` (for ``medclip sections REPORT.txt``)."""
    return json.dumps(parse_sections(text), indent=2, ensure_ascii=False)


# Never sentence ends ("Dr. ___", "approx. 2 cm"), and ends only before a capital ("etc. The", but "a.m. on").
_ABBREV = frozenset({"dr", "drs", "mr", "mrs", "ms", "prof", "approx", "appr", "vs", "cf", "fig", "figs", "incl"})
_ABBREV_BEFORE_LOWER = frozenset({"etc", "pt", "pts", "resp", "min", "sec", "yr", "yrs", "mos", "wk", "wks", "al"})
_END_RE = re.compile(r"(?<![.!?])[.!?]+[\"')\]]*(?=\s|$)")
_LAST_TOKEN_RE = re.compile(r"[A-Za-z][A-Za-z.]*$")
_MARKER_RE = re.compile(r"(?<!\S)(\d{1,2})[.)](?=\s+\S)|(?:^|(?<=\n))[ \t]*[-*\u2022](?=\s)")
_PARA_RE = re.compile(r"\n[ \t]*\n")


def _list_cuts(text: str) -> str:
    """Turn accepted list markers into paragraph breaks.

    Numbers count as markers only in sequence 1, 2, 3...; item 1 must open the text or follow punctuation or a line
    break, so "rib 6. No effusion" and "grade 1. Mild" stay sentences.
    """
    expected, pieces, last = 1, [], 0
    for m in _MARKER_RE.finditer(text):
        if m.group(1) is not None:
            number = int(m.group(1))
            before = text[max(0, m.start() - 40) : m.start()].rstrip(" \t")
            opens = not before or before[-1] in "\n.!?:;"
            # "1." may restart a list ("Chest: 1. .. 2. .. Shoulder: 1. .."); later numbers need their turn only.
            if not ((number == 1 and opens) or (number == expected and number > 1)):
                continue
            expected = number + 1
        pieces += [text[last : m.start()], "\n\n"]
        last = m.end()
    return "".join([*pieces, text[last:]])


def _is_boundary(chunk: str, m: re.Match[str]) -> bool:
    if m.group().rstrip("\"')]") != ".":
        return True  # "!", "?", or ".." after "p.m." always end a sentence
    token = _LAST_TOKEN_RE.search(chunk[max(0, m.start() - 24) : m.start()])
    word = token.group().lower() if token else ""
    if word in _ABBREV:
        return False
    if word in _ABBREV_BEFORE_LOWER or re.fullmatch(r"(?:[a-z]\.)+[a-z]", word):
        nxt = chunk[m.end() :].lstrip()[:1]
        return nxt.isupper()
    return True


def split_sentences(text: str) -> list[str]:
    """Sentences of a report text; list markers ("1.", "-") are dropped, decimals and abbreviations kept whole."""
    out: list[str] = []
    for para in _PARA_RE.split(_list_cuts(_coerce(text))):
        chunk = " ".join(para.split())
        start = 0
        for m in _END_RE.finditer(chunk):
            if _is_boundary(chunk, m):
                out.append(chunk[start : m.end()].strip())
                start = m.end()
        out.append(chunk[start:].strip())
    sentences: list[str] = []
    for sentence in (s for s in out if any(c.isalnum() for c in s)):
        if sentences and sentences[-1].endswith(":"):
            sentences[-1] += " " + sentence  # "Chest:" before a numbered list is a lead-in, not a sentence
        else:
            sentences.append(sentence)
    return sentences


def _section(sections: Any, key: str) -> str | None:
    # Manifest rows hand in NaN / None / numbers for missing cells; only non-blank strings count.
    value = sections.get(key) if isinstance(sections, Mapping) else None
    return (value.strip() or None) if isinstance(value, str) else None


def report_text(
    sections: Mapping[str, Any],
    policy: str = "findings_impression",
    *,
    rng: random.Random | None = None,
    max_sentences: int = 3,
) -> str:
    """The text a report pairs with in training ('' when the report has none under the policy).

    Args:
        sections: output of :func:`parse_sections` (or any dict with ``findings`` / ``impression``).
        policy: one of ``TEXT_POLICIES``.
        rng: required by ``sentence_sample``; the sample is deterministic given its state.
        max_sentences: most sentences ``sentence_sample`` keeps (in report order).
    """
    if policy not in TEXT_POLICIES:
        raise InputError(
            f"unknown text policy '{policy}'.{did_you_mean(policy, TEXT_POLICIES)} Allowed: {', '.join(TEXT_POLICIES)}"
        )
    findings, impression = _section(sections, "findings"), _section(sections, "impression")
    if policy == "impression":
        return impression or ""
    if policy == "findings":
        return findings or ""
    if policy == "impression_or_findings":
        return impression or findings or ""
    # A merged "FINDINGS AND IMPRESSION:" section fills both with the same text; say it once.
    both = " ".join(dict.fromkeys(t for t in (findings, impression) if t))
    if policy == "findings_impression":
        return both
    if rng is None:
        raise ValueError("text policy 'sentence_sample' needs rng=random.Random(seed)")
    if max_sentences < 1:
        raise InputError(f"max_sentences must be >= 1, got {max_sentences}")
    sentences = split_sentences(both)
    keep = sorted(rng.sample(range(len(sentences)), min(max_sentences, len(sentences))))
    return " ".join(sentences[i] for i in keep)


def pair_text(row, text_policy: str) -> str:
    """The whole text a manifest row pairs with under ``text_policy`` (from its findings / impression columns).

    ``sentence_sample`` draws sentences afresh every step during training; as one text (evaluation, retrieval) it is
    the findings followed by the impression.
    """
    policy = "findings_impression" if text_policy == SENTENCE_POLICY else text_policy
    return report_text({"findings": row.findings, "impression": row.impression}, policy)
