"""Report text for the synthetic chest CT archive: sectioned reports consistent with the ground truth.

Positive findings carry laterality, lobe, size and severity; hedges ("possible", "cannot exclude") appear only on
true positives that are small or mild, so labels stay correct; an absent finding is either not mentioned or
explicitly negated, never asserted. Findings are written as prose or under organ subheadings; headers vary in case,
separator and presence, and patient details are de-identified (XXXX, ___). Split out of
:mod:`medclip.synth.ct.archive`, which plans the studies and writes the images.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np

from medclip.synth.ct.findings import CTFinding
from medclip.synth.ct.study import Study

__all__ = ["ct_report"]

_GRADES = {
    "pleural_effusion": ("small", "moderate", "large"),
    "pneumothorax": ("small", "moderate", "large"),
    "consolidation": ("patchy", "focal", "dense"),
    "emphysema": ("mild", "moderate", "severe"),
    "pericardial_effusion": ("small", "moderate", "large"),
    "cardiomegaly": ("mild", "moderate", "marked"),
}
# key -> (findings sentences, hedged sentences, impression phrases); hedges are only ever used for true positives
_POS_TEXT: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "lung_nodule": (
        ("{size} {kind} nodule in the {loc} (series {ser}, image {img}).",
         "There is a {size} {kind} pulmonary nodule in the {loc}.", "{Size} {kind} nodule, {loc}.",
         "A {kind} nodule in the {loc} measures {size}."),
        ("Possible {size} nodule in the {loc}, which may represent a vessel seen end-on.",
         "Questionable {size} {kind} nodule in the {loc}; cannot exclude a small pulmonary nodule."),
        ("{Size} {kind} nodule in the {loc}. Follow-up CT in 6-12 months per Fleischner Society guidelines.",
         "{Loc} pulmonary nodule measuring {size}.", "{Size} {loc} nodule; recommend follow-up CT."),
    ),
    "lung_nodule:large": (
        ("{cm} cm spiculated nodule in the {loc}, suspicious for malignancy.",
         "There is a {cm} cm lobulated solid nodule in the {loc}.", "{Cm} cm irregular nodule, {loc}."),
        (),
        ("{Cm} cm {loc} nodule, suspicious for primary lung malignancy. Recommend PET-CT and tissue sampling.",
         "Suspicious {cm} cm nodule in the {loc}."),
    ),
    "pleural_effusion": (
        ("{G} {side} pleural effusion.", "There is a {g} {side} pleural effusion with adjacent compressive atelectasis.",
         "{G} dependent {side} pleural effusion.", "{Side} pleural effusion, {g} in size."),
        ("Possible {g} {side} pleural effusion.", "Trace {side} pleural fluid, likely a {g} effusion."),
        ("{G} {side} pleural effusion.", "{Side} pleural effusion."),
    ),
    "pleural_effusion:bilateral": (
        ("{G} bilateral pleural effusions.", "Bilateral pleural effusions, {g}, with adjacent atelectasis.",
         "There are {g} bilateral dependent pleural effusions."),
        ("Possible {g} bilateral pleural effusions.",),
        ("{G} bilateral pleural effusions.", "Bilateral pleural effusions."),
    ),
    "pneumothorax": (
        ("{G} {side} pneumothorax.", "{G} anterior {side} pneumothorax.",
         "There is a {g} {side} pneumothorax, predominantly anterior.",
         "{G} {side} pneumothorax with partial collapse of the {side} lung."),
        ("Possible {g} anterior {side} pneumothorax.", "Cannot exclude a tiny anterior {side} pneumothorax."),
        ("{G} {side} pneumothorax. Findings were communicated to Dr. ___ at ___.", "{Side} pneumothorax."),
    ),
    "consolidation": (
        ("{G} consolidation in the {loc} with air bronchograms.", "Airspace consolidation in the {loc}.",
         "{G} airspace consolidation involving the {loc}, compatible with pneumonia.",
         "There is {g} consolidation of the {loc} with surrounding ground-glass opacity."),
        ("Patchy opacity in the {loc}, possibly early consolidation.",
         "Subtle consolidation in the {loc}; cannot exclude early pneumonia."),
        ("{Loc} consolidation, likely pneumonia.", "{Loc} consolidation.",
         "Consolidation in the {loc}; recommend follow-up to resolution."),
    ),
    "consolidation:lobar": (
        ("Dense lobar consolidation of the {loc} with air bronchograms.",
         "Complete consolidation of the {loc} with air bronchograms, compatible with lobar pneumonia."),
        (),
        ("Lobar consolidation of the {loc}, compatible with pneumonia.", "{Loc} lobar pneumonia (consolidation)."),
    ),
    "emphysema": (
        ("{G} {kind} emphysema.", "{G} {kind} emphysema, upper lobe predominant.",
         "There is {g} {kind} emphysema, most pronounced in the upper lobes."),
        ("Possible mild {kind} emphysema.", "Subtle low-attenuation areas, possibly mild {kind} emphysema."),
        ("{G} {kind} emphysema.", "Emphysema.", "{G} emphysema."),
    ),
    "emphysema:paraseptal": (
        ("{G} paraseptal emphysema with small subpleural bullae.", "{G} paraseptal emphysema."),
        ("Possible mild paraseptal emphysema.",),
        ("{G} paraseptal emphysema.", "Emphysema."),
    ),
    "pericardial_effusion": (
        ("{G} pericardial effusion.", "There is a {g} pericardial effusion.",
         "{G} pericardial effusion without CT signs of tamponade."),
        ("Possible small pericardial effusion versus pericardial thickening.",),
        ("{G} pericardial effusion.", "Pericardial effusion."),
    ),
    "cardiomegaly": (
        ("{G} cardiomegaly.", "The heart is {g}ly enlarged.", "Cardiomegaly.", "{G} enlargement of the heart."),
        ("Possible mild cardiomegaly.", "Borderline enlarged heart, possibly mild cardiomegaly."),
        ("Cardiomegaly.", "{G} cardiomegaly."),
    ),
}  # fmt: skip
_NEG_TEXT = {
    "lung_nodule": ("No suspicious pulmonary nodules.", "No pulmonary nodules or masses.", "No suspicious nodules."),
    "consolidation": ("No focal consolidation.", "No airspace consolidation."),
    "emphysema": ("No emphysema.",),
    "pleural_effusion+pneumothorax": ("No pleural effusion or pneumothorax.", "No effusion or pneumothorax."),
    "pleural_effusion": ("No pleural effusion.", "No pleural fluid."),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
    "cardiomegaly": ("Heart size is normal.", "Normal heart size.", "No cardiomegaly."),
    "pericardial_effusion": ("No pericardial effusion.", "No significant pericardial effusion."),
    "clear": ("The lungs are clear.", "Lungs are clear.", "The lungs are clear without focal abnormality."),
}  # fmt: skip
_OTHER = {
    "lungs": ("The central airways are patent.", "Mild bibasilar dependent changes.", "Airways are patent."),
    "heart": ("No mediastinal or hilar lymphadenopathy.", "The thoracic aorta is normal in caliber.",
              "Thoracic aorta is of normal caliber."),
    "abdomen": ("Visualized upper abdomen is unremarkable.", "Limited evaluation of the upper abdomen is unremarkable.",
                "Small hiatal hernia.", "The imaged portions of the liver and spleen are unremarkable."),
    "bones": ("No acute osseous abnormality.", "Mild degenerative changes of the thoracic spine.",
              "No suspicious osseous lesions."),
}  # fmt: skip
_NORMAL_IMPRESSION = (
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
    "Normal CT of the chest.",
    "No CT evidence of acute cardiopulmonary disease.",
)
_COMPLAINTS = (
    "cough",
    "shortness of breath",
    "chest pain",
    "dyspnea",
    "hemoptysis",
    "weight loss",
    "fever and cough",
    "abnormal chest radiograph",
    "hypoxia",
    "pleuritic chest pain",
    "chronic cough",
)
_SUBHEADS = (
    ("lungs", ("LUNGS AND AIRWAYS", "LUNGS")),
    ("pleura", ("PLEURA", "PLEURAL SPACES")),
    ("heart", ("HEART AND MEDIASTINUM", "MEDIASTINUM")),
    ("abdomen", ("UPPER ABDOMEN",)),
    ("bones", ("BONES AND SOFT TISSUES", "MUSCULOSKELETAL")),
)
_GROUP = {
    "lung_nodule": "lungs",
    "consolidation": "lungs",
    "emphysema": "lungs",
    "pleural_effusion": "pleura",
    "pneumothorax": "pleura",
    "pericardial_effusion": "heart",
    "cardiomegaly": "heart",
}


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _grade(sev: float) -> int:
    return 0 if sev < 0.35 else 1 if sev < 0.7 else 2


def _location(f: CTFinding, rng: np.random.Generator) -> str:
    if rng.random() < 0.12:  # radiologists' shorthand, e.g. "RLL"
        return f"{f.side[0]}{f.lobe[0]}l".upper()
    return f"{f.side} {f.lobe} lobe"


def _key(f: CTFinding) -> str:
    if f.name == "lung_nodule" and f.size_mm >= 25:
        return "lung_nodule:large"
    if f.name == "pleural_effusion" and f.side == "bilateral":
        return "pleural_effusion:bilateral"
    if f.name == "consolidation" and f.severity > 0.75:
        return "consolidation:lobar"
    if f.name == "emphysema" and f.kind == "paraseptal":
        return "emphysema:paraseptal"
    return f.name


def _positive(f: CTFinding, carried: bool, rng: np.random.Generator) -> tuple[str, str]:
    """(findings sentence, impression phrase) for one positive finding."""
    found, hedged, impression = _POS_TEXT[_key(f)]
    small = f.size_mm <= 8 if f.name == "lung_nodule" else f.severity < 0.3
    hedge = bool(hedged) and small and rng.random() < 0.3  # radiologists hedge on subtle findings only
    g = _GRADES.get(f.name, ("",) * 3)[_grade(f.severity)]
    kind = {"ground-glass": "ground-glass", "part-solid": "part-solid"}.get(f.kind, f.kind)
    if f.name == "lung_nodule" and kind == "solid" and rng.random() < 0.4:
        kind = _pick(rng, ("noncalcified", "solid", "soft tissue"))
    kw = {
        "g": g,
        "side": f.side,
        "loc": _location(f, rng) if f.lobe else "",
        "size": f"{f.size_mm:.0f} mm",
        "cm": f"{f.size_mm / 10:.1f}",
        "kind": kind,
        "ser": str(int(rng.integers(2, 6))),
        "img": str(int(rng.integers(5, 60))),
    }
    kw |= {k.capitalize(): _cap(v) for k, v in list(kw.items())}
    sentence = _pick(rng, hedged if hedge else found).format(**kw)
    if carried and rng.random() < 0.7:
        sentence = sentence[:-1] + _pick(rng, (", unchanged from prior.", ", stable since ___.", ", again noted."))
    sentence = _cap(re.sub(r"\s+", " ", sentence))
    return sentence, sentence.split(";")[0].rstrip(".") + "." if hedge else _cap(_pick(rng, impression).format(**kw))


def _negatives(pos: dict[str, CTFinding], rng: np.random.Generator) -> dict[str, list[str]]:
    """Explicit negations for a random subset of absent findings, by organ group."""
    out: dict[str, list[str]] = {"lungs": [], "pleura": [], "heart": []}
    lung_or_pleura = {"lung_nodule", "consolidation", "emphysema", "pleural_effusion", "pneumothorax"}
    if not lung_or_pleura & set(pos) and rng.random() < 0.6:
        out["lungs"].append(_pick(rng, _NEG_TEXT["clear"]))
    for name, p in (("lung_nodule", 0.7), ("consolidation", 0.5), ("emphysema", 0.1)):
        if name not in pos and rng.random() < (p if not out["lungs"] else p / 3):
            out["lungs"].append(_pick(rng, _NEG_TEXT[name]))
    eff, ptx = "pleural_effusion" not in pos, "pneumothorax" not in pos
    if eff and ptx and rng.random() < 0.85:
        out["pleura"].append(_pick(rng, _NEG_TEXT["pleural_effusion+pneumothorax"]))
    elif eff != ptx and rng.random() < 0.75:
        out["pleura"].append(_pick(rng, _NEG_TEXT["pleural_effusion" if eff else "pneumothorax"]))
    for name in ("cardiomegaly", "pericardial_effusion"):
        if name not in pos and rng.random() < 0.65:
            out["heart"].append(_pick(rng, _NEG_TEXT[name]))
    return out


def _findings(st: Study, rng: np.random.Generator) -> tuple[str, list[str]]:
    """(FINDINGS body, impression items)."""
    groups: dict[str, list[str]] = {g: [] for g, _ in _SUBHEADS}
    impression = []
    for name, f in st.pos.items():
        sentence, imp = _positive(f, name in st.carried, rng)
        groups[_GROUP[name]].append(sentence)
        impression.append(imp)
    for group, sentences in _negatives(st.pos, rng).items():
        groups[group] += sentences
    if st.anatomy.coronary_calcium:
        groups["heart"].append(_pick(rng, ("Coronary artery calcifications.", "Mild coronary artery calcification.")))
    for group, options in _OTHER.items():
        if rng.random() < 0.45:
            groups[group].append(_pick(rng, options))
    if rng.random() < 0.4:  # organ subheadings, as many structured CT templates have
        case = str if rng.random() < 0.6 else str.title
        body = "\n".join(
            f"{case(_pick(rng, heads))}: {' '.join(groups[g]) or 'Unremarkable.'}" for g, heads in _SUBHEADS
        )
    else:
        body = " ".join(s for g, _ in _SUBHEADS for s in groups[g])
    return body, impression


def _sections(st: Study, rng: np.random.Generator) -> list[tuple[str, str]]:
    body, impression = _findings(st, rng)
    if not st.pos:
        impression = [_NORMAL_IMPRESSION[0] if rng.random() < 0.5 else _pick(rng, _NORMAL_IMPRESSION)]
    elif len(impression) > 1 and rng.random() < 0.5:
        impression = [f"{i}. {text}" for i, text in enumerate(impression, 1)]
    sex = _pick(rng, ("male", "man") if st.sex == "M" else ("female", "woman"))
    complaint = "lung cancer screening" if st.exam == "screening" else _pick(rng, _COMPLAINTS)
    if st.has_prior and rng.random() < 0.3:
        complaint = _pick(rng, ("follow-up", "interval follow-up", "follow-up of prior findings"))
    indication = _pick(
        rng,
        (
            f"XXXX-year-old {sex} with {{c}}.",
            f"___ year old {sex} with {{c}}.",
            f"___{st.sex} with {{c}}.",
            "{C}.",
            "___ with {c}.",
        ),
    )
    exam = _pick(rng, (st.description, st.description, "CT of the chest without contrast.", "CT THORAX"))
    technique = (
        _pick(
            rng,
            (
                "Axial images of the chest were obtained without intravenous contrast. Coronal and sagittal reformats "
                "were reviewed.",
                "Non-contrast CT of the chest with 5 mm axial reconstructions.",
                "Helical CT of the chest without contrast. CTDIvol: ___ mGy. DLP: ___ mGy-cm.",
            ),
        )
        if st.exam != "screening"
        else "Low-dose non-contrast CT of the chest per lung cancer screening protocol."
    )
    comparison = _pick(
        rng,
        ("CT chest ___.", "Prior CT from XXXX.", "Comparison is made to CT chest dated ___.")
        if st.has_prior
        else ("None.", "No prior studies available.", "___."),
    )
    return [
        ("EXAMINATION", exam),
        (
            _pick(rng, ("INDICATION", "INDICATION", "CLINICAL HISTORY", "HISTORY")),
            indication.format(c=complaint, C=_cap(complaint)),
        ),
        ("TECHNIQUE", technique),
        ("COMPARISON", comparison),
        ("FINDINGS", body),
        ("IMPRESSION", "\n".join(impression) if impression[0][:2] == "1." else " ".join(impression)),
    ]


def ct_report(st: Study, seed: int) -> str:
    """Free-text report in one of several house styles (header case, separators, wrapping, missing sections)."""
    rng = np.random.default_rng([seed, 2, st.idx])
    case = _pick(rng, ("upper", "upper", "upper", "title", "lower"))
    sep = _pick(rng, (": ", ": ", " - ", "\n"))
    width = int(rng.integers(70, 81)) if rng.random() < 0.3 else 0
    skip = {
        "EXAMINATION": 0.1,
        "INDICATION": 0.1,
        "CLINICAL HISTORY": 0.1,
        "HISTORY": 0.1,
        "TECHNIQUE": 0.25,
        "COMPARISON": 0.15,
    }
    blocks = []
    for name, body in _sections(st, rng):
        if rng.random() < skip.get(name, 0.0):
            continue
        head = {"upper": name, "title": name.title(), "lower": name.lower()}[case]
        text = f"{head}{sep}{body}" if sep != "\n" else f"{head}:\n{body}" if rng.random() < 0.5 else f"{head}\n{body}"
        if width:
            text = "\n".join(textwrap.fill(line, width) if line else line for line in text.split("\n"))
        blocks.append(text)
    return ("\n\n" if rng.random() < 0.7 else "\n").join(blocks) + "\n"
