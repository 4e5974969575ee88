"""Exact-match identifiers of one study: the names, ids, dates, phones and addresses its own sources carry.

A :class:`KnownIdentifiers` is built from ``(kind, value)`` pairs (a DICOM header via :func:`dataset_identifiers`,
an HL7 PID segment, a FHIR Patient) and finds those values in report text however they are written there: a PN
``DOE^JOHN`` matches "John Doe", "DOE, JOHN" and "Mr. Doe"; an id matches with or without its punctuation; a DICOM
date ``20200102`` matches "01/02/2020", "2 January 2020" or "Jan 2, 2020". It can be persisted as salted hashes
(:meth:`KnownIdentifiers.hashed`) and rebuilt without raw values (:meth:`KnownIdentifiers.from_hashes`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import regex
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medclip.deid.patterns import DATE_RE, date_readings
from medclip.deid.words import COMMON_WORDS, NAME_AFFIXES, TITLES
from medclip.errors import InputError

__all__ = ["KINDS", "KnownIdentifiers", "Span", "dataset_identifiers"]

KINDS = ("name", "id", "date", "phone", "address", "uid", "email")
MIN_ID_CHARS = 4  # shorter ids ("1", "T12") would erase ordinary numbers and vertebral levels from report text
MAX_GAP = 3  # characters between two tokens of one phrase ("DOE, JOHN", "ABC-123")

TOKEN_RE = regex.compile(r"[^\W_]+(?:['’](?!s\b)[^\W_]+)*")  # O'Brien is one token; Doe's is Doe + s
PHONE_CANDIDATE_RE = regex.compile(r"(?<![\w.])\+?\(?\d[\d\s().-]{5,18}\d(?!\w)")
UID_RE = regex.compile(r"(?<![\w.])\d+(?:\.\d+){2,}(?![\w.])")
EMAIL_RE = regex.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


class Span(NamedTuple):
    start: int
    end: int
    kind: str


def _digest(salt: str, kind: str, norm: str) -> str:
    return hashlib.sha256(f"{salt}:deid:{kind}:{norm}".encode()).hexdigest()[:32]


def _tokens(value: str) -> list[str]:
    return [t.casefold() for t in TOKEN_RE.findall(value.replace("^", " "))]


def _phone_keys(digits: str) -> set[str]:
    keys = {digits} if len(digits) >= 7 else set()
    if len(digits) > 10:
        keys.add(digits[-10:])  # "+1 555 123 4567" and "(555) 123-4567" are one number
    return keys


class KnownIdentifiers:
    """Identifiers of one study, normalised for exact matching in text (raw, or as salted hashes).

    Entries are ``(kind, n, norm)``: ``norm`` is a casefolded phrase of ``n`` word tokens (names are single
    components), a canonical date ``YYYYMMDD``, a phone's digits, an e-mail or a UID. In hashed form only
    ``kind:n:digest`` is kept, so nothing raw needs to be written anywhere.
    """

    def __init__(self, *, salt: str | None = None) -> None:
        self._salt = salt  # None: raw entries; else entries are digests under this salt
        self._entries: set[str] = set()
        self._lengths: dict[str, set[int]] = {}

    # ---- building -----------------------------------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> KnownIdentifiers:
        known = cls()
        for kind, value in pairs:
            known.add(kind, value)
        return known

    @classmethod
    def from_hashes(cls, hashes: Iterable[str], salt: str) -> KnownIdentifiers:
        """Rebuild from :meth:`hashed` output; matching then hashes candidate tokens of the text."""
        known = cls(salt=salt)
        for item in hashes:
            kind, n, _ = (item.split(":", 2) + ["", ""])[:3]
            if kind not in KINDS or not n.isdigit():
                raise InputError(f"{item[:40]!r} is not a KnownIdentifiers hash (expected 'kind:n:digest')")
            known._entries.add(item)
            known._lengths.setdefault(kind, set()).add(int(n))
        return known

    def add(self, kind: str, value: Any) -> None:
        """Add one identifier; values too short to match safely (ids under 4 characters) are ignored."""
        if kind not in KINDS:
            raise InputError(f"identifier kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
        text = str(value or "").strip()
        if text:
            for n, norm in self._normalise(kind, text):
                self._put(kind, n, norm)

    def merge(self, other: KnownIdentifiers) -> KnownIdentifiers:
        """Add every entry of ``other`` (raw entries are hashed when this one is hashed); returns self."""
        if other._salt is not None and other._salt != self._salt:
            if self._entries or self._salt is None:
                raise InputError("cannot merge hashed identifiers into raw ones (or across salts); hash both alike")
            self._salt = other._salt
        for item in other._entries:
            kind, n, norm = item.split(":", 2)
            if other._salt is None:
                self._put(kind, int(n), norm)
            else:
                self._entries.add(item)
                self._lengths.setdefault(kind, set()).add(int(n))
        return self

    def hashed(self, salt: str) -> list[str]:
        """Salted sha256 of each normalised entry as ``kind:n:digest`` (sorted): safe to persist."""
        if self._salt is not None:
            if salt != self._salt:
                raise InputError("these identifiers are already hashed under another salt")
            return sorted(self._entries)
        return sorted(f"{k}:{n}:{_digest(salt, k, norm)}" for k, n, norm in (e.split(":", 2) for e in self._entries))

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:  # never the values themselves: a repr can end up in a log
        mode = "hashed" if self._salt is not None else "raw"
        return f"KnownIdentifiers({len(self._entries)} entries, {mode})"

    def _put(self, kind: str, n: int, norm: str) -> None:
        key = norm if self._salt is None else _digest(self._salt, kind, norm)
        self._entries.add(f"{kind}:{n}:{key}")
        self._lengths.setdefault(kind, set()).add(n)

    def _has(self, kind: str, n: int, norm: str) -> bool:
        if n not in self._lengths.get(kind, ()):
            return False
        key = norm if self._salt is None else _digest(self._salt, kind, norm)
        return f"{kind}:{n}:{key}" in self._entries

    @staticmethod
    def _normalise(kind: str, text: str) -> Iterator[tuple[int, str]]:
        if kind == "name":
            for token in _tokens(text):
                if len(token) >= 2 and token.replace(".", "") not in NAME_AFFIXES:
                    yield 1, token
        elif kind == "id":
            tokens = _tokens(text)
            if sum(map(len, tokens)) >= MIN_ID_CHARS:
                yield len(tokens), " ".join(tokens)
            digits = "".join(c for c in text if c.isdigit())
            for variant in {digits, digits.lstrip("0"), "".join(tokens)}:  # "H-0049921" also as "H0049921"
                if len(variant) >= MIN_ID_CHARS and [variant] != tokens:
                    yield 1, variant
        elif kind == "address":
            for part in regex.split(r"[\^,;\n]+", text):
                tokens = _tokens(part)
                if len(tokens) > 1 or (tokens and len(tokens[0]) >= 4 and tokens[0] not in COMMON_WORDS):
                    yield len(tokens), " ".join(tokens)
                elif tokens and tokens[0].isdigit() and len(tokens[0]) >= MIN_ID_CHARS:
                    yield 1, tokens[0]
        elif kind == "date":
            head = text[:8] if regex.fullmatch(r"\d{8}(?:\d{2,6}(?:\.\d+)?)?(?:[+-]\d{4})?", text) else text
            for reading in date_readings(head) if head.isdigit() else _text_dates(text):
                yield 1, reading
        elif kind == "phone":
            for key in _phone_keys("".join(c for c in text if c.isdigit())):
                yield 1, key
        elif kind in ("uid", "email"):
            yield 1, text.casefold()
        else:  # pragma: no cover - add() validated the kind
            raise InputError(f"identifier kind {kind!r} is unknown")

    # ---- matching -----------------------------------------------------------------------------------------------
    def find(self, text: str) -> list[Span]:
        """Spans of ``text`` that are one of these identifiers (possibly overlapping; the scrubber merges them)."""
        if not self._entries or not text:
            return []
        spans: list[Span] = []
        tokens = list(TOKEN_RE.finditer(text))
        folded = [m.group().casefold() for m in tokens]
        joins = [_joinable(text, tokens[i].end(), tokens[i + 1].start()) for i in range(len(tokens) - 1)]
        for kind in ("id", "address"):
            for n in sorted(self._lengths.get(kind, ()), reverse=True):
                for i in range(len(tokens) - n + 1):
                    if all(joins[i : i + n - 1]) and self._has(kind, n, " ".join(folded[i : i + n])):
                        spans.append(Span(tokens[i].start(), tokens[i + n - 1].end(), kind))
        spans += self._find_names(tokens, folded, joins)
        spans += self._find_patterned(text)
        return spans

    def _find_names(self, tokens: list, folded: list[str], joins: list[bool]) -> list[Span]:
        hits = [self._has("name", 1, f) for f in folded]

        def beside(i: int) -> bool:  # another name component or a title right before/after token i
            before = i > 0 and joins[i - 1] and (hits[i - 1] or folded[i - 1] in TITLES)
            return before or (i + 1 < len(tokens) and joins[i] and hits[i + 1])

        spans = []
        for i, hit in enumerate(hits):
            if not hit:
                continue
            word = tokens[i].group()
            # "White", "May", "Mass", "Clear": ordinary words count only as a capitalised part of a full name.
            if folded[i] in COMMON_WORDS and not (word[0].isupper() and beside(i)):
                continue
            spans.append(Span(tokens[i].start(), tokens[i].end(), "name"))
        return spans

    def _find_patterned(self, text: str) -> list[Span]:
        spans = []
        if "date" in self._lengths:
            for m in DATE_RE.finditer(text):
                if any(self._has("date", 1, r) for r in date_readings(m.group())):
                    spans.append(Span(m.start(), m.end(), "date"))
        if "phone" in self._lengths:
            for m in PHONE_CANDIDATE_RE.finditer(text):
                if any(self._has("phone", 1, k) for k in _phone_keys("".join(c for c in m.group() if c.isdigit()))):
                    spans.append(Span(m.start(), m.end(), "phone"))
        for kind, pattern in (("uid", UID_RE), ("email", EMAIL_RE)):
            if kind in self._lengths:
                spans += [
                    Span(m.start(), m.end(), kind)
                    for m in pattern.finditer(text)
                    if self._has(kind, 1, m.group().casefold())
                ]
        return spans


def _joinable(text: str, end: int, start: int) -> bool:
    gap = text[end:start]
    return len(gap) <= MAX_GAP and "\n" not in gap


def _text_dates(text: str) -> set[str]:
    return {r for m in DATE_RE.finditer(text) for r in date_readings(m.group())}


# ---- DICOM headers ---------------------------------------------------------------------------------------------
# Text attributes of the DICOM PS3.15 Basic Profile (Table E.1-1) that identify a patient, visit or order.
# Every PN element is collected as well, wherever it is (sequences included).
_DICOM_KINDS: dict[str, str] = {
    **dict.fromkeys(
        ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID", "MedicalRecordLocator",
         "AdmissionID", "IssuerOfAdmissionID", "ServiceEpisodeID", "RequestedProcedureID", "PerformedProcedureStepID",
         "ScheduledProcedureStepID", "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
         "PlacerOrderNumberProcedure", "FillerOrderNumberProcedure", "PatientInsurancePlanCodeSequence",
         "MilitaryRank", "DeviceSerialNumber", "PatientTransportArrangements"),
        "id",
    ),
    **dict.fromkeys(
        ("PatientAddress", "InstitutionAddress", "InstitutionName", "InstitutionalDepartmentName",
         "RegionOfResidence", "CurrentPatientLocation", "PatientInstitutionResidence"),
        "address",
    ),
    **dict.fromkeys(
        ("PatientTelephoneNumbers", "PersonTelephoneNumbers", "ReferringPhysicianTelephoneNumbers"), "phone"
    ),
    **dict.fromkeys(("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"), "date"),
    **dict.fromkeys(("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"), "uid"),
    "ElectronicMailAddress": "email",
}  # fmt: skip


def dataset_identifiers(ds: Dataset) -> set[tuple[str, str]]:
    """``(kind, value)`` of every identifying text element of ``ds``, nested sequences included.

    PN elements anywhere (patient, physicians, operators, content-item PNAMEs), the patient/visit/order ids,
    addresses, phone numbers, birth and study dates of the Basic Profile; UIDs of the study/series/instance.
    Private elements with an unknown VR (UN) cannot be read as text and are not collected.
    """
    found: set[tuple[str, str]] = set()
    for elem in ds.iterall():
        kind = "name" if elem.VR == "PN" else _DICOM_KINDS.get(elem.keyword)
        if kind is None or elem.VR == "SQ" or elem.value is None:
            continue
        values = elem.value if isinstance(elem.value, MultiValue | list | tuple) else [elem.value]
        for value in values:
            text = str(value).strip()
            if text:
                found.add((kind, text))
    return found
