"""Embedded synthetic chest X-ray demo archive: a PACS-style DICOM export with free-text reports and labels.

``synth_cxr(out_dir)`` writes::

    OUT/dicom/<PatientID>/<StudyDate>-<AccessionNumber>/<SeriesNumber>/<InstanceNumber>.dcm
    OUT/reports/<AccessionNumber>.txt   one report per study (lateral views share it)
    OUT/labels.csv                      ground truth for evaluation only
    OUT/README.txt

Images come from :mod:`medclip.data.phantom`; everything is driven by one seed, so reruns are byte-identical.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import re
import shutil
import textwrap
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from medclip.data import phantom
from medclip.data.phantom import Finding

logger = logging.getLogger(__name__)

__all__ = ["CXR_FINDINGS", "SIDED_FINDINGS", "synth_cxr"]

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

_SIZES = ((512, 512), (576, 480), (480, 576), (576, 448), (448, 512))
_P_NORMAL = 0.33
# Per-finding probability within abnormal studies; tuned so each lands at ~15-30 % of all studies.
_P_FINDING = {
    "cardiomegaly": 0.2,
    "pleural_effusion": 0.30,
    "pneumothorax": 0.23,
    "consolidation": 0.27,
    "edema": 0.16,
    "nodule": 0.18,
    "atelectasis": 0.28,
    "support_device": 0.26,
}
_LOBES = {"right": ("upper", "middle", "lower"), "left": ("upper", "lingula", "lower")}
# (u, v, w) ranges inside the lung: medial->lateral, apex->base, anterior->posterior
_LOBE_BOX = {
    "upper": ((0.3, 0.85), (0.1, 0.38), (0.3, 0.6)),
    "middle": ((0.2, 0.6), (0.5, 0.7), (0.08, 0.35)),
    "lingula": ((0.35, 0.7), (0.5, 0.7), (0.08, 0.35)),
    "lower": ((0.35, 0.9), (0.66, 0.9), (0.6, 0.92)),
}


@dataclass(frozen=True)
class _Station:
    """One acquisition device; every study on it shares the DICOM pixel-encoding conventions."""

    name: str
    modality: str
    bits: int
    mono1: bool
    rescale: tuple[float, float] | None  # (slope, intercept)
    window: bool
    weight: float


_STATIONS = (
    _Station("SYNTHRAD DX-1", "DX", 12, False, None, True, 0.28),
    _Station("SYNTHRAD DX-2", "DX", 14, False, (1.0, -1024.0), True, 0.17),
    _Station("OLDCR READER", "CR", 12, True, None, True, 0.13),
    _Station("CR-ARCHIVE", "CR", 16, False, (0.5, 0.0), False, 0.15),
    _Station("PORTA-DX", "DX", 14, True, (2.0, 0.0), True, 0.12),
    _Station("SYNTHRAD DX-3", "DX", 16, False, (1.0, 0.0), True, 0.15),
)


@dataclass
class _Pos:
    """One positive finding: what the report says about it and how the phantom draws it."""

    name: str
    side: str = ""
    severity: float = 0.5
    lobe: str = ""
    size_mm: float = 0.0
    specs: tuple[Finding, ...] = ()
    carried: bool = False  # present on the previous study of the same patient


@dataclass
class _Study:
    idx: int
    patient_no: int
    patient_id: str
    sex: str
    age: int
    date: dt.date
    time: str
    accession: str
    uid: str
    view: str
    lateral: str  # "" when there is no lateral view
    station: _Station
    size: tuple[int, int]
    spacing: float
    anatomy: phantom.Anatomy
    series_base: int
    has_prior: bool
    pos: dict[str, _Pos] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- sampling
def _grade(sev: float) -> int:
    return 0 if sev < 0.35 else 1 if sev < 0.7 else 2


def _box(rng: np.random.Generator, lobe: str) -> dict[str, float]:
    (u0, u1), (v0, v1), (w0, w1) = _LOBE_BOX[lobe]
    return {"u": float(rng.uniform(u0, u1)), "v": float(rng.uniform(v0, v1)), "w": float(rng.uniform(w0, w1))}


def _devices(rng: np.random.Generator) -> tuple[Finding, ...]:
    kinds = ["ett", "cvc", "pacemaker", "enteric"]
    first = str(rng.choice(kinds, p=[0.3, 0.35, 0.22, 0.13]))
    chosen = [first]
    if first == "ett" and rng.random() < 0.6:  # intubated patients usually also have an enteric tube
        chosen.append("enteric")
    elif rng.random() < 0.2:
        chosen.append(str(rng.choice([k for k in kinds if k != first])))
    out = []
    for kind in chosen:
        side = {
            "cvc": "right" if rng.random() < 0.75 else "left",
            "pacemaker": "left" if rng.random() < 0.85 else "right",
        }
        out.append(Finding("support_device", side=side.get(kind, ""), kind=kind, v=float(rng.random())))
    return tuple(out)


def _sample_finding(name: str, rng: np.random.Generator) -> _Pos:
    """Draw side, severity, location and size for one positive finding."""
    sev = float(rng.uniform(0.05, 1.0))
    side = str(rng.choice(["left", "right"]))
    if name == "support_device":
        return _Pos(name, specs=_devices(rng))
    if name in ("pleural_effusion", "atelectasis"):
        side = str(rng.choice(["left", "right", "bilateral"], p=[0.36, 0.36, 0.28]))
    if name in ("cardiomegaly", "edema", "pleural_effusion", "pneumothorax"):
        side = "" if name in ("cardiomegaly", "edema") else side
        return _Pos(name, side, sev, specs=(Finding(name, side, sev),))
    if name == "atelectasis":
        pos = {"u": float(rng.uniform(0.4, 0.85)), "v": float(rng.uniform(0.66, 0.85)), "w": 0.75}
        spec = Finding(name, side, sev, angle=float(rng.uniform(-0.3, 0.3)), **pos)
        return _Pos(name, side, sev, "lower", specs=(spec,))
    lobes = _LOBES[side] if name == "consolidation" else ("upper", "lower") + (("middle",) if side == "right" else ())
    lobe = str(rng.choice(lobes))
    size = float(rng.uniform(6, 30) if rng.random() < 0.8 else rng.uniform(32, 60)) if name == "nodule" else 0.0
    spec = Finding(name, side, sev, size_mm=size, angle=float(rng.uniform(-0.6, 0.6)), **_box(rng, lobe))
    return _Pos(name, side, sev, lobe, size, specs=(spec,))


def _sample_positives(rng: np.random.Generator, prior: dict[str, _Pos]) -> dict[str, _Pos]:
    """Findings for one study; chronic findings (heart size, nodules, pacemakers) tend to persist."""
    pos: dict[str, _Pos] = {}
    for name, keep in (("cardiomegaly", 0.7), ("nodule", 0.6), ("support_device", 0.4)):
        if name in prior and rng.random() < keep:
            p = prior[name]
            pos[name] = _Pos(p.name, p.side, p.severity, p.lobe, p.size_mm, p.specs, carried=True)
    if not pos and rng.random() < _P_NORMAL:
        return pos
    for name in CXR_FINDINGS:
        p = _P_FINDING[name]
        if name == "edema":  # heart failure: edema goes with an enlarged heart
            p = 0.42 if "cardiomegaly" in pos else p
        if name not in pos and rng.random() < p:
            pos[name] = _sample_finding(name, rng)
    if not pos:
        name = str(rng.choice(CXR_FINDINGS))
        pos[name] = _sample_finding(name, rng)
    return pos


def _plan(n_studies: int, seed: int) -> list[_Study]:
    """Patients, studies and their findings from ``seed``; a smaller ``n_studies`` gives a prefix of a larger plan."""
    rng = np.random.default_rng([seed, 1])
    accessions, pids = _ids(seed, 40_000_009, n_studies), _ids(seed, 27_182_819, n_studies)
    weights = np.array([s.weight for s in _STATIONS])
    # the first studies cycle through every station so even a tiny archive shows each DICOM variant
    stations = [_STATIONS[i] for i in rng.permutation(len(_STATIONS))]
    studies: list[_Study] = []
    patient_no = 0
    while len(studies) < n_studies:
        patient_no += 1
        sex = "M" if rng.random() < 0.5 else "F"
        age0 = int(rng.integers(20, 91))
        anatomy = phantom.sample_anatomy(rng, female=sex == "F")
        first = dt.date(2012, 1, 1) + dt.timedelta(days=int(rng.integers(0, 4000)))
        day, prior = 0, {}
        for k in range(int(rng.choice([1, 2, 3, 4], p=[0.25, 0.3, 0.3, 0.15]))):
            if len(studies) >= n_studies:
                break
            idx = len(studies)
            day += 0 if k == 0 else int(rng.integers(1, 400))
            pos = _sample_positives(rng, prior)
            ap = rng.random() < 0.15 + 0.45 * ("support_device" in pos) + 0.1 * ("edema" in pos)
            lateral = "" if rng.random() > (0.05 if ap else 0.41) else str(rng.choice(["LL", "LATERAL"], p=[0.7, 0.3]))
            st = stations[idx] if idx < len(stations) else _STATIONS[rng.choice(len(_STATIONS), p=weights)]
            size = _SIZES[int(rng.integers(len(_SIZES)))]
            studies.append(
                _Study(
                    idx=idx,
                    patient_no=patient_no,
                    patient_id=pids[patient_no - 1],
                    sex=sex,
                    age=age0 + day // 365,
                    date=first + dt.timedelta(days=day),
                    time=f"{rng.integers(0, 24):02d}{rng.integers(0, 60):02d}{rng.integers(0, 60):02d}",
                    accession=accessions[idx],
                    uid=_uid(seed, "study", idx),
                    view="AP" if ap else "PA",
                    lateral=lateral,
                    station=st,
                    size=size,
                    spacing=float(rng.uniform(330, 410)) / min(size),
                    anatomy=_jitter(anatomy, rng),
                    series_base=int(rng.choice([1, 1, 1, 2, 100, 1001])),
                    has_prior=k > 0,
                    pos=pos,
                )
            )
            prior = pos
    return studies


def _jitter(an: phantom.Anatomy, rng: np.random.Generator) -> phantom.Anatomy:
    """Same patient, new positioning and breath-hold."""
    dome = float(rng.normal(0, 5))
    return replace(
        an,
        shift_x=float(rng.normal(0, 8)),
        shift_y=float(rng.normal(-10, 10)),
        rotation_deg=float(rng.normal(0, 2)),
        dome_right=an.dome_right + dome,
        dome_left=an.dome_left + dome,
        stomach_bubble=bool(rng.random() < 0.6),
    )


def _ids(seed: int, mult: int, n: int) -> list[str]:
    """Unique random-looking 8-digit numbers; an affine map mod 9e7 (``mult`` coprime to it) cannot collide and,
    unlike sampling without replacement, keeps the first k IDs independent of ``n``."""
    offset = int(np.random.default_rng([seed, mult]).integers(9 * 10**7))
    return [str(10**7 + (mult * i + offset) % (9 * 10**7)) for i in range(n)]


def _uid(seed: int, *parts: object) -> str:
    """Deterministic UID: same seed and parts give the same UID on every run."""
    return generate_uid(entropy_srcs=["medclip-synth-cxr", str(seed), *map(str, parts)])


# ---------------------------------------------------------------------------------------------- reports
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
_COMPLAINTS = ("cough", "shortness of breath", "fever", "chest pain", "dyspnea", "hypoxia", "pre-operative evaluation",
               "weakness", "productive cough and fever", "fever and cough", "fall")  # fmt: skip


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _location(p: _Pos, rng: np.random.Generator) -> str:
    if p.lobe == "lingula":
        return "lingula"
    loc = f"{p.side} {p.lobe} lobe"
    if p.name == "consolidation" and rng.random() < 0.12:  # radiologists' shorthand, e.g. "RLL"
        return f"{p.side[0]}{p.lobe[0]}l".upper()
    return loc


def _positive(p: _Pos, rng: np.random.Generator, hedge: bool) -> tuple[str, str]:
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


def _negatives(pos: dict[str, _Pos], rng: np.random.Generator) -> list[str]:
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


def _section_bodies(st: _Study, rng: np.random.Generator) -> list[tuple[str, str]]:
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
    indication = _pick(rng, (f"XXXX-year-old {sex} with {{c}}.", f"___ year old {sex} with {{c}}.",
                             f"___{st.sex} with {{c}}.", "{C}.", "___ with {c}."))  # fmt: skip
    complaint = _pick(
        rng, _COMPLAINTS + (("line placement", "respiratory failure") if "support_device" in st.pos else ())
    )
    views = {"PA": "PA", "AP": "PORTABLE AP"}[st.view] + (" AND LAT" if st.lateral else "")
    exam = _pick(
        rng,
        (f"CHEST ({views})", f"Chest radiograph, {'two views' if st.lateral else 'one view'}.", f"XR CHEST {views}"),
    )
    comparison = _pick(rng, ("___.", "Chest radiograph ___.", "Prior study from ___.") if st.has_prior
                       else ("None.", "No prior studies available.", "___."))  # fmt: skip
    return [
        ("EXAMINATION", exam),
        ("HISTORY" if rng.random() < 0.2 else "INDICATION", indication.format(c=complaint, C=_cap(complaint))),
        ("COMPARISON", comparison),
        ("FINDINGS", " ".join(found) if rng.random() < 0.8 else "\n".join(found)),
        ("IMPRESSION", "\n".join(impression) if impression[0][:2] == "1." else " ".join(impression)),
    ]


def _report(st: _Study, seed: int) -> str:
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


# ------------------------------------------------------------------------------------------------ DICOM
def _pixel_module(ds: Dataset, img: np.ndarray, st: _Study, rng: np.random.Generator) -> None:
    """Encode a [0, 1] image (bright = dense) with the station's bit depth, photometry, rescale and window."""
    sta = st.station
    maxv = (1 << sta.bits) - 1
    lo, hi = rng.uniform(0.02, 0.12) * maxv, rng.uniform(0.78, 0.98) * maxv
    stored = np.rint(lo + img * (hi - lo)).astype("<u2")
    if sta.mono1:  # MONOCHROME1 displays low values bright, so dense tissue must be stored low
        stored = (maxv - stored).astype("<u2")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if sta.mono1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = ds.ImagerPixelSpacing = [f"{st.spacing:.4f}"] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, sta.bits, sta.bits - 1, 0
    slope, intercept = sta.rescale or (1.0, 0.0)
    if sta.rescale:
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = f"{intercept:g}", f"{slope:g}", "US"
    if sta.window:
        p_lo, p_hi = np.percentile(stored[::4, ::4], [1, 99]) * slope + intercept
        ds.WindowCenter = f"{(p_lo + p_hi) / 2:.1f}"
        ds.WindowWidth = f"{max(p_hi - p_lo, 1.0) * rng.uniform(1.0, 1.15):.1f}"
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"


def _dataset(st: _Study, view: str, series: int, img: np.ndarray, seed: int, rng: np.random.Generator) -> Dataset:
    """One CR/DX image as a complete Part-10 dataset."""
    sop_class = (
        ComputedRadiographyImageStorage if st.station.modality == "CR" else DigitalXRayImageStorageForPresentation
    )
    sop_uid = _uid(seed, "sop", st.idx, series, 1)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"{st.date:%Y%m%d}"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = st.time
    ds.AccessionNumber = st.accession
    ds.Modality = st.station.modality
    ds.Manufacturer, ds.StationName = "MEDCLIP SYNTHETIC", st.station.name
    lat = " AND LAT" if st.lateral else ""
    ds.StudyDescription = f"CHEST ({'PORTABLE AP' if st.view == 'AP' else 'PA'}{lat})"
    ds.SeriesDescription = "LATERAL" if view in phantom.LATERAL_VIEWS else f"CHEST {view}"
    ds.PatientName = f"SYNTH^P{st.patient_no:04d}"
    ds.PatientID, ds.PatientSex, ds.PatientAge = st.patient_id, st.sex, f"{st.age:03d}Y"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", view
    # frontal: columns run to the patient's left; lateral: anterior at image left, so columns run posterior
    ds.PatientOrientation = ["P", "F"] if view in phantom.LATERAL_VIEWS else ["L", "F"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = st.uid, _uid(seed, "series", st.idx, series)
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = st.accession[-6:], series, 1
    if st.station.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    _pixel_module(ds, img, st, rng)
    return ds


# ---------------------------------------------------------------------------------------------- archive
_README_MARK = "SYNTHETIC chest X-ray demo archive written by medclip.data.synthetic"


def _write_study(out: Path, st: _Study, seed: int) -> int:
    """Render and write every image of one study; returns the number of images."""
    rng = np.random.default_rng([seed, 3, st.idx])
    specs = [spec for p in st.pos.values() for spec in p.specs]
    folder = out / "dicom" / st.patient_id / f"{st.date:%Y%m%d}-{st.accession}"
    views = [st.view, st.lateral] if st.lateral else [st.view]
    for k, view in enumerate(views):
        acq = phantom.sample_acquisition(rng)
        rows, cols = st.size
        img = phantom.render(rows, cols, st.spacing, view=view, anatomy=st.anatomy, findings=specs, acquisition=acq,
                             seed=int(rng.integers(2**31)))  # fmt: skip
        series = st.series_base + k
        path = folder / str(series) / "1.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        _dataset(st, view, series, img, seed, rng).save_as(path, enforce_file_format=True)
    return len(views)


def _label_rows(plan: list[_Study]) -> tuple[list[str], list[list[object]]]:
    header = [
        "study_id",
        "accession",
        "patient_id",
        *CXR_FINDINGS,
        "no_finding",
        *(f"{n}_side" for n in SIDED_FINDINGS),
    ]
    rows = []
    for st in plan:
        flags = [int(n in st.pos) for n in CXR_FINDINGS]
        sides = [st.pos[n].side if n in st.pos else "" for n in SIDED_FINDINGS]
        rows.append([st.uid, st.accession, st.patient_id, *flags, int(not any(flags)), *sides])
    return header, rows


def _prepare(out: Path) -> None:
    """Refuse to mix with foreign files; clear a previous synthetic archive so no stale studies remain."""
    readme = out / "README.txt"
    ours = readme.is_file() and readme.read_text(encoding="utf-8").startswith(_README_MARK)
    for sub in ("dicom", "reports"):
        if (out / sub).is_dir() and any((out / sub).iterdir()):
            if not ours:
                raise FileExistsError(f"{out / sub} is not empty and is not a synthetic archive; use a fresh directory")
            shutil.rmtree(out / sub)
    (out / "dicom").mkdir(parents=True, exist_ok=True)
    (out / "reports").mkdir(parents=True, exist_ok=True)


def synth_cxr(out_dir: str | Path, *, studies: int = 400, seed: int = 0) -> dict:
    """Write the synthetic chest X-ray archive (DICOM + reports + labels) to ``out_dir``.

    Args:
        out_dir: Target directory; created if missing. A previous synthetic archive there is replaced.
        studies: Number of studies (each has a frontal view, ~30 % also a lateral).
        seed: Controls everything; the same seed gives byte-identical pixels, the same UIDs and reports.

    Returns:
        {"patients", "studies", "images", "prevalence": {finding: fraction of studies}, "no_finding",
        "out_dir", "seconds"}.
    """
    if studies < 1:
        raise ValueError(f"studies must be >= 1, got {studies}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    _prepare(out)
    plan = _plan(studies, seed)
    n_images = 0
    for st in plan:
        n_images += _write_study(out, st, seed)
        (out / "reports" / f"{st.accession}.txt").write_text(_report(st, seed), encoding="utf-8", newline="\n")
    header, rows = _label_rows(plan)
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    (out / "README.txt").write_text(_README_MARK + _README.format(n=studies, seed=seed), encoding="utf-8")
    summary = {
        "patients": len({st.patient_id for st in plan}),
        "studies": len(plan),
        "images": n_images,
        "prevalence": {n: sum(n in st.pos for st in plan) / len(plan) for n in CXR_FINDINGS},
        "no_finding": sum(not st.pos for st in plan) / len(plan),
        "out_dir": str(out),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    logger.info("synthetic CXR archive: %d patients, %d studies, %d images in %.1fs -> %s", summary["patients"],
                summary["studies"], n_images, summary["seconds"], out)  # fmt: skip
    return summary


_README = """ ({n} studies, seed {seed}).

Nothing here comes from a real patient. Images are procedural numpy phantoms (medclip.data.phantom: body,
lungs, heart, diaphragm, ribs, findings, exposure and noise) encoded as CR/DX DICOM with varied bit depth,
MONOCHROME1/2, rescale and window settings. Reports are generated from the same ground truth with varied
wording, hedging, negations and de-identification placeholders (XXXX, ___).

dicom/<PatientID>/<StudyDate>-<AccessionNumber>/<SeriesNumber>/<InstanceNumber>.dcm
reports/<AccessionNumber>.txt   one report per study; lateral views share it
labels.csv                      ground truth for evaluation only (never train on it)
"""
