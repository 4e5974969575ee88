"""Planned studies of the synthetic chest X-ray archive: the records :mod:`medclip.synth.cxr.archive` samples and
writes, and :mod:`medclip.synth.cxr.reports` turns into report text.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from medclip.synth.cxr.geometry import Anatomy
from medclip.synth.cxr.phantom import Finding

__all__ = ["Positive", "Station", "Study"]


@dataclass(frozen=True)
class Station:
    """One acquisition device; every study on it shares the DICOM pixel-encoding conventions."""

    name: str
    modality: str
    bits: int
    mono1: bool
    rescale: tuple[float, float] | None  # (slope, intercept)
    window: bool
    weight: float
    manufacturer: str = "MEDCLIP SYNTHETIC"  # the DICOM Manufacturer: a vendor makes several stations


@dataclass
class Positive:
    """One positive finding: what the report says about it and how the phantom draws it."""

    name: str
    side: str = ""
    severity: float = 0.5
    lobe: str = ""
    size_mm: float = 0.0
    specs: tuple[Finding, ...] = ()
    carried: bool = False  # present on the previous study of the same patient


@dataclass
class Study:
    """One planned study: patient, acquisition and ground-truth findings (``pos``, keyed by finding name)."""

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
    station: Station
    size: tuple[int, int]
    spacing: float
    anatomy: Anatomy
    series_base: int
    has_prior: bool
    pos: dict[str, Positive] = field(default_factory=dict)
    site: str = ""  # InstitutionName: the synthetic hospital the patient is imaged at
