"""Property test of the section parser: reports rendered with random header spellings, typos, separators, casing,
line flattening and section order must come back section by section, exactly.

The generator writes reports the way exports and radiologists do (see issue #18's failing classes): headers at line
start or in the middle of a line flattened by an export, separators ``:``, `` :``, ``::``, ``--``, `` - ``, em dash
or the header alone on its line, typos within the parser's documented tolerance (:func:`typo_limit`: none under six
letters, one edit up to eight, two beyond; the first letter kept), any casing, hard wrapping. Whether a typo is
unambiguous is decided here with an independent edit distance, not with the parser's own.
"""

from __future__ import annotations

import os
import string

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medclip.reports.headers import HEADER_OF, HEADER_VARIANTS, WEAK_HEADERS, typo_limit  # noqa: E402
from medclip.reports.sections import parse_sections  # noqa: E402

SECTIONS = ("indication", "history", "comparison", "technique", "examination", "findings", "impression")
# Headers that are ordinary words too ("prior", "study"): the parser reads them mid-line only in capitals or after a
# sentence end, so the generator uses them at line start only.
WEAK = WEAK_HEADERS
SENTENCES = (
    "The lungs are clear.",
    "Heart size is normal.",
    "There is a small left pleural effusion.",
    "No pneumothorax is seen.",
    "Mild pulmonary vascular congestion.",
    "Right lower lobe opacity may represent pneumonia.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Degenerative changes of the thoracic spine.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "No acute cardiopulmonary process.",
    "Stable mild cardiomegaly.",
    "Cough and fever for 3 days.",
    "Shortness of breath, evaluate for pneumonia.",
    "PA and lateral views of the chest.",
    "Chest radiograph dated 01/02/2019.",
    "Increased bibasilar atelectasis compared with the prior study.",
    "Interval removal of the right chest tube.",
    "1. No acute process. 2. Stable nodule in the left upper lobe.",
    "Patient with a history of COPD.",
    "Low lung volumes with crowding of the bronchovascular markings.",
)


def _distance(a: str, b: str) -> int:
    """Levenshtein distance with adjacent swaps (Damerau, restricted); independent of the parser's implementation."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def _unambiguous(typo: str, section: str) -> bool:
    """The typo is nearer to (or as near as) a variant of its own section than to any other section's variant."""
    if typo in HEADER_OF:
        return HEADER_OF[typo] == section
    own = min(_distance(typo, v) for v in HEADER_VARIANTS[section] if len(v) >= 6)
    others = min(_distance(typo, v) for name, vs in HEADER_VARIANTS.items() if name != section for v in vs)
    return own < others


@st.composite
def typo(draw, variant: str) -> str:
    """``variant`` with up to :func:`typo_limit` random edits, never touching the first letter."""
    word = variant
    for _ in range(draw(st.integers(0, typo_limit(variant)))):
        op = draw(st.sampled_from(("sub", "ins", "del", "swap")))
        letters = [i for i in range(1, len(word)) if word[i].isalpha()]
        if not letters:
            break
        i = draw(st.sampled_from(letters))
        c = draw(st.sampled_from(string.ascii_lowercase))
        if op == "sub":
            word = word[:i] + c + word[i + 1 :]
        elif op == "ins":
            word = word[:i] + c + word[i:]
        elif op == "del" and len(word) > 3:
            word = word[:i] + word[i + 1 :]
        elif op == "swap" and i + 1 < len(word) and word[i + 1].isalpha():
            word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word


def _case(header: str, style: str) -> str:
    return header.upper() if style == "upper" else header.lower() if style == "lower" else header.title()


def _wrap(body: str, width: int) -> str:
    """Hard-wrap like a dictation system, at least three words per line (so no line is a lone header word)."""
    words, lines = body.split(), []
    while words:
        take = max(3, min(len(words), width))
        lines.append(" ".join(words[:take]))
        words = words[take:]
    if len(lines) > 1 and len(lines[-1].split()) < 3:
        tail = lines.pop()
        lines[-1] = f"{lines[-1]} {tail}"
    return "\n".join(lines)


@st.composite
def reports(draw):
    names = draw(st.lists(st.sampled_from(SECTIONS), min_size=1, max_size=len(SECTIONS), unique=True))
    assume("findings" in names or "impression" in names)
    flat = draw(st.booleans())
    style = draw(st.sampled_from(("upper", "lower", "title")))
    mixed_case = not flat and draw(st.booleans())  # header case may change from line to line in line-based reports
    parts, expected = [], {}
    for n, name in enumerate(names):
        variants = [v for v in HEADER_VARIANTS[name] if not (flat and n and v in WEAK)]
        variant = draw(st.sampled_from(variants))
        spelled = draw(typo(variant))
        # Edits drawn one after another can overlap (a swap, then a change of the swapped letter): keep typos that
        # really are within the tolerance of their header, and unambiguous.
        assume(_distance(spelled, variant) <= typo_limit(variant) and _unambiguous(spelled, name))
        header = _case(spelled, draw(st.sampled_from(("upper", "lower", "title"))) if mixed_case else style)
        body = " ".join(draw(st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=3, unique=True)))
        if flat and style == "upper" and n + 1 < len(names) and draw(st.booleans()):
            body = body.rstrip(".")  # "HISTORY: cough FINDINGS: ..." - exports drop the full stop too
        expected[name] = " ".join(body.split())
        seps = [":", " :", "::", ": "]
        if not flat:
            seps += ["\n", " -", " --", "--", " \u2014"]
        elif style != "lower":
            seps += [" --", " - ", " \u2014"]
        sep = draw(st.sampled_from(seps))
        if sep == "\n" and header.islower() and variant in WEAK:
            sep = ":"  # "study" alone on a line may be a hard-wrapped word; the parser reads it as text
        if not flat and draw(st.booleans()):
            body = _wrap(body, draw(st.integers(3, 12)))
        parts.append(f"{header}{sep}{'' if sep == chr(10) else ' '}{body}")
    joiner = " " if flat else draw(st.sampled_from(("\n", "\n\n", "\n \n")))
    text = joiner.join(parts)
    if draw(st.booleans()):
        text = ("FINAL REPORT " if flat else " FINAL REPORT\n") + text
    return text, expected


@settings(
    max_examples=int(os.environ.get("MEDCLIP_FUZZ_EXAMPLES", "400")),
    derandomize=not os.environ.get("MEDCLIP_FUZZ_EXAMPLES"),  # CI is reproducible; set the variable to explore
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    deadline=None,
    database=None,
)
@given(reports())
def test_parser_recovers_every_section(case) -> None:
    text, expected = case
    sections = parse_sections(text)
    for name in SECTIONS:
        assert sections[name] == expected.get(name), (name, text)
