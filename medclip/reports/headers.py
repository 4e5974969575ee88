"""Report section headers: the vocabulary, typo tolerance and where a header starts a section in a line.

:func:`cut_line` is the one place that decides whether "FINDINGS:", "Impresion -", "findings" alone on a line or a
"HISTORY:" in the middle of a line flattened by an export opens a section; :mod:`medclip.reports.sections` builds the
sections from its cuts. Pure functions of strings, like the parser.
"""

from __future__ import annotations

import functools
import re

__all__ = ["HEADER_OF", "HEADER_VARIANTS", "NON_IMAGING", "WEAK_HEADERS", "cut_line", "strip_own_header", "typo_limit"]

# Header spellings (lowercase; a space matches any whitespace) -> section. "_other" headers end the section before
# them but their text is dropped: call-back notes ("discussed with Dr. ___ at 10:00") are not image content.
HEADER_VARIANTS: dict[str, tuple[str, ...]] = {
    "impression": ("impression", "impressions", "impresssion", "impresion", "impresions", "imprssion", "impresson",
                   "final impression", "clinical impression", "conclusion", "conclusions", "summary", "opinion",
                   "interpretation"),
    "findings": ("findings", "finding", "findngs", "fidings", "report", "observations", "observation"),
    "indication": ("indication", "indications", "clinical indication", "clinical indications", "reason for exam",
                   "reason for examination", "reason for study", "reason for request", "clinical information",
                   "clinical info", "clinical data", "clinical details"),
    "history": ("history", "clinical history", "medical history", "past medical history", "patient history", "hx",
                "clinical hx"),
    "comparison": ("comparison", "comparisons", "comparison study", "comparison studies", "comparison exam",
                   "comparison exams", "prior", "priors", "prior study", "prior studies", "prior exam", "prior exams",
                   "reference exam", "reference study"),
    "technique": ("technique", "techniques", "procedure", "procedures"),
    "examination": ("examination", "examinations", "exam", "exams", "type of examination", "type of exam", "study"),
    "addendum": ("addendum",),
    # Ends the section before it; the text is not image content (call-backs, advice for the referrer).
    "_other": ("notification", "notifications", "communication", "recommendation", "recommendations", "follow up",
               "follow-up", "followup", "advice"),
}  # fmt: skip
HEADER_OF = {v: name for name, variants in HEADER_VARIANTS.items() for v in variants}


# Headers that are also ordinary words of report text ("compared with the prior: ..."); in the middle of a line they
# start a section only in capitals or right after a sentence end.
WEAK_HEADERS = frozenset({
    "prior", "priors", "prior study", "prior studies", "prior exam", "prior exams", "study", "exam", "exams", "report",
    "procedure", "procedures", "summary", "opinion", "observation", "observations", "hx", "clinical hx",
})  # fmt: skip
# Real words within a typo's distance of a header; they are never headers ("depression" is 2 edits from impression).
_NOT_HEADERS = frozenset({
    "depression", "expression", "compression", "suppression", "regression", "progression", "impressive", "procession",
    "confusion", "contusion", "conclusive", "histology", "indicated", "indicates", "induction", "binding", "bindings",
    "funding", "holdings", "readings", "sidings", "windings", "reporter", "reported", "deport", "export", "mystery",
    "prion", "price", "pride", "print", "technical", "comparable", "compassion", "opinions",
})  # fmt: skip
NON_IMAGING = ("indication", "history", "comparison", "technique", "examination")
# Words before a header that make it part of a sentence ("a new finding: ...", "the impression: ...").
_ARTICLES = frozenset(["a", "an", "the", "this", "that", "these", "those", "new", "no", "any", "other", "same", "such"])
_JOINER_WORDS = frozenset({"and", "&", "/", "+", ","})
_SEP_RE = re.compile(r"[ \t]*(?::+(?:[ \t]*-+(?=\s|$))?|-{2,}|[\u2013\u2014]+|(?<=\s)-+(?=\s|$))")
_SENTENCE_END_RE = re.compile(r"(?<![A-Z][a-z]\.)(?<!\b[A-Z]\.)(?<=[.!?])\s+(?=[A-Z0-9])")  # not after "Dr." / "J."
_PLURAL_RE = re.compile(r"(?<=[A-Za-z])\(s\)\s*$", re.IGNORECASE)
_TOKEN_RE = re.compile(r"[A-Za-z](?:[A-Za-z']|-(?=[A-Za-z]))*|[&/+,]|\S")


def _typo_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment edit distance (insert, delete, substitute, swap neighbours), capped at limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def typo_limit(header: str) -> int:
    """Edits a spelling of ``header`` may carry and still be read as it: none under 6 letters, 1 up to 8, else 2.

    An edit is an insertion, deletion, substitution or swap of neighbours, never of the first letter.
    """
    letters = sum(c.isalpha() for c in header)
    return 0 if letters < 6 else 1 if letters <= 8 else 2


@functools.lru_cache(maxsize=8192)
def _header_part(words: str) -> tuple[str, bool] | None:
    """One header phrase (lowercase, single spaces) -> (section, exact) or None; typos within :func:`typo_limit`."""
    if words in HEADER_OF:
        return HEADER_OF[words], True
    if words in _NOT_HEADERS or not words.replace(" ", "").isalpha():
        return None
    best: tuple[int, set[str]] = (3, set())
    for variant, name in HEADER_OF.items():
        limit = typo_limit(variant)
        if limit and variant[0] == words[0]:  # typos keep the first letter ("Pression" is not an impression)
            d = _typo_distance(words, variant, limit)
            if d <= limit and d <= best[0]:
                best = (d, {name} if d < best[0] else best[1] | {name})
    return (best[1].pop(), False) if len(best[1]) == 1 else None  # ambiguous typos are not headers


def _header_phrase(tokens: list[str]) -> tuple[tuple[str, ...], bool, bool] | None:
    """Header tokens -> (sections, every part exact, weak) or None; parts joined by and / & / "/" / "+" / ",".

    ``"FINDINGS AND IMPRESSION"`` -> ``(("findings", "impression"), True, False)``.
    """
    parts: list[list[str]] = [[]]
    for tok in tokens:
        if tok.lower() in _JOINER_WORDS:
            parts.append([])
        else:
            parts[-1].append(tok.lower())
    if any(not p for p in parts) or len(parts) > 3:
        return None
    names, exact, weak = [], True, len(parts) == 1
    for p in parts:
        words = " ".join(p)
        found = _header_part(words)
        if found is None:
            return None
        names.append(found[0])
        exact = exact and found[1]
        weak = weak and words in WEAK_HEADERS
    return tuple(dict.fromkeys(names)), exact, weak


def _tokens_before(region: str, limit: int = 6) -> list[re.Match[str]]:
    """The trailing run of words / joiners of ``region`` (at most ``limit``): where a header before a separator is."""
    run: list[re.Match[str]] = []
    for tok in reversed(list(_TOKEN_RE.finditer(region[-80:]))):
        if not (tok.group()[0].isalpha() or tok.group() in _JOINER_WORDS) or len(run) == limit:
            break
        run.append(tok)
    run.reverse()
    return run


def _case(phrase: str) -> str:
    letters = [c for c in phrase if c.isalpha()]
    return "upper" if all(c.isupper() for c in letters) else "title" if phrase[:1].isupper() else "lower"


def _accept(line: str, start: int, phrase: str, found: tuple, sep: str, previous: tuple | None, flat: bool) -> bool:
    """Whether a header phrase at ``line[start:]`` followed by ``sep`` starts a section (see :func:`cut_line`).

    ``previous``: (sections, phrase) of the header before it on this line, if any; ``flat``: the whole report is
    this one line.
    """
    keys, exact, weak = found
    before = line[:start].rstrip()
    if not before:
        return True
    case = _case(phrase)
    prev_word = before.split()[-1].strip("\"'([").lower()
    if before[-1] == ":" and all(k in NON_IMAGING for k in keys):
        return False  # "INDICATION: History: cough" - a header word right after a header is its text
    if case == "upper":
        return prev_word not in _ARTICLES
    boundary = before[-1] in ".!?;" or line[:start].endswith("  ")
    if weak:
        return False  # "Hx: smoker", "Prior: ..." in lower / title case are text
    if not (flat or previous is not None):
        # Inside a section's prose (a line that does not open with a header, in a report of several lines) only a
        # findings / impression header after a sentence end starts a section, as hard wrapping leaves them there
        # ("... are\nstable. impression: stable chest."); "... normal in size. Comparison: stable since 2019." is text.
        return boundary and sep.startswith(":") and exact and set(keys) <= {"findings", "impression"}
    if boundary:
        return sep.startswith(":") or case == "title"
    # No sentence end before it ("history: cough findings: clear"): an exact header that continues the line's header
    # style (same case, a colon) and opens another section. "FINDINGS: Chest Comparison: ..." is a sub-heading.
    return (
        sep.startswith(":")
        and exact
        and prev_word not in _ARTICLES
        and previous is not None
        and _case(previous[1]) == case
        and set(keys) != set(previous[0])
    )


def cut_line(line: str, *, flat: bool = False) -> list[tuple[tuple[str, ...] | None, str]]:
    """A line -> ``[(None, text before any header), (sections, text after a header), ...]``.

    A header is a known spelling (or a typo within :func:`typo_limit`) followed by a separator (``:``, ``::``,
    ``--``, a spaced ``-``, an en / em dash, a space before any of them) or alone on its line. At the start of a line
    it always counts; in the middle of a line (reports flattened to one line by an export) it counts when written in
    capitals, or, on a line that opens with a header or in a one-line report (``flat``), after a sentence end or
    when an exact header with a colon continues the style of a header earlier on the line and opens another section
    ("history: cough findings: clear"), and elsewhere only as a findings / impression header after a sentence end
    (hard wrapping leaves "... stable. impression: stable chest." mid-line); never after an article ("a new finding: ..." stays text), and a weak header
    ("prior", "study") only in capitals. A call-back or recommendation in the middle of a line ("Recommendation: CT
    in 3 months. No effusion.") ends at its sentence end: the text after it goes back (``("_back",)``) to the
    section it interrupted.
    """
    cuts: list[tuple[int, int, tuple[str, ...]]] = []  # (header start, text start, sections)
    last = 0
    separators = _SEP_RE.finditer(line) if any(c in line for c in ":-\u2013\u2014") else ()
    for m in separators:
        if m.start() <= last:
            continue
        region = line[last : m.start()]
        plural = _PLURAL_RE.search(region)  # "RECOMMENDATION(S):", "IMPRESSION(S):"
        region = region[: plural.start()] if plural else region
        run = _tokens_before(region)
        offset = last + max(0, len(region) - 80)
        for k in range(len(run), 0, -1):
            sub = run[-k:]
            if not sub[0].group()[0].isalpha():
                continue
            found = _header_phrase([t.group() for t in sub])
            if found is None:
                continue
            start = offset + sub[0].start()
            phrase = line[start : m.start()].strip()
            previous = (cuts[-1][2], line[cuts[-1][0] : cuts[-1][1]]) if cuts else None
            if _accept(line, start, phrase, found, m.group().strip(), previous, flat):
                cuts.append((start, m.end(), found[0]))
                last = m.end()
            break
    if not cuts:
        if len(line) > 60:  # the longest header alone on its line is a few words
            return [(None, line)]
        words = _TOKEN_RE.findall(line)
        found = _header_phrase(words) if words and words[0][0].isalpha() else None
        # A header alone on its line; in lower case not a weak one, since a hard-wrapped sentence may leave a word
        # such as "study" on a line of its own.
        if found and (not line.strip().islower() or not found[2]):
            return [(found[0], "")]
        return [(None, line)]
    pieces: list[tuple[tuple[str, ...] | None, str]] = []
    if line[: cuts[0][0]].strip():
        pieces.append((None, line[: cuts[0][0]]))
    for i, (start, text_start, keys) in enumerate(cuts):
        end = cuts[i + 1][0] if i + 1 < len(cuts) else len(line)
        rest = line[text_start:end]
        header = re.escape(" ".join(line[start:text_start].split()).rstrip(" :-\u2013\u2014"))
        rest = re.sub(
            rf"^(?:\s*{header}\s*(?::+|-{{2,}}))+", "", rest, flags=re.IGNORECASE
        )  # "INDICATION: INDICATION:"
        rest = rest.lstrip(" :-\u2013\u2014")
        back = _SENTENCE_END_RE.search(rest) if keys == ("_other",) and line[:start].strip() else None
        if back:
            pieces += [(keys, rest[: back.start()]), (("_back",), rest[back.end() :])]
        else:
            pieces.append((keys, rest))
    return pieces


def strip_own_header(line: str, section: str) -> str:
    """``line`` without the header of ``section`` it opens with, repeated or not ("INDICATION: INDICATION: cough" ->
    "cough"); other text, headers of other sections included, is kept."""
    while True:
        m = _SEP_RE.search(line)
        region = line[: m.start()] if m else line
        words = _TOKEN_RE.findall(_PLURAL_RE.sub("", region))
        found = _header_phrase(words) if words and words[0][0].isalpha() else None
        if found is None or section not in found[0]:
            return line
        if m is None:
            return ""  # the header alone
        line = line[m.end() :].lstrip(" :-\u2013\u2014")
