"""Rule-based radiology report labeler: CheXpert / ChestX-ray14 observations as 1 / 0 / -1 / blank per report.

In the spirit of the CheXpert labeler and NegBio (mention phrases, then negation and uncertainty), but an independent
implementation on regular expressions instead of a parser, so it labels thousands of reports per second on one core.
Everything is a pure function of text; the vocabulary lives in YAML files (``rules/``: ``chexpert.yaml``,
``chestxray14.yaml``, ``triggers.yaml``, each documented at the top) that a user YAML can extend without code changes.

API::

    rules = load_rules("chexpert", user_rules=None)         # Rules; user_rules: path / dict merged on top
    label_text(text, rules, sections=("impression", "findings"))  # {label: Mention | None}
    label_report(text, "chexpert")                           # {label: 1 | 0 | -1 | None}

How a report is read: :func:`~medclip.reports.sections.parse_sections` (or a ready ``{"findings": .., "impression": ..}``
mapping), then each sentence of the chosen sections is lowercased and scanned with one combined regex of mention
phrases and one of triggers. A mention is negative / uncertain when a trigger has it in scope (pre triggers look
forward, post triggers backward over a list of findings, near triggers a few words either way; terminators such as
"but" end scopes; pseudo triggers such as "not significantly changed" keep it positive; hypothetical ones such as "if"
drop the mention; weak ones such as "or" hedge a mention that nothing else has in scope). A label's report value is
positive > uncertain > negative over its mentions (the CheXpert convention); a set whose labels are binary
(ChestX-ray14, ``uncertain: negative``) then reports uncertain as 0. "No Finding" is derived from the others. Side
(left / right / bilateral) and severity words near the deciding mention are kept as :class:`Mention` attributes.
Where the two built-in sets differ, and why: docs/labels.md.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medclip.errors import InputError
from medclip.registry import did_you_mean
from medclip.reports.label_rules import LABEL_SETS, Phrase, Rules, load_rules
from medclip.reports.sections import SECTION_NAMES, parse_sections, split_sentences

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SECTIONS",
    "LABEL_SETS",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "Mention",
    "Rules",
    "check_sections",
    "label_report",
    "label_text",
    "load_rules",
]

DEFAULT_SECTIONS = ("impression", "findings")
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}  # report value: positive > uncertain > negative
# A verb between two findings means they are separate clauses, so a post trigger after the second does not reach
# back to the first ("effusion is stable, pneumothorax has resolved").
_CLAUSE_VERB_RE = re.compile(r"\b(?:is|are|was|were|has|have|had|been|appears?|remains?|seen|noted|persists?|shows?)\b")
_SIDE_RE = re.compile(r"\b(left|right|bilateral|bilaterally|both|bibasilar|bibasal)\b")
_SEVERITY_WORDS = (
    "trace|tiny|minimal|minimally|small|mild|mildly|slight|slightly|moderate|moderately|large|severe|"
    "severely|marked|markedly|extensive|massive|substantial"
)
_SEVERITY_RE = re.compile(rf"\b({_SEVERITY_WORDS})(?:[\s\-]+to[\s\-]+({_SEVERITY_WORDS}))?\b")


@dataclass(frozen=True)
class Mention:
    """The deciding mention of one label in one report.

    Attributes:
        value: 1 positive, 0 negative, -1 uncertain.
        section: section it came from (None for the derived No Finding).
        sentence: index of the sentence within that section (-1 when derived).
        phrase: the matched text; evidence: the whole (lowercased) sentence.
        attributes: ``side`` (left / right / bilateral) and ``severity`` (e.g. small, mild, moderate to large) when
            written near the mention; ``hedged: "yes"`` when a set with binary labels reported an uncertain mention
            as 0.
    """

    value: int
    section: str | None = None
    sentence: int = -1
    phrase: str = ""
    evidence: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------- labelling
def _words(s: str, a: int, b: int) -> int:
    return len(s[a:b].split())


def _find_mentions(s: str, rules: Rules) -> list[tuple[int, int, Phrase]]:
    """Mentions in one lowercased sentence, overlapping ones resolved.

    A match inside an earlier one is dropped ("effusion" inside "pericardial effusion"), except that a phrase with a
    ``...`` gap does not hide other labels' mentions in its gap ("heart size and mediastinal contours are normal").
    """
    kept: list[tuple[int, int, Phrase]] = []
    for m in rules.mention_re.finditer(s):
        idx = m.lastindex or 0
        start, end, phrase = m.start(), m.start(idx), rules.phrases[idx]
        hidden = False
        for ks, ke, kp in kept:
            if ks <= start and end <= ke:
                shared = {lab for lab, _ in kp.targets} & {lab for lab, _ in phrase.targets}
                hidden = not kp.gap or not kp.targets or bool(shared)
                if hidden:
                    break
        if not hidden:
            kept.append((start, end, phrase))
    return [k for k in kept if k[2].targets]


def _polarity(kinds: Iterable[str]) -> int | None:
    """Trigger kinds in scope -> value; None for a hypothetical mention (dropped)."""
    kinds = list(kinds)
    if any(k.startswith("hypothetical") for k in kinds):
        return None
    if any(k.startswith("uncertain") for k in kinds):
        return UNCERTAIN
    return NEGATIVE if any(k.startswith("negation") for k in kinds) else POSITIVE


def _adjacent(s: str, a: int, b: int, near: int) -> bool:
    """A near trigger reaches a mention across at most ``near`` words of its own clause (no , ; : in between)."""
    gap = s[a:b]
    return len(gap.split()) <= near and not any(c in gap for c in ",;:")


def _pre(s: str, start: int, before: list[tuple[int, int, str]], w: dict[str, int], lo: int) -> str | None:
    """The pre / near trigger whose forward scope reaches a mention starting at ``start`` (``lo``: end of the
    previous mention, which a near trigger before it belongs to)."""
    if not before:
        return None
    ts, te, kind = before[-1]  # anything else in between (terminator, pseudo, post trigger) closes the scope
    if kind.endswith(".pre"):
        return kind if _words(s, te, start) <= w["pre"] else None
    if kind.endswith(".near"):
        return kind if ts >= lo and _adjacent(s, te, start, w["near"]) else None
    return None


def _post(s: str, end: int, after: list[tuple[int, int, str]], later: list[tuple[int, int]], w: dict[str, int]):
    """The post / near trigger whose backward scope reaches a mention ending at ``end``."""
    if not after:
        return None
    ts, te, kind = after[0]
    if kind.endswith(".near"):
        hi = later[0][0] if later else len(s)  # a near trigger past the next mention is that mention's
        return kind if te <= hi and _adjacent(s, end, ts, w["near"]) else None
    if not kind.endswith(".post"):
        return None
    pos, words = end, 0
    for ms, me in later:  # other findings before the trigger must be a list with this one
        if ms >= ts:
            break
        if _CLAUSE_VERB_RE.search(s, pos, ms):
            return None
        words += _words(s, pos, ms)
        pos = max(pos, me)
    words += _words(s, pos, ts)
    return kind if words <= w["post"] else None


def _attributes(s: str, lo: int, start: int, end: int, hi: int) -> dict[str, str]:
    """Side and severity written within a few words of the mention, inside its clause."""
    before = re.split(r"[,;:]", s[lo:start])[-1].split()[-4:]
    after = re.split(r"[,;:]", s[end:hi])[0].split()[:4]
    window = " ".join([*before, s[start:end], *after])
    out: dict[str, str] = {}
    sides = {"left" if w == "left" else "right" if w == "right" else "bilateral" for w in _SIDE_RE.findall(window)}
    if sides:
        out["side"] = "bilateral" if len(sides) > 1 else sides.pop()
    severity = _SEVERITY_RE.search(window)
    if severity:
        words = [_ADVERB.get(w, w) for w in severity.groups() if w]
        out["severity"] = " to ".join(words)
    return out


_ADVERB = {
    "mildly": "mild",
    "moderately": "moderate",
    "severely": "severe",
    "markedly": "marked",
    "slightly": "slight",
    "minimally": "minimal",
}


def _sentence(s: str, rules: Rules, detail: bool) -> list[tuple[str, int, int, int, dict[str, str]]]:
    """(label, value, start, end, attributes) for every mention in one lowercased sentence."""
    mentions = _find_mentions(s, rules)
    if not mentions:
        return []
    kinds = rules.trigger_kinds
    triggers = [(m.start(), m.end(), kinds[m.lastindex or 0]) for m in rules.trigger_re.finditer(s)]
    # Weak triggers ("or") open and close no scope: they only hedge a mention nothing else has in scope, and only
    # where they join two findings ("atelectasis or pneumonia"), not two modifiers ("new or increased effusion").
    weak = [(ts, te) for ts, te, k in triggers if k == "uncertain.weak" and not rules.coordinated_re.search(s, 0, ts)]
    triggers = [t for t in triggers if t[2] not in ("ignore", "uncertain.weak")]
    spans = [(a, b) for a, b, _ in mentions]
    # A trigger inside a mention phrase ("heart is not enlarged") belongs to that mention only.
    outer = [t for t in triggers if not any(a <= t[0] and t[1] <= b for a, b in spans)]
    out = []
    # Hypothetical triggers reach to the sentence edge whatever lies between ("if there is concern for fracture").
    hypo_from = min((te for _, te, k in outer if k == "hypothetical.pre"), default=len(s) + 1)
    hypo_to = max((ts for ts, _, k in outer if k == "hypothetical.post"), default=-1)
    for i, (start, end, phrase) in enumerate(mentions):
        if start >= hypo_from or end <= hypo_to:
            continue
        inner = [k for ts, te, k in triggers if start <= ts and te <= end and k != "terminate"]
        if inner:
            value = _polarity(inner)
        else:
            before = [t for t in outer if t[1] <= start]
            pre = _pre(s, start, before, rules.windows, spans[i - 1][1] if i else 0)
            post = _post(s, end, [t for t in outer if t[0] >= end], spans[i + 1 :], rules.windows)
            value = _polarity(k for k in (pre, post) if k)
            asserted = bool(before) and before[-1][2] == "pseudo"  # "no change in the effusion or atelectasis"
            if value == POSITIVE and weak and not asserted and _near_weak(s, i, spans, weak, rules.windows["near"]):
                value = UNCERTAIN  # "atelectasis or pneumonia"; "no effusion or pneumothorax" stays negative
        if value is None:
            continue
        attrs = {}
        if detail:
            lo = spans[i - 1][1] if i else 0
            attrs = _attributes(s, lo, start, end, spans[i + 1][0] if i + 1 < len(spans) else len(s))
        for label, kind in phrase.targets:
            if kind == "normal":  # describes absence; a trigger inside it flips it ("heart size is not normal")
                label_value = {UNCERTAIN: UNCERTAIN, NEGATIVE: POSITIVE}.get(value, NEGATIVE) if inner else NEGATIVE
            elif kind == "hedged":  # only suggests the finding: asserted it is uncertain, denied it is negative
                label_value = NEGATIVE if value == NEGATIVE else UNCERTAIN
            else:
                label_value = value
            out.append((label, label_value, start, end, attrs))
    return out


def _near_weak(s: str, i: int, spans: list[tuple[int, int]], weak: list[tuple[int, int]], near: int) -> bool:
    """Whether a weak trigger is next to mention ``i``: within ``near`` words, no other mention and no , ; : between."""
    start, end = spans[i]
    lo = spans[i - 1][1] if i else 0
    hi = spans[i + 1][0] if i + 1 < len(spans) else len(s)
    for ts, te in weak:
        if lo <= ts and te <= start and _adjacent(s, te, start, near):
            return True
        # "effusion, or pneumonia": a comma right before the weak trigger still joins the two
        if end <= ts and te <= hi and (_adjacent(s, end, ts, near) or s[end:ts].strip() == ","):
            return True
    return False


def check_sections(sections: Iterable[str] | str) -> tuple[str, ...]:
    """``"impression,findings"`` or a sequence -> validated tuple of section names (ValueError naming the bad one)."""
    return _check_sections(tuple(s.strip() for s in (sections.split(",") if isinstance(sections, str) else sections)))


@functools.lru_cache(maxsize=64)
def _check_sections(sections: tuple[str, ...]) -> tuple[str, ...]:
    for name in sections:
        if name not in SECTION_NAMES:
            hint = did_you_mean(name, SECTION_NAMES)
            raise InputError(f"unknown report section '{name}'.{hint} Allowed: {', '.join(SECTION_NAMES)}")
    if not sections:
        raise InputError(f"sections must name at least one of {', '.join(SECTION_NAMES)}")
    return sections


def _sentences(text: str | Mapping[str, Any] | None, sections: Iterable[str] | str):
    """(section, index, lowercased sentence) of the chosen sections; a section repeated verbatim is read once."""
    names = check_sections(sections)
    parsed = text if isinstance(text, Mapping) else parse_sections(text)
    seen: set[str] = set()
    for name in names:
        value = parsed.get(name)
        if not isinstance(value, str) or not value.strip() or value in seen:
            continue  # manifest rows carry None / NaN for missing sections
        seen.add(value)
        for i, sentence in enumerate(split_sentences(value)):
            yield name, i, sentence.lower()


def _resolve(rules: Rules | str | None) -> Rules:
    if isinstance(rules, Rules):
        return rules
    return load_rules(rules or "chexpert")


def _label(text: Any, rules: Rules, sections: Iterable[str] | str, detail: bool) -> dict[str, Mention | None]:
    best: dict[str, Mention] = {}
    sides: dict[str, set[str]] = {}
    any_sentence = False
    for section, idx, sentence in _sentences(text, sections):
        any_sentence = True
        for label, value, start, end, attrs in _sentence(sentence, rules, detail):
            cur = best.get(label)
            if cur is None or _RANK[value] > _RANK[cur.value]:
                best[label] = Mention(value, section, idx, sentence[start:end], sentence, attrs)
                sides[label] = set()
            if best[label].value == value and "side" in attrs:
                sides[label].add(attrs["side"])
    out: dict[str, Mention | None] = {}
    for label in rules.labels:
        m = best.get(label)
        if m is not None and len(sides[label]) > 1:  # "left effusion ... right effusion" -> bilateral
            m = Mention(m.value, m.section, m.sentence, m.phrase, m.evidence, {**m.attributes, "side": "bilateral"})
        if m is not None and m.value == UNCERTAIN and rules.uncertain_value != UNCERTAIN:
            # A set with binary labels (ChestX-ray14) reports a hedged finding as not present; the mention says why.
            m = Mention(
                rules.uncertain_value, m.section, m.sentence, m.phrase, m.evidence, {**m.attributes, "hedged": "yes"}
            )
            best[label] = m
        out[label] = m
    if rules.no_finding:
        blocked = any(m.value != NEGATIVE for lab, m in best.items() if lab not in rules.no_finding_ignore)
        value = None if not any_sentence else rules.no_finding_otherwise if blocked else POSITIVE
        out[rules.no_finding] = None if value is None else Mention(value)
    return out


def label_text(
    text: str | Mapping[str, Any] | None, rules: Rules | str | None = None, *, sections=DEFAULT_SECTIONS
) -> dict[str, Mention | None]:
    """Label one report with detail: label -> deciding :class:`Mention` (None when not mentioned).

    Args:
        text: raw report text, or an already parsed mapping with section keys (``findings``, ``impression``, ...).
        rules: a :class:`Rules`, a label-set name, or None for ``chexpert``.
        sections: sections to read, in order (a tuple or ``"impression,findings"``).
    """
    return _label(text, _resolve(rules), sections, detail=True)


def label_report(
    text: str | Mapping[str, Any] | None, label_set: str = "chexpert", *, sections=DEFAULT_SECTIONS, rules=None
) -> dict[str, int | None]:
    """Label one report: label -> 1 / 0 / -1 / None (not mentioned). ``rules`` overrides ``label_set``."""
    found = _label(text, _resolve(rules or label_set), sections, detail=False)
    return {label: None if m is None else m.value for label, m in found.items()}
