"""Report text for the synthetic chest X-ray archive: sectioned reports consistent with the ground truth.

Positive findings carry laterality, severity and location; hedges appear only on true positives so labels stay
correct; absent findings are often negated explicitly; normal studies repeat a few stock impressions, as real
archives do. Split out of :mod:`medclip.synth.cxr.archive`, which plans the studies and writes the DICOM files.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np

from medclip.synth.cxr.phantom import Finding
from medclip.synth.cxr.study import Positive, Study

CXR_FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "edema",
    "nodule",
    "atelectasis",
    "support_device",
)
SIDED_FINDINGS: tuple[str, ...] = ("pleural_effusion", "pneumothorax", "consolidation", "nodule", "atelectasis")
"""Findings with a ``<name>_side`` column in labels.csv ("left", "right", "bilateral" or "")."""


def _grade(sev: float) -> int:
    return 0 if sev < 0.35 else 1 if sev < 0.7 else 2


_GRADES = {
    "cardiomegaly": ("mild", "moderate", "severe"),
    "edema": ("mild", "moderate", "severe"),
    "pleural_effusion": ("small", "moderate", "large"),
    "pneumothorax": ("small", "moderate", "large"),
    "consolidation": ("patchy", "focal", "dense"),
    "atelectasis": ("minimal", "mild", "moderate"),
}
# name -> (findings sentences, hedged sentences, impression phrases); hedges are only ever used for true positives
_POS_TEXT: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "cardiomegaly": (
        ("The heart is {g}ly enlarged.", "{G} cardiomegaly.", "The cardiac silhouette is {g}ly enlarged.",
         "There is {g} enlargement of the cardiac silhouette.", "Enlarged cardiac silhouette."),
        ("The heart is likely {g}ly enlarged.", "Possible {g} cardiomegaly.", "Cannot exclude mild cardiomegaly."),
        ("{G} cardiomegaly.", "Cardiomegaly.", "Enlarged heart."),
    ),
    "pleural_effusion": (
        ("{G} {side} pleural effusion.", "There is a {g} {side} pleural effusion.",
         "{G} amount of fluid in the {side} pleural space.",
         "Blunting of the {side} costophrenic angle, consistent with a {g} effusion."),
        ("Possible {g} {side} pleural effusion.", "Cannot exclude a {g} {side} pleural effusion.",
         "Likely {g} {side} pleural effusion."),
        ("{G} {side} pleural effusion.", "{Side} pleural effusion."),
    ),
    "pleural_effusion:bilateral": (
        ("{G} bilateral pleural effusions.", "Bilateral pleural effusions, {g}.",
         "Blunting of both costophrenic angles, consistent with {g} bilateral effusions."),
        ("Possible {g} bilateral pleural effusions.", "Likely {g} bilateral pleural effusions."),
        ("{G} bilateral pleural effusions.", "Bilateral effusions."),
    ),
    "pneumothorax": (
        ("{G} {side} apical pneumothorax.", "There is a {g} {side} pneumothorax with a visible pleural line.",
         "{Side}-sided pneumothorax, {g}.", "A {g} {side} pneumothorax is present, measuring approximately {cm} cm."),
        ("Possible {g} {side} apical pneumothorax.", "Cannot exclude a {g} {side} pneumothorax.",
         "Likely {g} {side} apical pneumothorax; consider expiratory view."),
        ("{G} {side} pneumothorax.", "{Side} pneumothorax. Findings were communicated to Dr. ___ at ___."),
    ),
    "consolidation": (
        ("{G} consolidation in the {loc}.", "Focal airspace opacity in the {loc}, concerning for pneumonia.",
         "{Loc} consolidation.", "There is {g} airspace consolidation in the {loc}.",
         "Opacity in the {loc} compatible with pneumonia."),
        ("Opacity in the {loc} may represent early pneumonia.", "Possible consolidation in the {loc}.",
         "Likely {loc} pneumonia."),
        ("{Loc} pneumonia.", "{Loc} consolidation.", "Consolidation in the {loc}, likely pneumonia."),
    ),
    "edema": (
        ("{G} pulmonary edema.", "There is {g} interstitial edema.",
         "Pulmonary vascular congestion with {g} interstitial edema.",
         "Perihilar haziness and vascular congestion consistent with {g} pulmonary edema.",
         "Bilateral perihilar opacities in a bat-wing distribution, consistent with {g} edema.",
         "Kerley B lines and {g} interstitial edema."),
        ("Possible {g} pulmonary edema.", "Findings likely reflect {g} interstitial edema.",
         "Vascular congestion; cannot exclude {g} pulmonary edema."),
        ("{G} pulmonary edema.", "Pulmonary edema.", "Vascular congestion and {g} edema."),
    ),
    "nodule": (
        ("{size} nodule in the {loc}.",
         "There is a {size} rounded opacity in the {loc}, compatible with a pulmonary nodule.",
         "A {size} nodular density projects over the {loc}."),
        ("Possible {size} nodule in the {loc}.", "Questionable {size} nodular opacity in the {loc}; "
         "cannot exclude a pulmonary nodule."),
        ("{Size} {loc} nodule. Recommend chest CT for further evaluation.", "Pulmonary nodule in the {loc}."),
    ),
    "nodule:mass": (
        ("{size} mass in the {loc}.", "Large {size} mass in the {loc}, concerning for malignancy.",
         "There is a {size} lobulated mass in the {loc}."),
        ("Possible {size} mass in the {loc}.",),
        ("{Size} {loc} mass, concerning for neoplasm. CT recommended.", "Mass in the {loc}."),
    ),
    "atelectasis": (
        ("{G} {side} basilar atelectasis.", "Plate-like atelectasis at the {side} lung base.",
         "Linear opacity at the {side} base, consistent with subsegmental atelectasis.",
         "{Side} lower lobe subsegmental collapse with mild volume loss."),
        ("Linear opacity at the {side} base, likely atelectasis.", "Possible {side} basilar atelectasis."),
        ("{G} {side} basilar atelectasis.", "{Side} basal atelectasis."),
    ),
    "atelectasis:bilateral": (
        ("{G} bibasilar atelectasis.", "Bibasilar plate-like atelectasis.",
         "Linear opacities at both lung bases, consistent with bilateral atelectasis."),
        ("Bibasilar linear opacities, likely atelectasis.",),
        ("Bibasilar atelectasis.", "{G} bilateral basilar atelectasis."),
    ),
}  # fmt: skip
_DEVICE_TEXT = {
    "ett": ("Endotracheal tube terminates approximately {cm} cm above the carina.",
            "ET tube in standard position, {cm} cm above the carina.",
            "The endotracheal tube tip is {cm} cm above the carina."),
    "cvc": ("{Side} {route} central venous catheter with tip in the {tip}.", "{Side} {route} line tip in the {tip}.",
            "{Side}-sided central line terminates in the {tip}."),
    "pacemaker": ("{Side}-sided pacemaker with leads in the right atrium and right ventricle.",
                  "Dual-chamber pacemaker with leads terminating in the right atrium and right ventricle.",
                  "{Side} chest wall pacing device with intact leads."),
    "enteric": ("Enteric tube courses below the diaphragm with tip in the stomach.",
                "Nasogastric tube tip in the stomach.", "An NG tube is seen with tip in the stomach."),
}  # fmt: skip
_NEG_TEXT = {
    "cardiomegaly": ("Heart size is normal.", "The cardiac silhouette is within normal limits.", "Normal heart size.",
                     "Cardiomediastinal silhouette is unremarkable."),
    "pleural_effusion+pneumothorax": ("No pleural effusion or pneumothorax.",
                                      "There is no pleural effusion or pneumothorax.", "No effusion or pneumothorax."),
    "pleural_effusion": ("No pleural effusion.", "No pleural fluid."),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
    "consolidation": ("No focal consolidation.", "No focal airspace consolidation to suggest pneumonia."),
    "edema": ("No pulmonary edema.", "No evidence of pulmonary vascular congestion.", "No edema."),
    "nodule": ("No suspicious pulmonary nodules.", "No nodules or masses."),
    "atelectasis": ("No atelectasis.",),
    "clear": ("The lungs are clear.", "Lungs are clear bilaterally.", "Clear lungs."),
    "other": ("No acute osseous abnormality.", "Osseous structures are intact.",
              "Visualized upper abdomen is unremarkable.", "Degenerative changes of the thoracic spine."),
}  # fmt: skip
_NORMAL_IMPRESSION = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
    "Normal chest radiograph.",
)
_COMPLAINTS = (
    "cough",
    "shortness of breath",
    "fever",
    "chest pain",
    "dyspnea",
    "hypoxia",
    "pre-operative evaluation",
    "weakness",
    "productive cough and fever",
    "fever and cough",
    "fall",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _location(p: Positive, rng: np.random.Generator) -> str:
    if p.lobe == "lingula":
        return "lingula"
    loc = f"{p.side} {p.lobe} lobe"
    if p.name == "consolidation" and rng.random() < 0.12:  # radiologists' shorthand, e.g. "RLL"
        return f"{p.side[0]}{p.lobe[0]}l".upper()
    return loc


def _positive(p: Positive, rng: np.random.Generator, hedge: bool) -> tuple[str, str]:
    """(findings sentence, impression phrase) for one positive finding."""
    if p.name == "support_device":
        return " ".join(_device_sentence(f, rng) for f in p.specs), _pick(
            rng, ("Support devices in standard position.", "Lines and tubes as above.", "Devices as described.")
        )
    key = p.name + (":bilateral" if p.side == "bilateral" else "") + (":mass" if p.size_mm > 30 else "")
    found, hedged, impression = _POS_TEXT[key]
    g = _GRADES.get(p.name, ("",) * 3)[_grade(p.severity)]
    size = f"{p.size_mm / 10:.1f} cm" if p.size_mm > 30 else f"{round(p.size_mm)} mm"
    kw = {"g": g, "side": p.side, "loc": _location(p, rng), "size": size, "cm": f"{0.6 + 4 * p.severity:.1f}"}
    kw |= {k.capitalize(): _cap(v) for k, v in list(kw.items())}
    sentence = re.sub(r"\b([Aa]) (8|11|18) mm", r"\1n \2 mm", _pick(rng, hedged if hedge else found).format(**kw))
    if p.carried and rng.random() < 0.6:
        sentence = sentence[:-1] + _pick(
            rng, (", unchanged.", ", stable compared to the prior study.", " again noted.")
        )
    return _cap(sentence), _cap(_pick(rng, impression).format(**kw))


def _device_sentence(f: Finding, rng: np.random.Generator) -> str:
    tip = ("mid SVC", "SVC") if f.v < 0.5 else ("cavoatrial junction", "low SVC")
    route = "internal jugular" if f.side != "left" else "subclavian"
    kw = {"cm": f"{4 + 3 * f.v:.1f}", "Side": _cap(f.side or "right"), "route": route, "tip": _pick(rng, tip)}
    return _DEVICE_TEXT[f.kind][int(rng.integers(3))].format(**kw)


def _negatives(pos: dict[str, Positive], rng: np.random.Generator) -> list[str]:
    """Explicit negations for a random subset of absent findings."""
    out = []
    lung = ("consolidation", "edema", "nodule", "atelectasis", "pleural_effusion", "pneumothorax")
    if not any(n in pos for n in lung) and rng.random() < 0.8:
        out.append(_pick(rng, _NEG_TEXT["clear"]))
    p_neg = 0.15 if out else 0.45  # "lungs are clear" already covers the parenchyma
    for name in ("consolidation", "edema", "nodule", "atelectasis"):
        if name not in pos and rng.random() < p_neg:
            out.append(_pick(rng, _NEG_TEXT[name]))
    eff, ptx = "pleural_effusion" not in pos, "pneumothorax" not in pos
    if eff and ptx and rng.random() < 0.85:
        out.append(_pick(rng, _NEG_TEXT["pleural_effusion+pneumothorax"]))
    elif eff != ptx and rng.random() < 0.7:
        out.append(_pick(rng, _NEG_TEXT["pleural_effusion" if eff else "pneumothorax"]))
    if "cardiomegaly" not in pos and rng.random() < 0.75:
        out.insert(0 if rng.random() < 0.3 else len(out), _pick(rng, _NEG_TEXT["cardiomegaly"]))
    if rng.random() < 0.35:
        out.append(_pick(rng, _NEG_TEXT["other"]))
    return out


def _section_bodies(st: Study, rng: np.random.Generator) -> list[tuple[str, str]]:
    found, impression = [], []
    for name in ("support_device", *(n for n in CXR_FINDINGS if n != "support_device")):  # devices come first
        if name in st.pos:
            p = st.pos[name]
            # radiologists hedge on subtle findings, not on a large effusion or a mass
            sentence, imp = _positive(p, rng, hedge=rng.random() < 0.3 and p.severity < 0.45 and p.size_mm <= 30)
            found.append(sentence)
            impression.append(imp)
    found += _negatives(st.pos, rng)
    if set(st.pos) <= {"support_device"}:
        normal = _NORMAL_IMPRESSION[0] if rng.random() < 0.6 else _pick(rng, _NORMAL_IMPRESSION)
        impression = [*impression, normal]
    elif len(impression) > 1 and rng.random() < 0.5:
        impression = [f"{i}. {text}" for i, text in enumerate(impression, 1)]
    sex = _pick(rng, ("male", "man") if st.sex == "M" else ("female", "woman"))
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
    complaint = _pick(
        rng, _COMPLAINTS + (("line placement", "respiratory failure") if "support_device" in st.pos else ())
    )
    views = {"PA": "PA", "AP": "PORTABLE AP"}[st.view] + (" AND LAT" if st.lateral else "")
    exam = _pick(
        rng,
        (f"CHEST ({views})", f"Chest radiograph, {'two views' if st.lateral else 'one view'}.", f"XR CHEST {views}"),
    )
    comparison = _pick(
        rng,
        ("___.", "Chest radiograph ___.", "Prior study from ___.")
        if st.has_prior
        else ("None.", "No prior studies available.", "___."),
    )
    return [
        ("EXAMINATION", exam),
        ("HISTORY" if rng.random() < 0.2 else "INDICATION", indication.format(c=complaint, C=_cap(complaint))),
        ("COMPARISON", comparison),
        ("FINDINGS", " ".join(found) if rng.random() < 0.8 else "\n".join(found)),
        ("IMPRESSION", "\n".join(impression) if impression[0][:2] == "1." else " ".join(impression)),
    ]


def cxr_report(st: Study, seed: int) -> str:
    """Free-text report in one of several house styles (header case, separators, wrapping, missing sections)."""
    rng = np.random.default_rng([seed, 2, st.idx])
    case = _pick(rng, ("upper", "upper", "upper", "title", "lower"))
    sep = _pick(rng, (": ", ": ", " - ", "\n"))
    width = int(rng.integers(70, 81)) if rng.random() < 0.35 else 0
    blocks = []
    for name, body in _section_bodies(st, rng):
        if (name in ("INDICATION", "HISTORY") and rng.random() < 0.12) or (
            name == "COMPARISON" and rng.random() < 0.15
        ):
            continue
        head = {"upper": name, "title": name.title(), "lower": name.lower()}[case]
        text = f"{head}{sep}{body}" if sep != "\n" else f"{head}:\n{body}" if rng.random() < 0.5 else f"{head}\n{body}"
        if width:
            text = "\n".join(textwrap.fill(line, width) if line else line for line in text.split("\n"))
        blocks.append(text)
    return ("\n\n" if rng.random() < 0.7 else "\n").join(blocks) + "\n"


GROUNDING_CATEGORIES: dict[str, str] = {
    "pleural_effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "nodule": "Nodule",
    "atelectasis": "Atelectasis",
    "edema": "Edema",
}
"""Findings that get boxes in grounding.csv, with their MS-CXR style ``category_name``."""


def grounding_phrase(p: Positive, side: str) -> str:
    """Short phrase for one box of finding ``p`` (grounding.csv ``label_text``), e.g. "left lower lobe nodule".

    ``side`` ("left"/"right") is the box's own side, so each box of a one-sided finding names its lung. Edema is
    diffuse and bilateral and its reports never give a side, so it is one phrase ("pulmonary edema") with a box
    per lung, as MS-CXR gives one phrase several boxes. Fixed wording without random draws: the phrases are
    ground truth for grounding, not report text.
    """
    if p.name == "pleural_effusion":
        return f"{side} pleural effusion"
    if p.name == "pneumothorax":
        return f"{side} pneumothorax"
    if p.name == "consolidation":
        return "lingular consolidation" if p.lobe == "lingula" else f"{side} {p.lobe} lobe consolidation"
    if p.name == "nodule":
        return f"{side} {p.lobe} lobe {'mass' if p.size_mm > 30 else 'nodule'}"  # the report's word for it too
    if p.name == "atelectasis":
        return f"{side} basal atelectasis"
    if p.name == "edema":
        return "pulmonary edema"
    raise ValueError(f"no grounding phrase for finding {p.name!r}; boxed findings: {sorted(GROUNDING_CATEGORIES)}")
