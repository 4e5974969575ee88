"""presidio recognisers for report text, all pattern based: no NLP model is loaded or downloaded.

Each pattern may carry a named group ``phi``: then only that group is the identifier and the rest is the context
that licenses it ("Dr. <phi>", "MRN: <phi>"), which is how context works without a tokenizer or lemmas.
Entity names are presidio's where presidio has one (PERSON, PHONE_NUMBER, DATE_TIME, EMAIL_ADDRESS).
"""

from __future__ import annotations

import regex
from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import IpRecognizer, PhoneRecognizer

from medclip.deid.patterns import DATE_RE, DAY, MONTH_NUM
from medclip.deid.words import wordlist

__all__ = ["build_recognizers"]

# ---- names -----------------------------------------------------------------------------------------------------
_AFFIX = r"(?:MD|M\.D\.|DO|D\.O\.|PhD|Ph\.D\.|RN|NP|PA|PA-C|MBBS|FRCR|FACR|Jr|Sr|II|III|IV)\b"
# Words that are capitalised in reports without being names; they end (or prevent) a name match.
_STOP = (
    r"(?i:the|a|an|of|at|on|in|to|and|or|with|by|for|from|this|that|these|was|were|is|are|has|had|his|her|their|"
    r"patient|pt|findings?|results?|report|impression|department|dept|room|team|service|clinic|hospital|center|"
    r"centre|unit|floor|office|emergency|radiology|surgery|medicine|icu|er|ed|pacu|nicu|ward|nurse|nursing|"
    r"physician|doctor|provider|clinician|resident|fellow|attending|staff|family|mother|father|wife|husband|"
    r"daughter|son|telephone|phone|person|verbal|verbally|via|regarding|about|today|yesterday|am|pm|"
    r"xxxx|ap|pa|lat|lateral|portable|chest|ct|mr|mri|us|cxr)\b"
)
_CAP = r"(?:[A-Z]['’])?[A-Z](?:[a-z]+[A-Z])?[a-z]+(?:-[A-Z][a-z]+)?"  # Smith, O'Brien, McDonald, Smith-Jones
_UP = r"(?!X+\b)[A-Z](?:['’]?[A-Z])+(?:-[A-Z]+)?"  # SMITH (not the source's own "XXXX" redaction)
_INIT = r"[A-Z]\.?(?![\w])"
_WORD = rf"(?!{_AFFIX})(?!{_STOP})(?:{_CAP}|{_UP})"
_CAPWORD = rf"(?!{_STOP})(?:{_CAP})"
_SP = r"[ \t]+"
# After a title: "Dr. Smith", "Dr. John Q. Smith", "DR. SMITH"
_NAME_AFTER_TITLE = rf"(?:{_INIT}[ \t]*)?{_WORD}(?:{_SP}(?:{_INIT}{_SP})?{_WORD}){{0,2}}"
# After a label with a colon: "Radiologist: Smith, John Q", "SIGNED BY: JOHN SMITH" (one word is enough)
_NAME_AFTER_LABEL = rf"(?:{_INIT}[ \t]*)?{_WORD}(?:(?:{_SP}|,[ \t]*)(?:{_INIT}|{_WORD})){{0,3}}"
# After a verb, no colon: two or three capitalised words ("discussed with John Smith")
_FULL_NAME = rf"{_CAPWORD}(?:{_SP}(?:{_INIT}{_SP})?{_CAPWORD}){{1,2}}"

_TITLE = r"\b(?:Dr|DR|Drs|Doctor|DOCTOR|Mr|Mrs|MRS|Ms|Miss|Prof|PROF|Professor)\b\.?[ \t]*"
_LABEL = (
    r"\b(?i:(?:electronically[ \t]+)?(?:signed|dictated|reported|transcribed|verified|read|interpreted|approved|"
    r"reviewed|authenticated|authored|prepared|performed|referred|ordered)(?:[ \t]+off)?[ \t]+by|"
    r"(?:attending|referring|ordering|requesting|reading|consulting|primary[ \t]+care)(?:[ \t]+(?:physician|"
    r"doctor|provider|clinician|radiologist))?|radiologist|resident|fellow|physician|provider|technologist|"
    r"tech|sonographer|radiographer|nurse|cc|pcp|author|signer|reviewer|interpreter|dictator|transcriptionist)"
)
_VERB = (
    r"\b(?i:discussed|d/w|spoke|spoken|conveyed|communicated|relayed|reviewed|notified|informed|paged|called|"
    r"contacted|telephoned|given|reported|read[ \t]+back|signed|dictated|transcribed|verified|interpreted|"
    r"approved|referred|ordered|seen|per)"
)
_ROLE = (
    r"(?:(?i:the|our)[ \t]+)?(?:(?i:referring|ordering|covering|on-call|on[ \t]+call|primary|treating|attending|"
    r"emergency|ed|er|icu|floor|charge|consulting)[ \t]+)*(?i:physician|doctor|provider|clinician|nurse|"
    r"practitioner|resident|fellow|radiologist|surgeon|team|pa|np|rn|md|clinical[ \t]+team)?,?[ \t]*"
)
NAME_PATTERNS = [
    ("title", rf"{_TITLE}(?P<phi>{_NAME_AFTER_TITLE})"),
    ("label", rf"{_LABEL}[ \t]*:[ \t]*(?:{_TITLE})?(?P<phi>{_NAME_AFTER_LABEL})"),
    ("verb", rf"{_VERB}(?:[ \t]+(?i:to|with|by|and|on|at))?[ \t]+{_ROLE}(?P<phi>{_FULL_NAME})"),
    # "... notified by telephone to the ED, Jane Doe at 10:15": a full name ending at a time, after a notice verb
    ("notice", rf"{_VERB}\b[^.\n]{{0,60}}?[ \t,](?P<phi>{_FULL_NAME})(?=,?[ \t]+(?i:at|on)[ \t]+\d)"),
]

# ---- ids -------------------------------------------------------------------------------------------------------
_IDVAL = r"(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{2,}\b"
_NUMWORD = r"(?:[ \t]*(?:number|num|no)\b\.?|[ \t]*#)?"
MRN_PATTERNS = [
    (
        "mrn",
        rf"(?i:\b(?:mrn|mr[ \t]*#|mr[ \t]*(?:no|num)\b\.?|med(?:ical)?[ \t]+rec(?:ord)?s?{_NUMWORD}|"
        rf"hospital{_NUMWORD}|unit[ \t]+(?:number|no\b\.?))[ \t]*(?:is[ \t]+)?[:#]?[ \t]*(?P<phi>{_IDVAL}))",
    ),
]
ACCESSION_PATTERNS = [
    (
        "accession",
        rf"(?i:\b(?:accession|acc(?:ession)?\b\.?){_NUMWORD}[ \t]*(?:is[ \t]+)?[:#]?[ \t]*(?P<phi>{_IDVAL}))",
    ),
]
ID_PATTERNS = [
    (
        "labelled",
        rf"(?i:\b(?:patient[ \t]+id|pt[ \t]+id|id[ \t]*(?:number|no|#)|exam[ \t]*(?:#|number|no\b\.?)|"
        rf"order[ \t]*(?:#|number|no\b\.?)|visit{_NUMWORD}|encounter{_NUMWORD}|account{_NUMWORD}|acct{_NUMWORD}|"
        rf"fin{_NUMWORD}|csn|study[ \t]+id|requisition{_NUMWORD}|ssn|social[ \t]+security{_NUMWORD}|"
        rf"insurance[ \t]+(?:id|number|no\b\.?)|member[ \t]+id|npi)[ \t]*[:#]?[ \t]*(?P<phi>{_IDVAL}))",
    ),
    ("id_colon", rf"\bID[ \t]*[:#][ \t]*(?P<phi>{_IDVAL})"),
    ("ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
]

# ---- addresses, phones, e-mails, dates --------------------------------------------------------------------------
_SUFFIXES = wordlist(
    "Street St Avenue Ave Road Rd Boulevard Blvd Drive Dr Lane Ln Way Court Ct Place Pl Terrace Ter Circle Cir "
    "Parkway Pkwy Highway Hwy Square Sq Trail Trl Plaza Row Crescent Close Alley Loop Pike Turnpike"
)
_SUFFIX = "(?:" + "|".join(f"{s}|{s.upper()}" for s in _SUFFIXES) + r")\b\.?"
_STATES = wordlist(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH "
    "OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR"
)
_STREETWORD = rf"(?:{_CAP}|{_UP}|\d+(?:st|nd|rd|th))"
ADDRESS_PATTERNS = [
    (
        "street",
        rf"\b\d{{1,6}}[A-Za-z]?[ \t]+(?:[NSEW]\.?[ \t]+)?(?:{_STREETWORD}[ \t]+){{1,3}}{_SUFFIX}"
        rf"(?:,?[ \t]*(?i:apt|apartment|suite|ste|unit|#)\.?[ \t]*#?[A-Za-z0-9-]+)?",
    ),
    (
        "city_state_zip",
        rf"\b(?:{_CAP}[ \t]+){{0,2}}{_CAP},?[ \t]+(?:{'|'.join(_STATES)})\.?[ \t]+\d{{5}}(?:-\d{{4}})?\b",
    ),
    ("zip", r"(?i:\b(?:zip|postal)(?:[ \t]*code)?[ \t]*:?[ \t]*)(?P<phi>\d{5}(?:-\d{4})?)\b"),
    ("po_box", r"(?i:\bP\.?[ \t]?O\.?[ \t]*Box[ \t]+\d+\b)"),
]
PHONE_PATTERNS = [
    ("us", r"(?<![\w.-])(?:\+?1[ \t.-]?)?(?:\(\d{3}\)[ \t]?|\d{3}[ \t.-])\d{3}[ \t.-]\d{4}(?![\w-]|\.\d)"),
    ("local", r"(?<![\w.-])\d{3}[-.]\d{4}(?![\w-]|\.\d)"),
    (
        "labelled",
        r"(?i:\b(?:pager|beeper|bleep|ext|extension|phone|tel|telephone|cell|mobile|fax|callback|call[ \t]+back)"
        r"\b\.?[ \t]*(?:number|no\b\.?|#)?[ \t]*(?:at|is)?[ \t]*[:#]?[ \t]*)(?P<phi>\d[\d-]{1,}\d)\b",
    ),
    # "555-1234 x567": an extension only right after a phone-shaped number ("22 x 14 mm" is a size)
    ("extension", r"(?<=\d{3}[-.]\d{4})[ \t]*(?i:x|ext\b\.?|extension)[ \t]*\d{1,6}\b"),
]
EMAIL_PATTERNS = [("email", r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")]
DATE_PATTERNS = [
    ("date", DATE_RE.pattern),
    # "on 3/12", "since 12/3": a day and month only with a preposition (bare "3/12" is a ratio or a grade)
    ("short", rf"(?i:\b(?:on|dated|since|from|until|till)[ \t]+)(?P<phi>{DAY}/{DAY})(?![/\d])"),
    ("month_year", rf"(?i:\b(?:on|dated|since|from|in|until)[ \t]+)(?P<phi>{MONTH_NUM}/(?:19|20)\d{{2}})(?![/\d])"),
]


class GroupPatternRecognizer(LocalRecognizer):
    """Regex recogniser whose result is the ``phi`` group when the pattern has one (else the whole match)."""

    def __init__(self, entity: str, patterns: list[tuple[str, str]], *, score: float = 0.85, name: str = "") -> None:
        self._compiled = [(n, regex.compile(p)) for n, p in patterns]
        self._score = score
        super().__init__(supported_entities=[entity], name=name or f"medclip_{entity.lower()}")

    def load(self) -> None:  # patterns are compiled in __init__; nothing to load
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list[RecognizerResult]:
        out = []
        entity = self.supported_entities[0]
        for _, pattern in self._compiled:
            for m in pattern.finditer(text):
                start, end = m.span("phi") if "phi" in pattern.groupindex else m.span()
                if end > start:
                    out.append(RecognizerResult(entity, start, end, self._score))
        return out


class FastPhoneRecognizer(PhoneRecognizer):
    """presidio's phonenumbers-based recogniser, run only when the text has a long enough run of digits."""

    _HINT = regex.compile(r"\d[\d \t().-]{5,}\d")

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list[RecognizerResult]:
        if not self._HINT.search(text):
            return []
        results = super().analyze(text, entities, nlp_artifacts)
        for r in results:
            r.score = max(r.score, 0.6)  # the context boost needs lemmas, which the no-op NLP engine has not got
        return results


def build_recognizers(*, phone_regions: tuple[str, ...] = ("US",)) -> list:
    """The recognisers the scrubber registers (one list: the analyzer runs each on every text)."""
    return [
        GroupPatternRecognizer("PERSON", NAME_PATTERNS, score=0.8),
        GroupPatternRecognizer("MRN", MRN_PATTERNS, score=0.9),
        GroupPatternRecognizer("ACCESSION", ACCESSION_PATTERNS, score=0.9),
        GroupPatternRecognizer("ID", ID_PATTERNS, score=0.85),
        GroupPatternRecognizer("ADDRESS", ADDRESS_PATTERNS, score=0.8),
        GroupPatternRecognizer("PHONE_NUMBER", PHONE_PATTERNS, score=0.7),
        GroupPatternRecognizer("EMAIL_ADDRESS", EMAIL_PATTERNS, score=0.9),
        GroupPatternRecognizer("DATE_TIME", DATE_PATTERNS, score=0.85),
        FastPhoneRecognizer(supported_regions=phone_regions),
        IpRecognizer(supported_entity="ID"),
    ]
