"""Symptom descriptions for the synthetic body-map sketches: clinical-intake prose consistent with the marks.

Every marked region is named with its side (or a "both ..." phrase when left and right are both marked);
radiation only points to marked regions; negations only name regions with nothing marked anywhere in their group;
the optional context sentence names no body region. Split out of :mod:`medclip.synth.sketch.archive`, which plans
the sketches, draws them and writes the archive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SIDED = {
    "chest": ("{s} chest", "{s} side of the chest", "{s} upper chest", "{s} lower chest", "{s} anterior chest"),
    "arm": ("{s} arm", "{s} upper arm", "{s} forearm", "{s} elbow", "{s} shoulder"),
    "hand": ("{s} hand", "{s} wrist", "{s} palm", "fingers of the {s} hand"),
    "leg": ("{s} leg", "{s} thigh", "{s} knee", "{s} calf", "{s} shin"),
    "foot": ("{s} foot", "{s} ankle", "{s} heel", "toes of the {s} foot"),
}
_QUADRANTS = {"ruq": ("right", "upper"), "luq": ("left", "upper"), "rlq": ("right", "lower"), "llq": ("left", "lower")}
# region -> location phrases (no article); every phrase of a sided region carries its side word or abbreviation
PHRASES: dict[str, tuple[str, ...]] = {
    "head": ("head", "forehead", "temples", "back of the head"),
    "neck": ("neck", "back of the neck", "cervical region"),
    "chest_centre": ("central chest", "centre of the chest", "mid-chest", "substernal area", "retrosternal region"),
    "upper_back": ("upper back", "area between the shoulder blades", "upper thoracic spine"),
    "lower_back": ("lower back", "low back", "lumbar region", "lumbosacral area"),
    **{f"{part}_{s}": tuple(p.format(s=s) for p in ps) for part, ps in _SIDED.items() for s in ("left", "right")},
    **{f"abdomen_{q}": (f"{s} {h} quadrant", f"{s} {h} abdomen", q.upper(),
                        f"{s} {'hypochondrium' if h == 'upper' else 'iliac fossa'}")
       for q, (s, h) in _QUADRANTS.items()},
}  # fmt: skip
# both sides of a pair marked -> one phrase for the two
BILATERAL: dict[tuple[str, str], tuple[str, ...]] = {
    ("chest_left", "chest_right"): ("both sides of the chest", "chest bilaterally"),
    ("abdomen_luq", "abdomen_ruq"): ("both upper quadrants", "upper abdomen bilaterally"),
    ("abdomen_llq", "abdomen_rlq"): ("both lower quadrants", "lower abdomen bilaterally"),
    ("arm_left", "arm_right"): ("both arms", "both forearms", "both shoulders", "arms bilaterally"),
    ("hand_left", "hand_right"): ("both hands", "both wrists", "hands bilaterally"),
    ("leg_left", "leg_right"): ("both legs", "both knees", "both thighs", "both calves", "legs bilaterally"),
    ("foot_left", "foot_right"): ("both feet", "both ankles", "feet bilaterally"),
}
# regions -> what a negation may say; used only when none of the regions is marked
NEGATIONS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("head",), ("headache", "head pain")),
    (("neck",), ("neck pain", "neck stiffness")),
    (("chest_left", "chest_right", "chest_centre"), ("chest pain", "chest tightness")),
    (("abdomen_ruq", "abdomen_luq", "abdomen_rlq", "abdomen_llq"), ("abdominal pain", "abdominal cramping")),
    (("upper_back", "lower_back"), ("back pain",)),
    (("arm_left", "arm_right"), ("arm pain", "arm weakness")),
    (("hand_left", "hand_right"), ("hand numbness", "numbness in the hands")),
    (("leg_left", "leg_right"), ("leg pain", "leg swelling")),
    (("foot_left", "foot_right"), ("foot pain",)),
)
QUALITIES = (
    "sharp",
    "dull",
    "burning",
    "aching",
    "throbbing",
    "stabbing",
    "cramping",
    "tingling",
    "numbness",
    "pressure",
)
_DURATIONS = (
    "for {n} days",
    "for {n} hours",
    "since this morning",
    "since yesterday",
    "since last night",
    "for about {n} weeks",
    "intermittent for {n} weeks",
    "on and off for {n} months",
    "for the past {n} days",
    "constant for {n} days",
)
_SEVERITIES = ("mild", "moderate", "severe", "{k}/10", "rated {k}/10", "severity {k}/10")
_CLAUSES = (
    "{Sym} in {loc}{rad}, {sev}, {dur}.",
    "Reports {sym} in {loc}{rad} {dur} ({sev}).",
    "Complains of {sym} in {loc}{rad}, {sev}, {dur}.",
    "{Dur}, {sym} in {loc}{rad}; {sev}.",
    "Patient describes {sym} in {loc}{rad} {dur}, {sev}.",
    "{Sym} over {loc}{rad} {dur}, {sev}.",
)
_RADIATION = (" radiating to {t}", " radiating into {t}", ", radiating to {t}", " that spreads to {t}")
_NEGATION = ("No {a}.", "Denies {a}.", "No {a} reported.", "Denies any {a}.")
_NEGATION2 = ("No {a} or {b}.", "Denies {a} or {b}.")
_CONDITIONS = (
    "hypertension",
    "type 2 diabetes",
    "asthma",
    "hypothyroidism",
    "hyperlipidaemia",
    "depression",
    "atrial fibrillation",
    "chronic kidney disease",
)
_CONTEXT = (
    "Patient is a {age}-year-old {sex} with a history of {cond}.",
    "{age}-year-old {sex}, otherwise well.",
    "History of {cond}.",
    "Took paracetamol with partial relief.",
    "No recent trauma.",
    "Symptoms are worse at night.",
    "Has tried ibuprofen without much effect.",
)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _the(phrase: str) -> str:
    return phrase if phrase.startswith("both ") else f"the {phrase}"


def _symptom(quality: str) -> str:
    return quality if quality in ("tingling", "numbness", "pressure") else f"{quality} pain"


def _items(marked: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Location phrases, one per marked region or per marked left/right pair described together."""
    todo, out = list(marked), []
    for pair, phrases in BILATERAL.items():
        if all(r in todo for r in pair) and rng.random() < 0.7:
            todo = [r for r in todo if r not in pair]
            out.append(_pick(rng, phrases))
    return out + [_pick(rng, PHRASES[r]) for r in todo]


def _clause(loc: str, rad: str, rng: np.random.Generator, *, also: bool) -> str:
    sym, n = _symptom(_pick(rng, QUALITIES)), int(rng.integers(2, 11))
    sev = _pick(rng, _SEVERITIES).format(k=int(rng.integers(2, 11)))
    dur = _pick(rng, _DURATIONS).format(n=n)
    text = _pick(rng, _CLAUSES).format(Sym=_cap(sym), sym=sym, loc=_the(loc), rad=rad, sev=sev, dur=dur, Dur=_cap(dur))
    return f"Also {text[0].lower()}{text[1:]}" if also and not text.startswith("Patient") else text


def describe(marked: Sequence[str], rng: np.random.Generator, *, age: int, sex: str) -> str:
    """A free-text symptom description of the marked regions (names in ``REGIONS``); deterministic given ``rng``.

    ``sex`` is "M" or "F" and, with ``age``, only feeds the optional context sentence.
    """
    locs = _items(marked, rng)
    locs = [locs[i] for i in rng.permutation(len(locs))]
    rads = [""] * len(locs)
    if len(locs) >= 2 and rng.random() < 0.35:  # radiation from the first location to another marked one
        target = int(rng.integers(1, len(locs)))
        rads[0] = _pick(rng, _RADIATION).format(t=_the(locs[target]))
        if rng.random() < 0.6:  # the target is then often not described on its own
            del locs[target], rads[target]
    sentences = [
        _clause(loc, rad, rng, also=i > 0 and rng.random() < 0.3)
        for i, (loc, rad) in enumerate(zip(locs, rads, strict=True))
    ]
    free = [phrases for regions, phrases in NEGATIONS if not set(regions) & set(marked)]
    if free and rng.random() < 0.45:
        chosen = [free[i] for i in rng.choice(len(free), size=min(len(free), int(rng.integers(1, 3))), replace=False)]
        words = [_pick(rng, phrases) for phrases in chosen]
        template = _pick(rng, _NEGATION2) if len(words) == 2 else _pick(rng, _NEGATION)
        sentences.append(template.format(a=words[0], b=words[-1]))
    if rng.random() < 0.3:
        context = _pick(rng, _CONTEXT).format(
            age=age, sex="man" if sex == "M" else "woman", cond=_pick(rng, _CONDITIONS)
        )
        sentences.insert(0 if rng.random() < 0.7 else len(sentences), _cap(context))
    return " ".join(sentences)
