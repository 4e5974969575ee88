"""The patient of the chest CT phantom (:mod:`medclip.synth.ct.phantom`): build and scan positioning, and how a
random adult is drawn.

Distances are patient-relative millimetres (``x`` to the patient's left, ``y`` posterior, ``z`` superior; origin at
the centre of the scan range).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CTAnatomy", "sample_anatomy"]


@dataclass(frozen=True)
class CTAnatomy:
    """Patient build and scan positioning (mm, patient-relative; see the module docstring)."""

    width_mm: float = 310.0  # body width, right to left
    ap_ratio: float = 0.74  # body depth / width
    fat_mm: float = 14.0  # subcutaneous fat
    muscle_mm: float = 14.0  # chest-wall muscle
    shift_x: float = 0.0  # patient offset from the scan centre
    shift_y: float = 0.0
    apex_z: float = 100.0  # lung apex
    dome_right: float = -45.0  # hemidiaphragm dome peaks; the right (liver) side usually sits higher
    dome_left: float = -57.0
    heart_scale: float = 1.0
    heart_angle_deg: float = 38.0  # long axis of the heart, from the patient's left towards anterior
    female: bool = False
    coronary_calcium: int = 0  # calcified coronary plaques (an incidental finding the report may mention)
    stomach_gas: bool = True
    noise_hu: float = 14.0  # image noise standard deviation


def sample_anatomy(rng: np.random.Generator, *, female: bool | None = None) -> CTAnatomy:
    """A random adult: size, fat, diaphragm and heart vary; positioning is centred (jitter it per study)."""
    female = bool(rng.random() < 0.5) if female is None else female
    width = float(rng.uniform(270, 320) if female else rng.uniform(285, 335))
    dome = float(rng.normal(-45, 7))
    return CTAnatomy(
        width_mm=width,
        ap_ratio=float(rng.uniform(0.7, 0.82)),
        fat_mm=float(rng.uniform(5, 26)),
        muscle_mm=float(rng.uniform(8, 14)),
        apex_z=float(rng.normal(100, 5)),
        dome_right=dome,
        dome_left=dome - float(rng.uniform(5, 18)),
        heart_scale=float(rng.uniform(0.9, 1.06)),
        heart_angle_deg=float(rng.uniform(28, 48)),
        female=female,
        coronary_calcium=int(rng.choice([0, 0, 0, 2, 4, 7])),
        stomach_gas=bool(rng.random() < 0.6),
        noise_hu=float(rng.uniform(10, 20)),
    )
