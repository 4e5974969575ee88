"""Rule-based radiology report labeler: CheXpert / ChestX-ray14 observations as 1 / 0 / -1 / blank per report.

In the spirit of the CheXpert labeler and NegBio (mention phrases, then negation and uncertainty), but an independent
implementation on regular expressions instead of a parser, so it labels thousands of reports per second on one core.
Everything is a pure function of text; the vocabulary lives in YAML files (``labeler_rules/``: ``chexpert.yaml``,
``chestxray14.yaml``, ``triggers.yaml``, each documented at the top) that a user YAML can extend without code changes.

API::

    rules = load_rules("chexpert", user_rules=None)         # Rules; user_rules: path / dict merged on top
    label_text(text, rules, sections=("impression", "findings"))  # {label: Mention | None}
    label_report(text, "chexpert")                           # {label: 1 | 0 | -1 | None}

How a report is read: :func:`~medclip.data.reports.parse_sections` (or a ready ``{"findings": .., "impression": ..}``
mapping), then each sentence of the chosen sections is lowercased and scanned with one combined regex of mention
phrases and one of triggers. A mention is negative / uncertain when a trigger has it in scope (pre triggers look
forward, post triggers backward over a list of findings, near triggers a few words either way; terminators such as
"but" end scopes; pseudo triggers such as "not significantly changed" keep it positive; hypothetical ones such as "if"
drop the mention). A label's report value is positive > uncertain > negative over its mentions (the CheXpert
convention); "No Finding" is derived from the others. Side (left / right / bilateral) and severity words near the
deciding mention are kept as :class:`Mention` attributes.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medclip.data.reports import SECTION_NAMES, parse_sections, split_sentences
from medclip.registry import did_you_mean

logger = logging.getLogger(__name__)

RULES_DIR = Path(__file__).with_name("labeler_rules")
LABEL_SETS = ("chexpert", "chestxray14")
DEFAULT_SECTIONS = ("impression", "findings")
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
TRIGGER_KINDS = ("negation.pre", "negation.post", "negation.near", "uncertain.pre", "uncertain.post", "uncertain.near",
                 "hypothetical.pre", "hypothetical.post", "pseudo", "ignore", "terminate")  # fmt: skip
_LABEL_KEYS = ("mention", "normal", "exclude", "remove", "derived")
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}  # report value: positive > uncertain > negative
_GAP_STOP = r"(?:but|however|although|though|whereas|while)\b"
_SEP = r"[\s\-]+"
_TOKEN_RE = re.compile(r"\([^()]*\)|\.\.\.|\S+")
# A verb between two findings means they are separate clauses, so a post trigger after the second does not reach
# back to the first ("effusion is stable, pneumothorax has resolved").
_CLAUSE_VERB_RE = re.compile(r"\b(?:is|are|was|were|has|have|had|been|appears?|remains?|seen|noted|persists?|shows?)\b")
_SIDE_RE = re.compile(r"\b(left|right|bilateral|bilaterally|both|bibasilar|bibasal)\b")
_SEVERITY_WORDS = "trace|tiny|minimal|minimally|small|mild|mildly|slight|slightly|moderate|moderately|large|severe|" \
    "severely|marked|markedly|extensive|massive|substantial"  # fmt: skip
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
            written near the mention.
    """

    value: int
    section: str | None = None
    sentence: int = -1
    phrase: str = ""
    evidence: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Phrase:
    text: str
    targets: tuple[tuple[str, str], ...]  # (label, "mention" | "normal"); empty for exclusions
    gap: bool


@dataclass(frozen=True, eq=False)
class Rules:
    """A compiled label set: what :func:`load_rules` returns and every labelling function takes."""

    name: str
    labels: tuple[str, ...]
    no_finding: str | None
    no_finding_ignore: frozenset[str]
    no_finding_otherwise: int | None
    windows: dict[str, int]
    config: dict[str, Any]  # the merged YAML, for inspection
    _mention_re: re.Pattern[str]
    _phrases: tuple[_Phrase | None, ...]  # by regex group index
    _trigger_re: re.Pattern[str]
    _trigger_kinds: tuple[str | None, ...]


# ---------------------------------------------------------------------------------------------------- rule loading
def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"rules file {path}: cannot read it as YAML ({exc}); fix the file") from exc
    if not isinstance(data, dict):
        raise ValueError(f"rules file {path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _merge(base: Any, extra: Any) -> Any:
    """User config on top of built-in: mappings merge, lists extend (without duplicates), scalars are replaced."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(extra, list):
        return base + [v for v in extra if v not in base]
    return copy.deepcopy(extra)


def _user_config(user_rules: str | Path | Mapping | None) -> dict[str, Any]:
    if user_rules is None:
        return {}
    if isinstance(user_rules, Mapping):
        user = dict(user_rules)
    else:
        path = Path(user_rules)
        if not path.is_file():
            raise FileNotFoundError(f"rules file {path} does not exist; pass the path of a YAML rules file")
        user = _read_yaml(path)
    unknown = set(user) - {"triggers", "label_sets"}
    if unknown:
        key = sorted(unknown)[0]
        hint = did_you_mean(key, ["triggers", "label_sets"])
        raise ValueError(f"user rules: unknown top-level key '{key}'.{hint} Allowed: triggers, label_sets")
    return user


def _set_config(label_set: str, user: dict[str, Any]) -> dict[str, Any]:
    """The label set's YAML with the user's additions merged in (a user set may ``extends:`` a built-in one)."""
    user_sets = user.get("label_sets") or {}
    if label_set in LABEL_SETS:
        cfg = _read_yaml(RULES_DIR / f"{label_set}.yaml")
    elif label_set in user_sets:
        base = user_sets[label_set].get("extends")
        if base is not None and base not in LABEL_SETS:
            raise ValueError(f"user label set '{label_set}' extends unknown set '{base}'; use one of {LABEL_SETS}")
        cfg = _read_yaml(RULES_DIR / f"{base}.yaml") if base else {"labels": {}}
        cfg["name"] = label_set
    else:
        names = [*LABEL_SETS, *user_sets]
        raise ValueError(
            f"unknown label set '{label_set}'.{did_you_mean(label_set, names)} Available: {', '.join(names)}"
        )
    extra = {k: v for k, v in (user_sets.get(label_set) or {}).items() if k != "extends"}
    return _merge(cfg, extra)


def _phrase_regex(phrase: str, gap: int) -> tuple[str, bool]:
    """Phrase syntax (see triggers.yaml) -> (regex source, has a ``...`` gap)."""
    if phrase.startswith("re:"):
        source = phrase[3:].strip()
        if re.compile(source).groups:
            raise ValueError(f"rules phrase '{phrase}': use non-capturing groups (?:...) in raw regexes")
        return source, False
    parts, joiner, has_gap = [], "", False
    gap_re = rf"(?:{_SEP}(?!{_GAP_STOP})[^\s,;:\-]+){{0,{gap}}}{_SEP}"
    for token in _TOKEN_RE.findall(phrase.lower()):
        if token == "...":
            joiner, has_gap = gap_re, True
            continue
        if token.startswith("("):
            alts = [_SEP.join(_word(w) for w in alt.split()) for alt in token[1:-1].split("|")]
            regex = "(?:" + "|".join(sorted(alts, key=len, reverse=True)) + ")"
        else:
            regex = _word(token)
        parts += [joiner, regex] if parts else [regex]
        joiner = _SEP
    bare = phrase.strip("()")
    start = r"(?<!\w)" if bare[:1].isalnum() else ""
    end = r"(?!\w)" if bare[-1:].isalnum() else ""
    return start + "".join(parts) + end, has_gap


def _word(token: str) -> str:
    alts = []
    for alt in token.split("|"):
        star = alt.endswith("*")
        body = r"[\s\-]?".join(re.escape(p) for p in alt.rstrip("*").split("-")) if alt.strip("-") else re.escape(alt)
        alts.append(body + (r"\w*" if star else ""))
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(sorted(alts, key=len, reverse=True)) + ")"


def _expand_first(phrase: str) -> list[str]:
    """Alternatives in the first word become separate phrases, so every branch starts with a plain letter."""
    if phrase.startswith("re:"):
        return [phrase]
    first, *rest = _TOKEN_RE.findall(phrase)
    alts = first[1:-1].split("|") if first.startswith("(") else first.split("|")
    return [" ".join([alt, *rest]) for alt in alts] if len(alts) > 1 else [phrase]


def _combine(items: list[tuple[str, Any]], gap: int, lookahead: bool) -> tuple[re.Pattern[str], tuple]:
    """Phrases -> one alternation, longest phrase first, each ending in an empty group that says which matched.

    Speed matters here (a few hundred phrases, tried at every word of every sentence): the marker group sits at the
    end and branches are grouped by their first letter behind one shared word-start test, so ``re`` rejects a
    position after one-character checks instead of trying every phrase.
    """
    expanded = [(alt, phrase, info) for phrase, info in items for alt in _expand_first(phrase)]
    expanded.sort(key=lambda it: len(it[0].replace("...", "")), reverse=True)
    lettered: dict[str, list[tuple[str, tuple]]] = {}
    others: list[tuple[str, tuple]] = []
    for alt, phrase, info in expanded:
        regex, has_gap = _phrase_regex(alt, gap)
        body = regex.removeprefix(r"(?<!\w)")
        if body != regex and body[:1].isalnum() and body[1:2] not in ("?", "*", "+", "{"):
            lettered.setdefault(body[0], []).append((body[1:], (phrase, info, has_gap)))
        else:
            others.append((regex, (phrase, info, has_gap)))
    # Group numbers follow the pattern text, so the payload is collected in the order the branches are written.
    payload: list[Any] = [None]
    parts = []
    for letter, branches in lettered.items():
        parts.append(letter + "(?:" + "|".join(f"{b}()" for b, _ in branches) + ")")
        payload += [entry for _, entry in branches]
    alternatives = [r"(?<!\w)(?:" + "|".join(parts) + ")"] if parts else []
    alternatives += [f"{b}()" for b, _ in others]
    payload += [entry for _, entry in others]
    body = "|".join(alternatives) or "(?!)"
    return re.compile(f"(?=(?:{body}))" if lookahead else f"(?:{body})"), tuple(payload)


def _check_phrase(phrase: Any, where: str) -> None:
    if not isinstance(phrase, str) or not phrase.strip():
        # YAML 1.1 turns bare no / yes / on / off into booleans, the usual way a trigger list goes wrong.
        raise ValueError(f'{where}: phrase {phrase!r} is not a non-empty string; quote it in the YAML ("no")')


def _label_phrases(cfg: dict[str, Any], where: str) -> tuple[dict[str, list[tuple[str, str]]], str | None]:
    """label -> phrase table and the derived No Finding label, validating the set's ``labels`` block."""
    table: dict[str, list[tuple[str, str]]] = {}
    derived = None
    for label, spec in (cfg.get("labels") or {}).items():
        spec = spec or {}
        bad = [k for k in spec if k not in _LABEL_KEYS]
        if bad:
            raise ValueError(f"{where}: label '{label}' has unknown key '{bad[0]}'.{did_you_mean(bad[0], _LABEL_KEYS)}")
        if spec.get("derived") is not None:
            if spec["derived"] != "no_finding" or derived is not None:
                raise ValueError(f"{where}: only one label may be 'derived: no_finding' (label '{label}')")
            derived = str(label)
            continue
        removed = [str(r).lower() for r in spec.get("remove") or ()]
        for kind in ("mention", "normal", "exclude"):
            for phrase in spec.get(kind) or ():
                _check_phrase(phrase, f"{where}: label '{label}' {kind}")
                # `remove: [infection]` drops every phrase of the label that would match "infection".
                regex = re.compile(_phrase_regex(phrase, 5)[0]) if removed else None
                if regex is None or not any(regex.fullmatch(r) for r in removed):
                    table.setdefault(phrase.strip(), []).append((str(label), kind))
    return table, derived


def _compile(cfg: dict[str, Any], triggers: dict[str, Any]) -> Rules:
    where = f"label set '{cfg.get('name')}'"
    windows = {"pre": 15, "post": 8, "near": 3, "gap": 5, **(triggers.get("windows") or {})}
    table, derived = _label_phrases(cfg, where)
    labels = tuple(str(k) for k in (cfg.get("labels") or {}))
    items = []
    for phrase, targets in table.items():
        keep = tuple(dict.fromkeys((lab, kind) for lab, kind in targets if kind != "exclude"))
        items.append((phrase, keep))
    mention_re, m_payload = _combine(items, windows["gap"], lookahead=True)
    phrases = tuple(None if p is None else _Phrase(*p) for p in m_payload)
    t_items = []
    for kind in TRIGGER_KINDS:
        group, _, sub = kind.partition(".")
        values = (triggers.get(group) or {}).get(sub) if sub else triggers.get(group)
        for value in values or ():
            _check_phrase(value, f"triggers {kind}")
            t_items.append((value.strip(), kind))
    trigger_re, t_payload = _combine(t_items, windows["gap"], lookahead=False)
    nf = cfg.get("no_finding") or {}
    ignore = frozenset(str(x) for x in nf.get("ignore") or ())
    for name in ignore - set(labels):
        raise ValueError(f"{where}: no_finding.ignore names unknown label '{name}'.{did_you_mean(name, labels)}")
    otherwise = nf.get("otherwise", "blank")
    if otherwise not in ("blank", None, 0):
        raise ValueError(f"{where}: no_finding.otherwise must be blank or 0, got {otherwise!r}")
    return Rules(name=str(cfg.get("name")), labels=labels, no_finding=derived, no_finding_ignore=ignore,
                 no_finding_otherwise=0 if otherwise == 0 else None, windows=windows,
                 config={**cfg, "triggers": triggers}, _mention_re=mention_re, _phrases=phrases,
                 _trigger_re=trigger_re, _trigger_kinds=tuple(None if p is None else p[1] for p in t_payload))  # fmt: skip


def load_rules(label_set: str = "chexpert", user_rules: str | Path | Mapping | None = None) -> Rules:
    """Compile a label set, optionally with a user YAML (path or dict) merged on top.

    The user YAML may hold ``triggers:`` (same shape as ``triggers.yaml``) and ``label_sets:`` (name -> ``labels`` /
    ``no_finding`` blocks added to a built-in set, or a new set, optionally ``extends: chexpert``). Lists are
    extended; a label's ``remove:`` list drops built-in phrases.
    """
    if user_rules is None and label_set in LABEL_SETS:
        return _builtin(label_set)
    user = _user_config(user_rules)
    triggers = _merge(_read_yaml(RULES_DIR / "triggers.yaml"), user.get("triggers") or {})
    return _compile(_set_config(label_set, user), triggers)


@functools.cache
def _builtin(label_set: str) -> Rules:
    return _compile(_set_config(label_set, {}), _read_yaml(RULES_DIR / "triggers.yaml"))


# ------------------------------------------------------------------------------------------------------- labelling
def _words(s: str, a: int, b: int) -> int:
    return len(s[a:b].split())


def _find_mentions(s: str, rules: Rules) -> list[tuple[int, int, _Phrase]]:
    """Mentions in one lowercased sentence, overlapping ones resolved.

    A match inside an earlier one is dropped ("effusion" inside "pericardial effusion"), except that a phrase with a
    ``...`` gap does not hide other labels' mentions in its gap ("heart size and mediastinal contours are normal").
    """
    kept: list[tuple[int, int, _Phrase]] = []
    for m in rules._mention_re.finditer(s):
        idx = m.lastindex or 0
        start, end, phrase = m.start(), m.start(idx), rules._phrases[idx]
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


def _pre(s: str, start: int, before: list[tuple[int, int, str]], w: dict[str, int]) -> str | None:
    """The pre / near trigger whose forward scope reaches a mention starting at ``start``."""
    if not before:
        return None
    _, te, kind = before[-1]  # anything else in between (terminator, pseudo, post trigger) closes the scope
    if kind.endswith(".pre"):
        return kind if _words(s, te, start) <= w["pre"] else None
    if kind.endswith(".near"):
        return kind if _words(s, te, start) <= w["near"] else None
    return None


def _post(s: str, end: int, after: list[tuple[int, int, str]], later: list[tuple[int, int]], w: dict[str, int]):
    """The post / near trigger whose backward scope reaches a mention ending at ``end``."""
    if not after:
        return None
    ts, _, kind = after[0]
    if kind.endswith(".near"):
        return kind if _words(s, end, ts) <= w["near"] else None
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


_ADVERB = {"mildly": "mild", "moderately": "moderate", "severely": "severe", "markedly": "marked",
           "slightly": "slight", "minimally": "minimal"}  # fmt: skip


def _sentence(s: str, rules: Rules, detail: bool) -> list[tuple[str, int, int, int, dict[str, str]]]:
    """(label, value, start, end, attributes) for every mention in one lowercased sentence."""
    mentions = _find_mentions(s, rules)
    if not mentions:
        return []
    kinds = rules._trigger_kinds
    triggers = [(m.start(), m.end(), kinds[m.lastindex or 0]) for m in rules._trigger_re.finditer(s)]
    triggers = [t for t in triggers if t[2] != "ignore"]
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
            pre = _pre(s, start, [t for t in outer if t[1] <= start], rules.windows)
            post = _post(s, end, [t for t in outer if t[0] >= end], spans[i + 1 :], rules.windows)
            value = _polarity(k for k in (pre, post) if k)
        if value is None:
            continue
        attrs = {}
        if detail:
            lo = spans[i - 1][1] if i else 0
            attrs = _attributes(s, lo, start, end, spans[i + 1][0] if i + 1 < len(spans) else len(s))
        for label, kind in phrase.targets:
            if kind == "normal":  # describes absence; a trigger inside it flips it ("heart size is not normal")
                label_value = {UNCERTAIN: UNCERTAIN, NEGATIVE: POSITIVE}.get(value, NEGATIVE) if inner else NEGATIVE
            else:
                label_value = value
            out.append((label, label_value, start, end, attrs))
    return out


def check_sections(sections: Iterable[str] | str) -> tuple[str, ...]:
    """``"impression,findings"`` or a sequence -> validated tuple of section names (ValueError naming the bad one)."""
    return _check_sections(tuple(s.strip() for s in (sections.split(",") if isinstance(sections, str) else sections)))


@functools.lru_cache(maxsize=64)
def _check_sections(sections: tuple[str, ...]) -> tuple[str, ...]:
    for name in sections:
        if name not in SECTION_NAMES:
            hint = did_you_mean(name, SECTION_NAMES)
            raise ValueError(f"unknown report section '{name}'.{hint} Allowed: {', '.join(SECTION_NAMES)}")
    if not sections:
        raise ValueError(f"sections must name at least one of {', '.join(SECTION_NAMES)}")
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
