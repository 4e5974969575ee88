"""Procedural chest radiograph phantom: pure-numpy rendering of synthetic CXRs with findings.

All geometry lives in a canonical patient frame in millimetres (``x`` to image right, ``y`` down, origin
mid-thorax) that is scaled, shifted and rotated onto the pixel grid. Frontal views (PA/AP) follow the
radiograph convention: the patient's LEFT is on the image RIGHT (``x > 0``). Lateral views run anterior
(image left, ``x < 0``) to posterior. Rendered images are attenuation-like: values in [0, 1], bright = dense.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from medclip.synth.cxr.geometry import (
    EDGE,
    Anatomy,
    Frame,
    Layers,
    capsule,
    ellipse,
    ribs,
    sig,
    smooth_noise,
    smooth_path,
    upsample,
    vessel_markings,
)

logger = logging.getLogger(__name__)

__all__ = [
    "VISIBILITY",
    "Acquisition",
    "Anatomy",
    "Finding",
    "lung_mask",
    "patient_x",
    "render",
    "sample_acquisition",
    "sample_anatomy",
]

VISIBILITY: float = 1.25
"""Global multiplier on finding contrast (opacity, lucency, cardiac enlargement); lower makes the task harder.
Read at render time, so ``phantom.VISIBILITY = 0.5`` before writing an archive takes effect."""

DEVICE_WIDTH: float = 1.8
"""Scale on tube and lead widths: at the demo's 128 px a 2 mm central line would fall below one pixel."""

LATERAL_VIEWS = ("LL", "RL", "LATERAL")
_LUNG_CX, _LUNG_A, _LUNG_Y0, _LUNG_B = 80.0, 68.0, 20.0, 155.0  # frontal lung capsule (per side)
_THORAX_W = 2 * (_LUNG_CX + _LUNG_A)  # inner rib-cage width used for the cardiothoracic ratio
_DOME_K = 0.0071  # diaphragm curvature: dome peak to costophrenic angle drop is ~55 mm


@dataclass(frozen=True)
class Acquisition:
    """Exposure and detector characteristics applied after the attenuation image is formed."""

    black: float = 0.18  # attenuation-image level mapped to 0
    white: float = 0.97  # level mapped to 1
    gamma: float = 1.0
    noise: float = 0.012  # white noise sigma
    mottle: float = 0.02  # low-frequency structured noise amplitude
    grid_lines: float = 0.0  # amplitude of anti-scatter grid line artefact
    heel: float = 0.03  # top-to-bottom exposure gradient (anode heel effect)


@dataclass(frozen=True)
class Finding:
    """One finding to draw. ``side`` is the patient's side; ``u, v, w`` in [0, 1] place it inside the lung
    (medial->lateral, apex->base, anterior->posterior); ``kind`` names the device for ``support_device``."""

    name: str
    side: str = ""
    severity: float = 0.5
    size_mm: float = 0.0
    u: float = 0.5
    v: float = 0.5
    w: float = 0.5
    kind: str = ""
    angle: float = 0.0


def sample_anatomy(rng: np.random.Generator, *, female: bool | None = None) -> Anatomy:
    """Draw a plausible patient build and positioning."""
    fem = bool(rng.random() < 0.5) if female is None else female
    right = float(rng.uniform(55, 78))
    return Anatomy(
        scale=float(rng.uniform(0.86, 1.1) * (0.95 if fem else 1.0)),
        shift_x=float(rng.normal(0, 8)),
        shift_y=float(rng.normal(-10, 10)),
        rotation_deg=float(rng.normal(0, 2.0)),
        ctr=float(rng.uniform(0.38, 0.47)),
        dome_right=right,
        dome_left=right + float(rng.uniform(4, 20)),
        female=fem,
        stomach_bubble=bool(rng.random() < 0.6),
    )


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    """Draw exposure, contrast, gamma and noise settings."""
    black = float(rng.uniform(0.1, 0.26))
    return Acquisition(
        black=black,
        white=float(rng.uniform(0.92, 1.02)),
        gamma=float(np.exp(rng.normal(0, 0.18))),
        noise=float(rng.uniform(0.004, 0.025)),
        mottle=float(rng.uniform(0.004, 0.025)),
        grid_lines=float(rng.uniform(0.004, 0.015)) if rng.random() < 0.25 else 0.0,
        heel=float(rng.normal(0, 0.04)),
    )


def _frontal_anatomy(
    fr: Frame, an: Anatomy, ctr: float, lift: dict[str, float], noise: np.ndarray, ap: bool = False
) -> Layers:
    """PA/AP projection: torso, lungs, mediastinum, heart, diaphragm, ribs, clavicles, spine."""
    x, y = fr.x, fr.y
    ax = np.abs(x)
    torso = ellipse(x, y, 0, 70, 172, 330, 4) * (0.55 + 0.45 * np.sqrt(np.clip(1 - (x / 180) ** 2, 0, 1)))
    tissue = np.maximum(torso, 0.85 * ellipse(ax, y, 128, -190, 80, 55, 4))
    tissue = np.maximum(tissue, sig((58 - ax) / 3) * sig((-170 - y) / 6))
    if an.female:
        tissue += 0.12 * ellipse(ax, y, 98, 110, 80, 50, 8)
    caps, r = capsule(ax, y, _LUNG_CX, _LUNG_A, _LUNG_Y0, _LUNG_B)
    caps *= 0.7 + 0.3 * np.sqrt(np.clip(1 - r**2, 0, 1))  # less aerated lung to traverse at the periphery
    peak = np.where(x < 0, np.float32(an.dome_right - lift["right"]), np.float32(an.dome_left - lift["left"]))
    below_dome = sig((peak + _DOME_K * (ax - 55) ** 2 - y) / EDGE)
    med = sig((24 - ax) / 2.5) * sig((10 - y) / 4)
    fr.blob(med, 27, -72, 17, 15, 1.0)
    med = np.clip(med, 0, 1)
    width = ctr * _THORAX_W
    a_h = width / 2 / 0.96  # horizontal half-extent of the tilted ellipse equals width / 2
    heart = ellipse(x, y, 0.12 * width, 72 - 0.27 * width, a_h, 0.75 * a_h, 2.5, math.radians(25))
    lungs = caps * below_dome * (1 - med) * (1 - 0.8 * heart)
    other = 0.5 * sig((8 - ax) / 1.5) * sig((-55 - y) / 3)  # trachea
    for s in (-1, 1):
        fr.tube(other, [(0, -55), (s * 14, -46), (s * 26, -38)], 4.5, 0.3)
    if an.stomach_bubble:
        fr.blob(other, 66, an.dome_left + 38, 30, 16, 0.7, 3)
    bone = 0.9 * sig((19 - ax) / 1.5) * (0.8 + 0.2 * np.cos(y * (2 * np.pi / 28)))
    cage = sig((156 - ax) / 3) * sig((ax - 14) / 3)
    bone += cage * (
        0.35 * ribs(x, y, -0.12 * ax + 0.0035 * ax**2, -182, 22, 10.6)
        + 0.2 * ribs(x, y, -0.45 * ax, -150, 30, 7) * sig((ax - 40) / 5)
    )
    clav = -14.0 if ap else 0.0  # AP projection throws the clavicles higher
    for s in (-1, 1):
        fr.tube(bone, smooth_path([(s * 16, -160 + clav), (s * 70, -170 + clav), (s * 142, -194 + clav)]), 7, 0.8)
    vessels = vessel_markings(ax - 42, y + 15, noise) * lungs
    sides = {"right": lungs * (x < 0), "left": lungs * (x >= 0)}
    return Layers(tissue + 0.15 * heart + 0.1 * med, lungs, other, bone, vessels, sides)


def _lateral_anatomy(fr: Frame, an: Anatomy, ctr: float, lift: dict[str, float], noise: np.ndarray) -> Layers:
    """Lateral projection (anterior at image left): lungs superimposed, heart anterior, spine posterior."""
    x, y = fr.x, fr.y
    torso = ellipse(x, y, 5, 70, 125, 330, 4) * (0.6 + 0.4 * np.sqrt(np.clip(1 - ((x - 5) / 130) ** 2, 0, 1)))
    tissue = np.maximum(torso, ellipse(x, y, 0, -250, 62, 120, 4)) + 0.35 * ellipse(x, y, 15, -200, 115, 60, 10)
    caps, r = capsule(x, y, 5, 92, 15, 150)
    caps *= 0.7 + 0.3 * np.sqrt(np.clip(1 - r**2, 0, 1))
    d1 = _lateral_dome(an, lift, x)
    below = 0.5 * (sig((d1 - y) / EDGE) + sig((d1 + an.dome_left - an.dome_right - y) / EDGE))
    a_h = 58 * ctr / 0.44
    heart = ellipse(x, y, -64 + 0.6 * a_h, 45, a_h, 58, 2.5, math.radians(-35))
    lungs = caps * below * (1 - 0.85 * heart)
    other = np.zeros_like(lungs)
    fr.tube(other, smooth_path([(-25, -330), (-10, -130), (2, -50)]), 7, 0.25)
    if an.stomach_bubble:
        fr.blob(other, -20, an.dome_left + 35, 30, 15, 0.6, 3)
    bone = 0.9 * sig((20 - np.abs(x - 108)) / 1.5) * (0.7 + 0.3 * np.cos(y * (2 * np.pi / 30)))
    bone += 0.7 * sig((6 - np.abs(x + 112)) / 1.5) * sig((y + 165) / 3) * sig((40 - y) / 3)
    bone += 0.25 * ribs(x, y, 0.35 * x, -200, 24, 14) * sig((x + 60) / 8) * torso
    vessels = vessel_markings(x - 15, y + 15, noise) * lungs
    return Layers(tissue + 0.15 * heart, lungs, other, bone, vessels, {"right": lungs, "left": lungs})


def _lateral_dome(an: Anatomy, lift: dict[str, float], x: np.ndarray | float) -> np.ndarray | float:
    """Higher hemidiaphragm on a lateral view: high anteriorly, deep posterior costophrenic sulcus."""
    return an.dome_right - 0.5 * (lift["right"] + lift["left"]) + 0.0045 * (x + 40) ** 2


def _sides(f: Finding) -> tuple[str, ...]:
    return ("right", "left") if f.side == "bilateral" else (f.side if f.side in ("right", "left") else "right",)


def _sgn(side: str) -> float:
    return -1.0 if side == "right" else 1.0


@dataclass
class _Ctx:
    fr: Frame
    an: Anatomy
    L: Layers
    lateral: bool
    lift: dict[str, float]
    ctr: float
    noise: np.ndarray
    hi: Frame  # full output resolution: thin devices are drawn here, not on the coarse working grid
    metal: np.ndarray

    def site(self, f: Finding, side: str, radius: float = 0.0) -> tuple[float, float]:
        """Canonical centre for a finding, clamped inside the lung field and clear of heart and diaphragm."""
        if self.lateral:
            cx = float(np.clip(-80 + 170 * f.w, -84 + radius, 94 - radius))
            cy = -115 + f.v * (215 + 40 * f.w)
            cy = min(cy, float(_lateral_dome(self.an, self.lift, cx)) - radius - 6)
            return cx, max(cy, -128 + radius)
        ax = float(np.clip(24 + 112 * f.u, 16 + radius, 144 - radius))
        cy = -115 + 215 * f.v
        heart_edge = (0.62 if side == "left" else 0.38) * self.ctr * _THORAX_W
        if cy > -5:
            ax = max(ax, min(heart_edge + radius + 4, 142 - radius))
        dome = (self.an.dome_right if side == "right" else self.an.dome_left) - self.lift[side]
        cy = min(cy, dome + _DOME_K * (ax - 55) ** 2 - radius - 6)
        apex = _LUNG_Y0 - _LUNG_B * math.sqrt(max(0.0, 1 - ((ax - _LUNG_CX) / _LUNG_A) ** 2))
        return _sgn(side) * ax, max(cy, apex + radius + 4)


def _effusion(c: _Ctx, f: Finding) -> None:
    """Meniscus-shaped basal opacity, higher laterally (posteriorly on a lateral view)."""
    x, y = c.fr.x, c.fr.y
    h = 20 + 100 * f.severity
    if c.lateral:
        h *= 1.2 if f.side == "bilateral" else 1.0
        level = 155 - h * (0.5 + 0.8 * np.clip((x + 90) / 190, 0, 1))
        c.L.opacity += sig((y - level) / 4) * (0.8 + 0.2 * sig((y - level - 20) / 10))
        return
    for side in _sides(f):
        xs = _sgn(side) * x
        cp = (c.an.dome_right if side == "right" else c.an.dome_left) + _DOME_K * 93**2
        level = cp - h - 0.7 * h * np.clip((xs - 12) / 136, 0, 1) ** 2
        c.L.opacity += sig((y - level) / 4) * sig(xs / 2) * (0.85 + 0.15 * sig((y - level - 20) / 10))


def _pneumothorax(c: _Ctx, f: Finding) -> None:
    """Lucent rim without lung markings between the chest wall and a thin visible pleural line."""
    w = 6 + 40 * f.severity
    if c.lateral:
        a = 92 - 0.3 * w
        inner, r = capsule(c.fr.x, c.fr.y, 5, a, 15 + 0.5 * w, 150 - 0.5 * w, 1.0)
        lung = c.L.lungs
    else:
        side = _sides(f)[0]
        a = _LUNG_A - w / 2
        inner, r = capsule(_sgn(side) * c.fr.x, c.fr.y, _LUNG_CX - w / 2, a, _LUNG_Y0 + 0.3 * w, _LUNG_B - 0.7 * w, 1.0)
        lung = c.L.sides[side]
    rim = lung * (1 - inner)
    c.L.lucent += 0.35 * rim
    c.L.vessels *= 1 - rim
    c.L.extra += 0.22 * np.exp(-((((r - 1) * a) / 0.9) ** 2)) * lung
    c.L.opacity += 0.12 * f.severity * inner * lung


def _consolidation(c: _Ctx, f: Finding) -> None:
    """Patchy airspace opacity filling part of a lobe."""
    ra, rb = 22 + 30 * f.severity, 18 + 22 * f.severity
    cx, cy = c.site(f, _sides(f)[0], 0.6 * min(ra, rb))
    sl = c.fr.crop([(cx, cy)], max(ra, rb) + 20)
    if sl is None:
        return
    x = c.fr.x[sl]
    patch = ellipse(x, c.fr.y[sl], cx, cy, ra, rb, 7, f.angle) * np.clip(0.8 + 0.4 * c.noise[sl], 0, 1)
    keep = 1.0 if c.lateral else sig(math.copysign(1, cx) * x / 2)  # stay on the named side
    c.L.opacity[sl] += (0.7 + 0.3 * f.severity) * patch * keep


def _edema(c: _Ctx, f: Finding) -> None:
    """Bilateral perihilar (bat-wing) haze, basal Kerley B lines and engorged vessels."""
    x, y, sev = c.fr.x, c.fr.y, f.severity
    if c.lateral:
        r2 = ((x - 10) / 75) ** 2 + ((y + 10) / 80) ** 2
    else:
        ax = np.abs(x)
        r2 = ((ax - 42) / 62) ** 2 + ((y + 5) / 78) ** 2
        kerley = sig((ax - 126 - 4 * c.noise) / 3) * sig((y - 30) / 6) * sig((130 - y) / 6)
        c.L.opacity += 0.5 * sev * kerley * (0.5 + 0.5 * np.cos(y * (2 * np.pi / 8) + 2 * c.noise)) ** 10
    c.L.opacity += np.exp(-r2) * np.clip(0.75 + 0.3 * c.noise, 0, 1.2) * (0.3 + 0.5 * sev) + 0.1 * sev
    c.L.vessels *= 1 + 0.6 * sev


def _nodule(c: _Ctx, f: Finding) -> None:
    """Round dense spot; masses (> 30 mm) are lobulated."""
    rad = max(f.size_mm, 3.0) / 2
    cx, cy = c.site(f, _sides(f)[0], rad)
    sl = c.fr.crop([(cx, cy)], 1.3 * rad + 3)
    if sl is None:
        return
    dx, dy = c.fr.x[sl] - cx, c.fr.y[sl] - cy
    d = np.hypot(dx, dy)
    if rad > 15:
        theta = np.arctan2(dy, dx)
        rad = rad * (1 + 0.06 * np.cos(3 * theta + f.angle) + 0.05 * np.cos(5 * theta - 2 * f.angle))
    prof = np.sqrt(np.clip(1 - (d / rad) ** 2, 0, 1))
    c.L.opacity[sl] += sig((rad - d) / 0.8) * (0.55 + 0.45 * prof)
    c.L.extra[sl] += 0.1 * prof


def _atelectasis(c: _Ctx, f: Finding) -> None:
    """Plate-like (discoid) band at a base with surrounding haze; the volume-loss lift is applied up front."""
    t, half = 2.0 + 5 * f.severity, 18 + 22 * f.severity
    for side in ("right",) if c.lateral else _sides(f):
        cx, cy = c.site(f, side, t + 4)
        ang = f.angle * (1.0 if c.lateral else _sgn(side))
        sl = c.fr.crop([(cx, cy)], half + 4 * t)
        if sl is not None:
            x, y = c.fr.x[sl], c.fr.y[sl]
            band = ellipse(x, y, cx, cy, half, t, 1.5, ang) * np.clip(0.75 + 0.3 * c.noise[sl], 0, 1)
            haze = (0.15 + 0.35 * f.severity) * ellipse(x, y, cx, cy, 1.2 * half, 3 * t, 6, ang)
            c.L.opacity[sl] += 0.85 * band + haze


def _device_paths(c: _Ctx, f: Finding) -> list[tuple[list[tuple[float, float]], float, float]]:
    """Control polylines (points, half-width mm, density) for one support device."""
    lat, jit = c.lateral, f.v
    if f.kind == "ett":
        tip = -95 - 30 * jit  # 4-7 cm above the carina
        pts = [(-25, -330), (-12, -150), (-6, tip)] if lat else [(2, -330), (0, -150), (0, tip)]
        return [(pts, 1.2, 0.6), (pts, 5.5, 0.12)]
    if f.kind == "cvc":
        tip = -75 + 40 * jit  # SVC to cavoatrial junction
        if lat:
            pts = [(-10, -330), (-25, -180), (-28, tip)]
        elif f.side == "left":
            pts = [(150, -190), (90, -172), (35, -145), (0, -118), (-14, tip)]
        else:
            pts = [(-52, -330), (-42, -200), (-22, -130), (-14, tip)]
        return [(pts, 1.0, 0.55)]
    if f.kind == "enteric":
        base = c.an.dome_left
        pts = (
            [(5, -330), (15, -120), (25, 30), (0, base + 40), (-20, base + 50)]
            if lat
            else [(4, -330), (6, -150), (12, 30), (45, base + 25), (75, base + 40), (60, base + 55)]
        )
        return [(pts, 1.3, 0.45)]
    # pacemaker: generator in the upper chest wall with right atrial and right ventricular leads
    if lat:
        return [([(-100, -140), (-40, -120), (-30, -20), (-45, 50)], 1.1, 0.7), ([(-30, -20), (-62, 62)], 1.1, 0.7)]
    s = _sgn(f.side or "left")
    return [
        ([(s * 100, -140), (s * 60, -150), (s * 20, -130), (-12, -80), (-22, -10), (-25, 25)], 1.1, 0.7),
        ([(-22, -10), (-5, 50), (35, 75)], 1.1, 0.7),
    ]


def _support_device(c: _Ctx, f: Finding) -> None:
    """Thin, very bright tubes and wires; a pacemaker adds a dense generator can."""
    for pts, half_width, amp in _device_paths(c, f):
        c.hi.tube(c.metal, smooth_path(pts), half_width * DEVICE_WIDTH, amp)
    if f.kind == "pacemaker":
        cx, a, b = (-100.0, 7.0, 24.0) if c.lateral else (_sgn(f.side or "left") * 108.0, 25.0, 19.0)
        c.hi.blob(c.metal, cx, -150, a, b, 1.4, 1.0)
        c.hi.blob(c.metal, cx, -152, 0.5 * a, 0.45 * b, 0.4, 1.0)


_DRAW = {
    "pleural_effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "consolidation": _consolidation,
    "edema": _edema,
    "nodule": _nodule,
    "atelectasis": _atelectasis,
    "support_device": _support_device,
}


_WORK_PX = 320  # anatomy and pathology are smooth at this scale; devices and noise get full resolution


def _attenuation(L: Layers) -> np.ndarray:
    """Combine layers into a line-integral-like attenuation map (findings scaled by VISIBILITY)."""
    vis = VISIBILITY
    op = np.clip(vis * L.opacity, 0, 1)
    lung_air = L.lungs * (1 - op) * (1 - 0.35 * np.clip(L.vessels, 0, 1.5)) + vis * L.lucent
    return L.tissue - 0.62 * (lung_air + L.other_air) + 0.3 * L.bone + vis * L.extra


def _expose(att: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Attenuation -> detector image: exposure window, gamma, heel effect and noise."""
    img = 1 - np.exp(-1.6 * np.maximum(att, 0))
    rows, cols = img.shape
    img *= 1 + acq.heel * np.linspace(-1, 1, rows, dtype=np.float32)[:, None]
    img = np.clip((img - acq.black) / (acq.white - acq.black), 0, 1) ** acq.gamma
    img += acq.mottle * smooth_noise(rng, (rows, cols), 32)
    # uniform noise of the same sigma looks identical at this level and is ~4x cheaper than Gaussian draws
    img += (acq.noise * 2 * math.sqrt(3)) * (rng.random((rows, cols), dtype=np.float32) - 0.5)
    if acq.grid_lines:
        period = float(rng.uniform(2.2, 4.0))
        img += acq.grid_lines * np.cos(np.arange(cols, dtype=np.float32) * (2 * np.pi / period))[None, :]
    return np.clip(img, 0, 1).astype(np.float32)


def _context(
    rows: int,
    cols: int,
    spacing_mm: float,
    view: str,
    an: Anatomy,
    findings: Sequence[Finding],
    rng: np.random.Generator | None,
    work_px: int,
) -> _Ctx:
    """Anatomy layers on a working grid of at most ``work_px`` pixels per side, ready for findings."""
    f = max(1.0, max(rows, cols) / work_px)
    wr, wc = max(8, round(rows / f)), max(8, round(cols / f))
    fr = Frame(wr, wc, (spacing_mm * rows / wr, spacing_mm * cols / wc), an)
    noise = smooth_noise(rng, (wr, wc), 20) if rng is not None else np.zeros((wr, wc), np.float32)
    ctr, lift = an.ctr, {"right": 0.0, "left": 0.0}
    for fd in findings:
        if fd.name == "cardiomegaly":
            ctr = max(ctr, 0.52 + 0.2 * fd.severity)
        elif fd.name == "atelectasis":
            for side in _sides(fd):  # volume loss pulls the hemidiaphragm up
                lift[side] = max(lift[side], VISIBILITY * (5 + 12 * fd.severity))
    ctr = an.ctr + (ctr - an.ctr) * VISIBILITY
    if view.upper() == "AP":  # portable films are usually taken in shallower inspiration
        lift = {k: v + 8 for k, v in lift.items()}
    lateral = view.upper() in LATERAL_VIEWS
    if lateral:
        L = _lateral_anatomy(fr, an, ctr, lift, noise)
    else:
        L = _frontal_anatomy(fr, an, ctr, lift, noise, ap=view.upper() == "AP")
    hi = Frame(rows, cols, (spacing_mm, spacing_mm), an) if (wr, wc) != (rows, cols) else fr
    return _Ctx(fr, an, L, lateral, lift, ctr, noise, hi, np.zeros((rows, cols), np.float32))


@overload
def render(
    rows: int,
    cols: int,
    spacing_mm: float,
    *,
    view: str = ...,
    anatomy: Anatomy | None = ...,
    findings: Sequence[Finding] = ...,
    acquisition: Acquisition | None = ...,
    seed: int = ...,
    masks: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def render(
    rows: int,
    cols: int,
    spacing_mm: float,
    *,
    view: str = ...,
    anatomy: Anatomy | None = ...,
    findings: Sequence[Finding] = ...,
    acquisition: Acquisition | None = ...,
    seed: int = ...,
    masks: Literal[True],
) -> tuple[np.ndarray, list[np.ndarray | None]]: ...


def render(
    rows: int,
    cols: int,
    spacing_mm: float,
    *,
    view: str = "PA",
    anatomy: Anatomy | None = None,
    findings: Sequence[Finding] = (),
    acquisition: Acquisition | None = None,
    seed: int = 0,
    masks: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[np.ndarray | None]]:
    """Render one synthetic chest radiograph.

    Args:
        rows: Image height in pixels.
        cols: Image width in pixels.
        spacing_mm: Pixel spacing in mm (isotropic).
        view: "PA", "AP" or a lateral code ("LL", "RL", "LATERAL").
        anatomy: Patient build and positioning; defaults to an average patient.
        findings: Findings to draw; ``cardiomegaly`` enlarges the heart (CTR 0.52-0.72 at VISIBILITY 1).
        acquisition: Exposure and noise settings.
        seed: Seeds texture and noise, so identical arguments give identical pixels.
        masks: Also return where each finding shows (see :func:`_change_mask`); the pixels are the same either way.

    Returns:
        float32 array (rows, cols) in [0, 1], bright = dense; with ``masks``, ``(image, masks)`` where ``masks``
        is aligned with ``findings``: a bool (rows, cols) array per lesion, None for findings without a lesion
        extent (``cardiomegaly``, ``support_device``, unknown names).
    """
    rng = np.random.default_rng(seed)
    ctx = _context(rows, cols, spacing_mm, view, anatomy or Anatomy(), findings, rng, _WORK_PX)
    att = _attenuation(ctx.L) if masks else None
    out: list[np.ndarray | None] = []
    for f in findings:
        draw = _DRAW.get(f.name)
        if draw is not None:
            draw(ctx, f)
        elif f.name != "cardiomegaly":
            logger.warning("phantom: no renderer for finding %r; ignored", f.name)
        if att is not None:  # masks only read the layers, so the image below is unchanged by asking for them
            after = _attenuation(ctx.L)
            out.append(None if draw is None or f.name in _NO_EXTENT else _change_mask(f.name, after - att, rows, cols))
            att = after
    att = upsample(att if att is not None else _attenuation(ctx.L), rows, cols) + VISIBILITY * ctx.metal
    img = _expose(att, acquisition or Acquisition(), rng)
    return (img, out) if masks else img


_NO_EXTENT = ("cardiomegaly", "support_device")  # a heart size and devices are not lesions to ground
# Fraction of a finding's largest attenuation change that counts as part of it. 0.3 keeps a pneumothorax to its
# rim and pleural line (the collapsed lung's slight haze peaks at ~0.25); diffuse edema haze is fainter than its
# perihilar core yet plainly visible, so it gets 0.2.
_MASK_REL = {"edema": 0.2}
_MASK_REL_DEFAULT = 0.3


def _change_mask(name: str, delta: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Pixels where one finding's draw call changed the attenuation by at least ``_MASK_REL`` of its peak change.

    ``delta`` is the attenuation after minus before the call on the working grid, so a lesion hidden under a denser
    one drawn earlier only shows where it is visible. The threshold is relative so a mask keeps its extent when
    ``VISIBILITY`` makes lesions faint. Upsampled like the image (bilinear), then thresholded.
    """
    mag = np.abs(delta)
    peak = float(mag.max())
    mask = np.zeros((rows, cols), bool)
    if peak <= 1e-6:  # drawn off-image, or wholly under a denser finding
        return mask
    thr = _MASK_REL.get(name, _MASK_REL_DEFAULT) * peak
    hot = mag >= thr
    # A bilinear sample never exceeds its sources, so only output pixels with a hot source can pass: upsampling
    # just that window gives the same mask as upsampling the whole grid, at a fraction of the cost.
    (r_out, r0, r1, rw), (c_out, c0, c1, cw) = _taps(hot.any(axis=1), rows), _taps(hot.any(axis=0), cols)
    a = mag[r0] + rw[:, None] * (mag[r1] - mag[r0])
    mask[r_out, c_out] = a[:, c0] + cw[None, :] * (a[:, c1] - a[:, c0]) >= thr
    return mask


def _taps(hot: np.ndarray, n_out: int) -> tuple[slice, np.ndarray, np.ndarray, np.ndarray]:
    """Output window fed by the ``hot`` source pixels of one axis, with its bilinear taps and weights.

    The index arithmetic is :func:`~medclip.synth.cxr.geometry.upsample`'s (pixel-centre alignment).
    """
    n_in = hot.size
    if n_in == n_out:  # ``upsample`` leaves an axis of the same size alone
        i0 = np.arange(n_in)
        w = np.zeros(n_in, np.float32)
    else:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.minimum(pos.astype(np.int64), max(n_in - 2, 0))
        w = (pos - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, n_in - 1)
    fed = np.flatnonzero(hot[i0] | hot[i1])
    lo, hi = int(fed[0]), int(fed[-1]) + 1  # ``hot`` has a True somewhere: the peak
    return slice(lo, hi), i0[lo:hi], i1[lo:hi], w[lo:hi]


def patient_x(rows: int, cols: int, spacing_mm: float, *, anatomy: Anatomy | None = None) -> np.ndarray:
    """Canonical x (mm) of every pixel as ``render`` places the patient: on a frontal view ``x > 0`` is the
    patient's LEFT (image right, shifted and rotated with the patient), so its sign tells the side of a lesion."""
    return Frame(rows, cols, (spacing_mm, spacing_mm), anatomy or Anatomy()).x


def lung_mask(
    rows: int,
    cols: int,
    spacing_mm: float,
    *,
    view: str = "PA",
    anatomy: Anatomy | None = None,
    side: str | None = None,
) -> np.ndarray:
    """Boolean lung-field mask (no findings) for the geometry ``render`` uses; ``side`` picks one lung."""
    ctx = _context(rows, cols, spacing_mm, view, anatomy or Anatomy(), (), None, max(rows, cols))
    return (ctx.L.sides[side] if side else ctx.L.lungs) > 0.5
