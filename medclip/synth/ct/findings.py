"""Findings of the chest CT phantom: what each is (:class:`CTFinding`), how it is sampled, and how it is drawn.

Drawing functions work on the renderer's grid (:class:`medclip.synth.ct.grid.Grid`) and change the volume in
place. Each finding draws from its own random stream, so adding one never reshuffles the others.
Lobes follow a simple fissure model: the oblique fissure runs from posterior-superior to anterior-inferior,
the right horizontal fissure separates the middle lobe; placement is given in lung-relative fractions and
snapped to the nearest voxel of the requested lobe that is still aerated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medclip.errors import InputError
from medclip.synth.ct.grid import Grid

__all__ = ["CT_FINDINGS", "LOBES", "SIDED_FINDINGS", "CTFinding", "sample_finding"]

CT_FINDINGS: tuple[str, ...] = (
    "lung_nodule",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "emphysema",
    "pericardial_effusion",
    "cardiomegaly",
)
SIDED_FINDINGS: tuple[str, ...] = ("lung_nodule", "pleural_effusion", "pneumothorax", "consolidation")
LOBES: dict[str, tuple[str, ...]] = {"right": ("upper", "middle", "lower"), "left": ("upper", "lower")}
_LOBE_CODE = {
    ("right", "upper"): 1,
    ("right", "middle"): 2,
    ("right", "lower"): 3,
    ("left", "upper"): 4,
    ("left", "lower"): 5,
}
# (height fraction apex=1, antero-posterior fraction posterior=1) boxes that lie inside each lobe
_LOBE_BOX = {
    "upper": ((0.58, 0.9), (0.1, 0.55)),
    "middle": ((0.12, 0.38), (0.05, 0.3)),
    "lower": ((0.02, 0.3), (0.65, 0.95)),
}
_LOBE_P = {
    "lung_nodule": {"right": [0.45, 0.15, 0.4], "left": [0.55, 0.45]},
    "consolidation": {"right": [0.3, 0.2, 0.5], "left": [0.4, 0.6]},
}


@dataclass(frozen=True)
class CTFinding:
    """One finding to draw.

    ``side``: "left", "right", "bilateral" (effusion only) or "" (central findings). ``severity`` in (0, 1] scales
    effusion/pneumothorax depth, consolidation extent, emphysema fraction, heart enlargement and pericardial
    fluid. ``lobe``/``at`` (height, antero-posterior, medial->lateral fractions) place nodules and consolidation;
    ``kind`` is the nodule type (solid, ground-glass, part-solid) or emphysema type (centrilobular, paraseptal).
    """

    name: str
    side: str = ""
    severity: float = 0.5
    lobe: str = ""
    size_mm: float = 0.0
    kind: str = ""
    at: tuple[float, float, float] = (0.5, 0.5, 0.5)


def sample_finding(name: str, rng: np.random.Generator) -> CTFinding:
    """Draw side, severity, lobe, size and kind for one positive finding."""
    sev = float(rng.uniform(0.08, 1.0))
    if name in ("cardiomegaly", "pericardial_effusion"):
        return CTFinding(name, severity=sev)
    if name == "emphysema":
        return CTFinding(name, severity=sev, kind="paraseptal" if rng.random() < 0.22 else "centrilobular")
    if name == "pleural_effusion":
        return CTFinding(name, str(rng.choice(["left", "right", "bilateral"], p=[0.3, 0.35, 0.35])), sev)
    side = "right" if rng.random() < 0.55 else "left"
    if name == "pneumothorax":
        return CTFinding(name, side, sev)
    if name not in _LOBE_P:
        raise InputError(f"unknown CT finding {name!r}; available: {', '.join(CT_FINDINGS)}")
    lobe = str(rng.choice(LOBES[side], p=_LOBE_P[name][side]))
    (h0, h1), (w0, w1) = _LOBE_BOX[lobe]
    at = (float(rng.uniform(h0, h1)), float(rng.uniform(w0, w1)), float(rng.uniform(0.2, 0.85)))
    if name == "consolidation":
        return CTFinding(name, side, sev, lobe, at=at)
    size = float(round(6 + 24 * rng.beta(1.2, 2.4)))
    kinds, p = (["solid", "ground-glass", "part-solid"], [0.66, 0.17, 0.17]) if 8 <= size <= 20 else (["solid"], [1])
    return CTFinding(name, side, size / 30, lobe, size, str(rng.choice(kinds, p=p)), at)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: Sequence[int]) -> np.ndarray:
    """Unit-variance float32 field with ``cells`` smooth bumps per axis (smoothstep upsampling of a coarse grid)."""
    out = rng.standard_normal([int(c) + 2 for c in cells], dtype=np.float32)
    for axis, n in enumerate(shape):
        pos = np.linspace(0.5, cells[axis] + 0.5, n)
        i0 = np.floor(pos).astype(np.intp)
        f = (pos - i0).astype(np.float32)
        f = (f * f * (3 - 2 * f)).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        out = out.take(i0, axis=axis) * (1 - f) + out.take(i0 + 1, axis=axis) * f
    return out / max(float(out.std()), 1e-6)


def noise_cells(c: Grid, mm: float) -> list[int]:
    """Coarse-grid size giving one bump per ``mm`` along each axis."""
    return [max(2, round(n * sp / mm)) for n, sp in zip(c.shape, c.spacing, strict=True)]


def _stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, 1, CT_FINDINGS.index(name)])


def _half(c: Grid, side: str) -> np.ndarray:
    """[1, 1, W] bool: the patient's ``side`` of the grid."""
    return ((c.gx > 0) if side == "left" else (c.gx < 0))[None]


def _shift(m: np.ndarray, axis: int, step: int) -> np.ndarray:
    """``m`` moved ``step`` voxels along ``axis`` (zeros enter)."""
    out = np.zeros_like(m)
    src = [slice(None)] * m.ndim
    dst = [slice(None)] * m.ndim
    src[axis], dst[axis] = (slice(0, -step), slice(step, None)) if step > 0 else (slice(-step, None), slice(0, step))
    out[tuple(dst)] = m[tuple(src)]
    return out


def _erode(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    for axis in (1, 2):
        out &= _shift(m, axis, 1) & _shift(m, axis, -1)
    return out


def _dilate(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    for axis in (1, 2):
        out |= _shift(m, axis, 1) | _shift(m, axis, -1)
    return out


# ----------------------------------------------------------------------------------------------- pleura
def pleural(c: Grid, lung: np.ndarray, by_name: dict[str, CTFinding], masks: dict[str, np.ndarray]) -> dict:
    """Carve effusion (dependent, posterior) and pneumothorax (non-dependent, anterior) out of ``lung`` in place."""
    out = {}
    for name in ("pleural_effusion", "pneumothorax"):
        if name not in by_name:
            continue
        f, region = by_name[name], np.zeros(c.shape, bool)
        for side in ("left", "right") if f.side == "bilateral" else (f.side,):
            sev = f.severity * (0.8 if f.side == "bilateral" and side == "left" else 1.0)
            space = lung & _half(c, side)
            if name == "pleural_effusion":
                dome = c.dome_l if side == "left" else c.dome_r
                z_bottom, z_top = dome - 70, dome + 20 + 150 * sev
                depth = (10 + 65 * sev) * np.sqrt(np.clip((z_top - c.z) / (z_top - z_bottom), 0, 1))
                region |= space & ((c.y_back - c.gy)[None] < depth[:, None, None])  # fluid layers on the back
            else:
                d0 = 8 + 60 * sev
                shell = (c.gy - c.y_front) < d0  # air rises to the front of a supine chest
                if sev > 0.6:  # large: the lung also falls away from the lateral wall
                    shell |= c.rho_c > (1 - d0 / c.a_c) ** 2
                region |= space & shell[None]
        lung &= ~region
        out[name] = masks[name] = region
    return out


def fill_pleural(
    c: Grid,
    vol: np.ndarray,
    lung: np.ndarray,
    pleural: dict,
    by_name: dict[str, CTFinding],
    masks: dict[str, np.ndarray],
) -> None:
    """Fluid, free air, compressive atelectasis and the visceral pleural line."""
    if "pleural_effusion" in pleural:
        fluid = pleural["pleural_effusion"]
        vol[fluid] = 8.0
        near = (_shift(fluid, 1, -1) | _shift(fluid, 1, -2)) & lung  # lung just anterior of the fluid collapses
        vol[near] = 20 + 0.2 * (vol[near] - 20)
    if "pneumothorax" in pleural:
        air, f = pleural["pneumothorax"], by_name["pneumothorax"]
        vol[air] = -1000.0  # no lung markings
        collapsed = lung & _half(c, f.side)
        vol[collapsed] += 35 * f.severity  # the partly collapsed lung is denser
        edge = _shift(air, 1, 1) & lung
        vol[edge] = 0.55 * vol[edge] + 0.45 * 40.0


# ------------------------------------------------------------------------------------------ parenchyma
def lobes(c: Grid) -> np.ndarray:
    """[D, H, W] int8 lobe codes (1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL) of the thoracic space; mask with the lung."""
    dome = np.where(c.gx < 0, c.dome_r, c.dome_l)[None]  # [1, 1, W]
    h = (c.gz - dome) / (c.apex - dome)  # [D, 1, W] height fraction, apex = 1
    lower = h < c.w_frac[None] - 0.3  # oblique fissure
    right = np.where(lower, 3, np.where(h < 0.42, 2, 1))
    return np.where((c.gx < 0)[None], right, np.where(lower, 5, 4)).astype(np.int8)


def _target(c: Grid, f: CTFinding) -> np.ndarray:
    h, w, u = f.at
    sgn, dome = (-1.0, c.dome_r) if f.side == "right" else (1.0, c.dome_l)
    x = sgn * (0.22 + 0.7 * u) * c.a_c
    half = np.sqrt(max(0.0, 1 - (x / c.a_c) ** 2))
    yf, yb = c.yc - c.b_c * half, c.yc + c.b_c * half
    return np.array([x, yf + w * (yb - yf), dome + h * (c.apex - dome)])


def _snap(c: Grid, f: CTFinding, lung: np.ndarray, lab: np.ndarray) -> np.ndarray | None:
    """Nearest aerated voxel (patient mm) of the finding's lobe to its target, away from the lung edge if possible."""
    cand = lung & (lab == _LOBE_CODE[(f.side, f.lobe)])
    for option in (_erode(cand), cand, lung & _half(c, f.side), lung):
        if option.any():
            pts = c.mm(*np.nonzero(option))
            return pts[int(np.argmin(((pts - _target(c, f)) ** 2).sum(axis=1)))]
    return None


def _dist(c: Grid, p: np.ndarray) -> np.ndarray:
    return np.sqrt((c.gx - p[0]) ** 2 + (c.gy - p[1]) ** 2 + (c.gz - p[2]) ** 2)


def parenchymal(
    c: Grid,
    vol: np.ndarray,
    lung: np.ndarray,
    bronchi: np.ndarray,
    by_name: dict[str, CTFinding],
    masks: dict[str, np.ndarray],
    seed: int,
) -> None:
    """Emphysema, then consolidation, then nodules (a nodule stays visible inside emphysema or pneumonia)."""
    lab = lobes(c) if {"consolidation", "lung_nodule"} & set(by_name) else None
    if "emphysema" in by_name and lung.any():
        f, rng = by_name["emphysema"], _stream(seed, "emphysema")
        n = smooth_noise(rng, c.shape, noise_cells(c, 18))
        dome = np.where(c.gx < 0, c.dome_r, c.dome_l)[None]
        if f.kind == "paraseptal":
            score = n + 3.0 * np.sqrt(c.rho_c)[None]  # subpleural
        else:
            score = n + 1.5 * (c.gz - dome) / (c.apex - dome)  # upper-lobe predominant
        vals = score[lung]
        kth = int((0.94 - 0.36 * f.severity) * (vals.size - 1))  # 6-40 % of the lung is destroyed
        patch = lung & (score > np.partition(vals, kth)[kth])
        vol[lung] -= 20 * f.severity  # overall hyperlucency
        vol[patch] = -990.0  # destroyed lung: no vessels, well below -950 HU even after blur and noise
        masks["emphysema"] = patch
    if "consolidation" in by_name:
        f, rng = by_name["consolidation"], _stream(seed, "consolidation")
        p = _snap(c, f, lung, lab)
        n = smooth_noise(rng, c.shape, noise_cells(c, 30))
        region = np.zeros(c.shape, bool)
        if p is not None:
            lobe = lung & (lab == _LOBE_CODE[(f.side, f.lobe)])
            ball = _dist(c, p) < (22 + 55 * f.severity) * (1 + 0.25 * n)
            region = lobe if f.severity > 0.75 else lobe & ball
            region = region if region.any() else lung & ball
        hu = 30 + 8 * n
        air = np.minimum(1.0, 3 * bronchi)  # air bronchograms: bronchi stay aerated inside the airless lung
        vol[region] = (hu + air * (-950 - hu))[region]
        rim = _dilate(region) & lung & ~region
        vol[rim] = 0.5 * vol[rim] - 175  # ground-glass halo
        masks["consolidation"] = region
    if "lung_nodule" in by_name:
        f = by_name["lung_nodule"]
        p = _snap(c, f, lung, lab)
        region = np.zeros(c.shape, bool)
        if p is not None:
            r = f.size_mm / 2
            d = _dist(c, p)
            frac = np.clip(0.5 + (r - d) / 3.0, 0, 1)  # partial volume over ~one voxel
            hu = {"solid": 35.0, "ground-glass": -480.0}.get(f.kind, np.where(d < 0.45 * r, 30.0, -450.0))
            vol[:] = vol * (1 - frac) + hu * frac
            region = frac > 0.3
        masks["lung_nodule"] = region
