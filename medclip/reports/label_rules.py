"""Loading and compiling the report labeler's rules (:mod:`medclip.reports.labeler`).

A label set's vocabulary lives in YAML (``rules/``: ``chexpert.yaml``, ``chestxray14.yaml``, ``triggers.yaml``,
each documented at the top); a user YAML or mapping is merged on top. :func:`load_rules` compiles the phrases into one
regex of mentions and one of triggers: the :class:`Rules` every labelling function takes.

Where two label sets follow different conventions (docs/labels.md), the set's file says so with the same few switches:
``uncertain: keep | negative`` (report -1 or map it to 0, for sets with binary labels), ``hedged`` phrases (a mention
that is itself only suggestive, e.g. CheXpert's "vascular congestion" as uncertain Edema) and a ``triggers`` block that
adds or reassigns triggers for that set only ("history of" negates in CheXpert instead of being dropped).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medclip.errors import InputError
from medclip.registry import did_you_mean

__all__ = ["LABEL_SETS", "RULES_DIR", "TRIGGER_KINDS", "UNCERTAIN_OUTPUTS", "Rules", "load_rules"]

RULES_DIR = Path(__file__).with_name("rules")
LABEL_SETS = ("chexpert", "chestxray14")
TRIGGER_KINDS = (
    "negation.pre",
    "negation.post",
    "negation.near",
    "uncertain.pre",
    "uncertain.post",
    "uncertain.near",
    "uncertain.weak",
    "hypothetical.pre",
    "hypothetical.post",
    "pseudo",
    "ignore",
    "terminate",
)
_LABEL_KEYS = ("mention", "normal", "hedged", "exclude", "remove", "derived")
_SET_KEYS = ("name", "labels", "no_finding", "uncertain", "triggers")
UNCERTAIN_OUTPUTS = {"keep": -1, "negative": 0}  # a set's `uncertain:` -> the value an uncertain label is reported as
_GAP_STOP = r"(?:but|however|although|though|whereas|while)\b"
_SEP = r"[\s\-]+"
_TOKEN_RE = re.compile(r"\([^()]*\)|\.\.\.|\S+")


@dataclass(frozen=True)
class Phrase:
    text: str
    targets: tuple[tuple[str, str], ...]  # (label, "mention" | "normal" | "hedged"); empty for exclusions
    gap: bool


@dataclass(frozen=True, eq=False)
class Rules:
    """A compiled label set: what :func:`load_rules` returns and every labelling function takes."""

    name: str
    labels: tuple[str, ...]
    no_finding: str | None
    no_finding_ignore: frozenset[str]
    no_finding_otherwise: int | None
    uncertain_value: int  # what an uncertain label is reported as: -1 (keep) or 0 (binary sets)
    windows: dict[str, int]
    coordinated_re: re.Pattern[str]  # the word before a weak trigger that makes it join modifiers, not findings
    config: dict[str, Any]  # the merged YAML, for inspection
    mention_re: re.Pattern[str]
    phrases: tuple[Phrase | None, ...]  # by regex group index
    trigger_re: re.Pattern[str]
    trigger_kinds: tuple[str | None, ...]


# ---------------------------------------------------------------------------------------------------- rule loading
def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"rules file {path}: cannot read it as YAML ({exc}); fix the file") from exc
    if not isinstance(data, dict):
        raise InputError(f"rules file {path}: expected a mapping at the top, got {type(data).__name__}")
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
        raise InputError(f"user rules: unknown top-level key '{key}'.{hint} Allowed: triggers, label_sets")
    return user


def _set_config(label_set: str, user: dict[str, Any]) -> dict[str, Any]:
    """The label set's YAML with the user's additions merged in (a user set may ``extends:`` a built-in one)."""
    user_sets = user.get("label_sets") or {}
    if label_set in LABEL_SETS:
        cfg = _read_yaml(RULES_DIR / f"{label_set}.yaml")
    elif label_set in user_sets:
        base = user_sets[label_set].get("extends")
        if base is not None and base not in LABEL_SETS:
            raise InputError(f"user label set '{label_set}' extends unknown set '{base}'; use one of {LABEL_SETS}")
        cfg = _read_yaml(RULES_DIR / f"{base}.yaml") if base else {"labels": {}}
        cfg["name"] = label_set
    else:
        names = [*LABEL_SETS, *user_sets]
        raise InputError(
            f"unknown label set '{label_set}'.{did_you_mean(label_set, names)} Available: {', '.join(names)}"
        )
    extra = {k: v for k, v in (user_sets.get(label_set) or {}).items() if k != "extends"}
    return _merge(cfg, extra)


def _phrase_regex(phrase: str, gap: int) -> tuple[str, bool]:
    """Phrase syntax (see triggers.yaml) -> (regex source, has a ``...`` gap)."""
    if phrase.startswith("re:"):
        source = phrase[3:].strip()
        if re.compile(source).groups:
            raise InputError(f"rules phrase '{phrase}': use non-capturing groups (?:...) in raw regexes")
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
        raise InputError(f'{where}: phrase {phrase!r} is not a non-empty string; quote it in the YAML ("no")')


def _label_phrases(cfg: dict[str, Any], where: str) -> tuple[dict[str, list[tuple[str, str]]], str | None]:
    """label -> phrase table and the derived No Finding label, validating the set's ``labels`` block."""
    table: dict[str, list[tuple[str, str]]] = {}
    derived = None
    for label, spec in (cfg.get("labels") or {}).items():
        spec = spec or {}
        bad = [k for k in spec if k not in _LABEL_KEYS]
        if bad:
            raise InputError(f"{where}: label '{label}' has unknown key '{bad[0]}'.{did_you_mean(bad[0], _LABEL_KEYS)}")
        if spec.get("derived") is not None:
            if spec["derived"] != "no_finding" or derived is not None:
                raise InputError(f"{where}: only one label may be 'derived: no_finding' (label '{label}')")
            derived = str(label)
            continue
        removed = [str(r).lower() for r in spec.get("remove") or ()]
        for kind in ("mention", "normal", "hedged", "exclude"):
            for phrase in spec.get(kind) or ():
                _check_phrase(phrase, f"{where}: label '{label}' {kind}")
                # `remove: [infection]` drops every phrase of the label that would match "infection".
                regex = re.compile(_phrase_regex(phrase, 5)[0]) if removed else None
                if regex is None or not any(regex.fullmatch(r) for r in removed):
                    table.setdefault(phrase.strip(), []).append((str(label), kind))
    return table, derived


def _trigger_phrases(triggers: dict[str, Any], kind: str) -> list[Any]:
    group, _, sub = kind.partition(".")
    values = (triggers.get(group) or {}).get(sub) if sub else triggers.get(group)
    return list(values or ())


def _over(base: dict[str, Any], own: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """Triggers ``own`` on top of ``base``: lists are extended, and a phrase ``own`` lists under one kind is taken out
    of every other kind, so a label set (or a user) can reassign a shared trigger as well as add one (CheXpert reads
    "history of pneumonia" as negative where the shared file drops the mention)."""
    if not own:
        return base
    if not isinstance(own, dict):
        raise InputError(f"{where}: 'triggers' must be a mapping like triggers.yaml, got {type(own).__name__}")
    merged = _merge(base, own)
    for kind in TRIGGER_KINDS:
        claimed = {str(p).strip() for p in _trigger_phrases(own, kind)}
        if not claimed:
            continue
        for other in TRIGGER_KINDS:
            if other == kind:
                continue
            group, _, sub = other.partition(".")
            kept = [p for p in _trigger_phrases(merged, other) if str(p).strip() not in claimed]
            if sub:
                merged[group] = {**(merged.get(group) or {}), sub: kept}
            else:
                merged[group] = kept
    return merged


def _coordinated_re(words: Any) -> re.Pattern[str]:
    """``coordinated`` words -> a regex that matches when the text before a weak trigger ends in one of them."""
    for word in words or ():
        _check_phrase(word, "triggers coordinated")
    alts = sorted({str(w).strip().lower() for w in words or ()}, key=len, reverse=True)
    return re.compile(rf"(?<!\w)(?:{'|'.join(re.escape(w) for w in alts) or '(?!)'})\W*$")


def _compile(cfg: dict[str, Any], shared: dict[str, Any], user_triggers: dict[str, Any] | None = None) -> Rules:
    where = f"label set '{cfg.get('name')}'"
    for key in cfg:
        if key not in _SET_KEYS:
            raise InputError(
                f"{where}: unknown key '{key}'.{did_you_mean(key, _SET_KEYS)} Allowed: {', '.join(_SET_KEYS)}"
            )
    uncertain = cfg.get("uncertain", "keep")
    if uncertain not in UNCERTAIN_OUTPUTS:
        raise InputError(f"{where}: uncertain must be one of {', '.join(UNCERTAIN_OUTPUTS)}, got {uncertain!r}")
    triggers = _over(_over(shared, cfg.get("triggers"), where), user_triggers, "user triggers")
    windows = {"pre": 15, "post": 8, "near": 3, "gap": 5, **(triggers.get("windows") or {})}
    table, derived = _label_phrases(cfg, where)
    labels = tuple(str(k) for k in (cfg.get("labels") or {}))
    items = []
    for phrase, targets in table.items():
        keep = tuple(dict.fromkeys((lab, kind) for lab, kind in targets if kind != "exclude"))
        items.append((phrase, keep))
    mention_re, m_payload = _combine(items, windows["gap"], lookahead=True)
    phrases = tuple(None if p is None else Phrase(*p) for p in m_payload)
    t_items = []
    for kind in TRIGGER_KINDS:
        for value in _trigger_phrases(triggers, kind):
            _check_phrase(value, f"triggers {kind}")
            t_items.append((value.strip(), kind))
    trigger_re, t_payload = _combine(t_items, windows["gap"], lookahead=False)
    nf = cfg.get("no_finding") or {}
    ignore = frozenset(str(x) for x in nf.get("ignore") or ())
    for name in ignore - set(labels):
        raise InputError(f"{where}: no_finding.ignore names unknown label '{name}'.{did_you_mean(name, labels)}")
    otherwise = nf.get("otherwise", "blank")
    if otherwise not in ("blank", None, 0):
        raise InputError(f"{where}: no_finding.otherwise must be blank or 0, got {otherwise!r}")
    return Rules(
        name=str(cfg.get("name")),
        labels=labels,
        no_finding=derived,
        no_finding_ignore=ignore,
        no_finding_otherwise=0 if otherwise == 0 else None,
        uncertain_value=UNCERTAIN_OUTPUTS[uncertain],
        windows=windows,
        coordinated_re=_coordinated_re(triggers.get("coordinated")),
        config={**cfg, "triggers": triggers},
        mention_re=mention_re,
        phrases=phrases,
        trigger_re=trigger_re,
        trigger_kinds=tuple(None if p is None else p[1] for p in t_payload),
    )


def load_rules(label_set: str = "chexpert", user_rules: str | Path | Mapping | None = None) -> Rules:
    """Compile a label set, optionally with a user YAML (path or dict) merged on top.

    The user YAML may hold ``triggers:`` (same shape as ``triggers.yaml``, for every set) and ``label_sets:`` (name ->
    ``labels`` / ``no_finding`` / ``uncertain`` / ``triggers`` blocks added to a built-in set, or a new set, optionally
    ``extends: chexpert``). Lists are extended; a label's ``remove:`` list drops built-in phrases. Order: shared
    triggers.yaml, then the set's own ``triggers:`` (built-in, then the user's), then the user's top-level triggers.
    """
    if user_rules is None and label_set in LABEL_SETS:
        return _builtin(label_set)
    user = _user_config(user_rules)
    shared = _read_yaml(RULES_DIR / "triggers.yaml")
    return _compile(_set_config(label_set, user), shared, user.get("triggers"))


@functools.cache
def _builtin(label_set: str) -> Rules:
    return _compile(_set_config(label_set, {}), _read_yaml(RULES_DIR / "triggers.yaml"))
