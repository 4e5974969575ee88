"""FHIR R4 DiagnosticReport resources (one JSON, a Bundle, or NDJSON bulk export files) -> report versions.

Each DiagnosticReport is validated with fhir.resources (R4B models, the same DiagnosticReport as R4); one that
validates is read from the model's JSON form, one that does not is still read from its own JSON when the fields
used here are well formed, because real exports often break an unrelated rule (an extension, a date format) and
one such field must not cost the report. Other resources (Patient, ImagingStudy, ServiceRequest, Practitioner)
are not inputs: they give study keys and identifiers by reference (contained "#id", "Type/id", a Bundle fullUrl).

HTML forms become text with the standard library's ``html.parser`` (block elements -> line breaks, scripts and
styles dropped), which is enough for the paragraph / header markup of report forms.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydantic import ValidationError

from medclip.errors import InputError
from medclip.ingest.ris.base import (
    CANCELLED,
    Candidate,
    RisReport,
    assemble,
    clean_key,
    clean_uid,
    report_reject,
    sortable_time,
)
from medclip.io.text import NotTextError, decode_text, read_text, split_lines
from medclip.reports.sections import SECTION_NAMES, parse_sections

logger = logging.getLogger(__name__)

FHIR_SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz")
_STATUS = {"final": "final", "amended": "amended", "appended": "amended", "corrected": "corrected"}
_STATUS.update({"registered": "preliminary", "partial": "preliminary", "preliminary": "preliminary"})
_STATUS.update({"unknown": "preliminary", "cancelled": CANCELLED, "entered-in-error": CANCELLED})
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "table", "ul", "ol", "pre"}


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    """HTML -> plain text with a line break at each block element."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return "\n".join(line for line in lines if line)


class _Index:
    """Resources of one source by reference ("Patient/1", a Bundle fullUrl) and contained ones by "#id"."""

    def __init__(self) -> None:
        self.by_ref: dict[str, dict] = {}

    def add(self, resource: dict, full_url: str | None = None) -> None:
        kind, rid = resource.get("resourceType"), resource.get("id")
        if kind and rid:
            self.by_ref[f"{kind}/{rid}"] = resource
        if full_url:
            self.by_ref[full_url] = resource

    def get(self, ref: object, owner: dict) -> dict | None:
        target = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(target, str):
            return None
        if target.startswith("#"):
            return next((c for c in _list(owner.get("contained")) if c.get("id") == target[1:]), None)
        if target in self.by_ref:
            return self.by_ref[target]
        tail = "/".join(target.rstrip("/").split("/")[-2:])  # "https://host/fhir/Patient/1" -> "Patient/1"
        return self.by_ref.get(tail)


def _list(value: object) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _is_accession(identifier: dict) -> bool:
    codes = [c.get("code") for c in _list((identifier.get("type") or {}).get("coding"))]
    return "ACSN" in codes or "accession" in str(identifier.get("system") or "").lower()


def _accession(identifiers: object) -> str | None:
    return next((clean_key(i.get("value")) for i in _list(identifiers) if _is_accession(i) and i.get("value")), None)


def _study_uid(study: dict | None) -> str | None:
    for ident in _list((study or {}).get("identifier")):
        system = str(ident.get("system") or "")
        if system in ("urn:dicom:uid", "urn:ietf:rfc:3986") or str(ident.get("value", "")).startswith("urn:oid:"):
            uid = clean_uid(ident.get("value"))
            if uid:
                return uid
    return None


def _keys(report: dict, index: _Index) -> tuple[str | None, str | None]:
    accession = _accession(report.get("identifier"))
    study_uid = None
    for ref in _list(report.get("imagingStudy")):
        study = index.get(ref, report) or ({"identifier": [ref["identifier"]]} if "identifier" in ref else None)
        study_uid = study_uid or _study_uid(study)
        accession = accession or _accession((study or {}).get("identifier"))
    for ref in _list(report.get("basedOn")):
        request = index.get(ref, report) or ({"identifier": [ref["identifier"]]} if "identifier" in ref else {})
        accession = accession or _accession(request.get("identifier"))
    return accession, study_uid


def _names(person: dict) -> Iterator[tuple[str, str]]:
    for name in _list(person.get("name")):
        given = " ".join(str(g) for g in name.get("given") or [] if g)
        if name.get("family") or given:
            yield "name", f"{name.get('family') or ''}^{given}".strip("^")
        if name.get("text"):
            yield "name", str(name["text"])


def _person_identifiers(person: dict) -> Iterator[tuple[str, str]]:
    yield from _names(person)
    for ident in _list(person.get("identifier")):
        if ident.get("value"):
            yield "id", str(ident["value"])
    if person.get("birthDate"):
        yield "date", str(person["birthDate"])
    for telecom in _list(person.get("telecom")):
        if telecom.get("value"):
            yield ("email" if telecom.get("system") == "email" else "phone"), str(telecom["value"])
    for address in _list(person.get("address")):
        lines = [str(x) for x in address.get("line") or [] if x]
        yield from (("address", line) for line in lines)
        whole = address.get("text") or ", ".join([*lines, *(str(address.get(k) or "") for k in ("city", "state"))])
        yield "address", str(whole).strip(", ")
        if address.get("postalCode"):
            yield "address", str(address["postalCode"])


def _identifiers(report: dict, index: _Index) -> frozenset[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for ident in _list(report.get("identifier")):
        if ident.get("value"):
            found.add(("id", str(ident["value"])))
    people = [report.get("subject"), *_list(report.get("performer")), *_list(report.get("resultsInterpreter"))]
    for ref in (p for p in people if isinstance(p, dict)):
        if ref.get("display"):
            found.add(("name", str(ref["display"])))
        target = index.get(ref, report)
        if target is not None:
            found.update(_person_identifiers(target))
            if target.get("resourceType") == "PractitionerRole":  # the person behind a role
                found.update(_person_identifiers(index.get(target.get("practitioner"), target) or {}))
    return frozenset((kind, value) for kind, value in found if value.strip("^ "))


def _form_text(report: dict) -> tuple[str | None, str, bool]:
    """presentedForm -> (text or None, encoding, whether a non-text form exists); text/plain before text/html."""
    forms = _list(report.get("presentedForm"))
    binary = False
    for wanted in ("text/plain", "text/html"):
        for form in forms:
            content_type = str(form.get("contentType") or "").lower()
            if not content_type.startswith(wanted) or not form.get("data"):
                continue
            try:
                raw = base64.b64decode(str(form["data"]), validate=False)
                charset = content_type.partition("charset=")[2].split(";")[0].strip() or None
                text, encoding = decode_text(raw, charset)
            except (binascii.Error, ValueError, NotTextError):
                continue
            return (html_text(text) if wanted == "text/html" else text), encoding, binary
    binary = any(form.get("data") or form.get("url") for form in forms)
    return None, "unknown", binary


def _sections(text: str | None, conclusion: str | None) -> tuple[dict[str, str | None] | None, str]:
    if not text:
        return assemble([("impression", conclusion or "")])
    parsed = parse_sections(text)
    sections = {name: parsed.get(name) for name in SECTION_NAMES}
    if conclusion and not sections["impression"]:
        sections["impression"] = " ".join(conclusion.split())
        text = f"{text.rstrip()}\nIMPRESSION: {sections['impression']}"
    return sections, text


def _validated(resource: dict, where: str) -> dict:
    """The resource as fhir.resources' R4B model normalises it, or as it came when it does not validate."""
    try:
        return DiagnosticReport.model_validate(resource).model_dump(mode="json", by_alias=True, exclude_none=True)
    except (ValidationError, ValueError, TypeError) as exc:
        # Locations only: a validation message quotes input values, which may be identifiers.
        where_bad = (
            [".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()]
            if isinstance(exc, ValidationError)
            else []
        )
        logger.debug("%s: not valid FHIR R4 (%s); read as given", where, ", ".join(where_bad[:5]))
        return resource


def report_candidate(resource: dict, where: str, index: _Index, position: int) -> Candidate | dict:
    """One DiagnosticReport (JSON) -> a :class:`Candidate` or a reject."""
    report = _validated(resource, where)
    status = _STATUS.get(str(report.get("status") or "").lower())
    if status is None:
        return report_reject(where, "malformed_report", f"{where}: DiagnosticReport without a known status")
    accession, study_uid = _keys(report, index)
    if not accession and not study_uid:
        return report_reject(where, "malformed_report", f"{where}: no accession number or study instance uid")
    form, encoding, binary = _form_text(report)
    conclusion = report.get("conclusion") if isinstance(report.get("conclusion"), str) else None
    if form is None and not conclusion and binary and status != CANCELLED:
        return report_reject(where, "report_binary", f"{where}: only a non-text presented form (PDF / image)")
    sections, text = _sections(form, conclusion)
    meta = report.get("meta") if isinstance(report.get("meta"), dict) else {}
    issued = sortable_time(report.get("issued")) or sortable_time(report.get("effectiveDateTime"))
    version = str(meta.get("versionId") or "")
    order = (
        sortable_time(meta.get("lastUpdated")) or issued or "",
        int(version) if version.isdigit() else 0,
        position,
    )
    rec = RisReport(
        id=where,
        accession=accession,
        study_uid=study_uid,
        sections=sections,
        text=text,
        status=status,
        issued=issued,
        encoding=encoding if form is not None else "json",
        identifiers=_identifiers(report, index),
    )
    return Candidate(rec, order)


def load_resources(path: Path, index: _Index) -> tuple[list[tuple[str, dict]], list[dict]]:
    """A JSON / NDJSON file -> (DiagnosticReports with their path-like ids, rejects); other resources are indexed."""
    try:
        text, _ = read_text(path)  # gunzips a .gz first
    except (OSError, InputError) as exc:  # NotTextError is an InputError
        return [], [
            report_reject(path, "malformed_report", f"{path}: not readable as JSON text ({type(exc).__name__})")
        ]
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".ndjson", ".jsonl")):
        entries = [(f"{path}#line={n}", line) for n, line in enumerate(split_lines(text), start=1) if line.strip()]
    else:
        entries = [(str(path), text)]
    reports, rejects = [], []
    for where, chunk in entries:
        try:
            resource = json.loads(chunk)
        except ValueError:
            rejects.append(report_reject(where, "malformed_report", f"{where}: not valid JSON"))
            continue
        if not isinstance(resource, dict):
            rejects.append(report_reject(where, "malformed_report", f"{where}: not a FHIR resource"))
        elif resource.get("resourceType") == "Bundle":
            for n, entry in enumerate(_list(resource.get("entry")), start=1):
                inner = entry.get("resource")
                if isinstance(inner, dict):
                    index.add(inner, entry.get("fullUrl"))
                    if inner.get("resourceType") == "DiagnosticReport":
                        reports.append((f"{where}#entry={n}", inner))
        else:
            index.add(resource)
            if resource.get("resourceType") == "DiagnosticReport":
                reports.append((where, resource))
            elif not resource.get("resourceType"):
                rejects.append(report_reject(where, "malformed_report", f"{where}: JSON without a resourceType"))
    return reports, rejects


def read_fhir_files(paths: list[Path]) -> tuple[list[Candidate | dict], int]:
    """All files of one source (read together: bulk exports put Patient and ImagingStudy in files of their own)."""
    index = _Index()
    reports: list[tuple[str, dict]] = []
    out: list[Candidate | dict] = []
    for path in paths:
        found, rejects = load_resources(path, index)
        reports += found
        out += rejects
    for position, (where, resource) in enumerate(reports):
        try:
            out.append(report_candidate(resource, where, index, position))
        except Exception as exc:  # an odd shape in one resource rejects that resource, never the source
            out.append(
                report_reject(where, "malformed_report", f"{where}: unreadable DiagnosticReport ({type(exc).__name__})")
            )
    return out, len(out)


def looks_like_fhir(head: bytes) -> bool:
    """Whether a file's first bytes are a JSON object naming a FHIR resourceType (checked loosely)."""
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return head[:1] == b"{" and b'"resourceType"' in head
