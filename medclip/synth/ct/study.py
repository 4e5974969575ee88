"""Planned studies of the synthetic chest CT archive: the records :mod:`medclip.synth.ct.archive` samples and
writes, and :mod:`medclip.synth.ct.reports` turns into report text.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from medclip.synth.ct.anatomy import CTAnatomy
from medclip.synth.ct.findings import CTFinding

__all__ = ["Scanner", "Study"]


@dataclass(frozen=True)
class Scanner:
    """One CT scanner; its studies share the pixel encoding and display defaults."""

    name: str
    model: str
    signed: bool  # int16 stored HU (intercept 0) instead of uint16 with intercept -1024
    kernel: str
    window: tuple[tuple[float, ...], tuple[float, ...]]  # (centres, widths)
    series: str
    weight: float
    manufacturer: str = "MEDCLIP SYNTHETIC"  # the DICOM Manufacturer: a vendor makes several scanners


@dataclass
class Study:
    """One planned study: patient, scanner, storage format and ground-truth findings (``pos``, keyed by name)."""

    idx: int
    patient_no: int
    patient_id: str
    sex: str
    age: int
    date: dt.date
    time: str
    accession: str
    uid: str
    anatomy: CTAnatomy
    scanner: Scanner
    exam: str  # "routine" or "screening"
    description: str  # StudyDescription
    pixel_mm: float
    z0: float  # table position of the lowest slice
    series_number: int
    order: str  # InstanceNumber order: "head_first", "shuffled" or "feet_first"
    fmt: str  # "dicom" or "nifti"
    axcodes: str  # NIfTI voxel order: "LPS" or "RAS"
    has_prior: bool
    pos: dict[str, CTFinding] = field(default_factory=dict)
    carried: frozenset[str] = frozenset()
    site: str = ""  # InstitutionName: the synthetic hospital the patient is scanned at
