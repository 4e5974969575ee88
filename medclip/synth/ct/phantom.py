"""Procedural chest CT phantom: vectorised numpy rendering of non-contrast chest CT volumes in Hounsfield units.

Volumes are float32 ``[D, H, W]`` on the grid that :mod:`medclip.io.volumes` returns for an axial series: D runs
INFERIOR -> SUPERIOR (slice 0 is the lowest, in the upper abdomen), H anterior -> posterior and W from the patient's
right to left, so each slice reads like a radiological axial image (patient right on image left).

Geometry lives in patient-relative millimetres (``x`` to the patient's left, ``y`` posterior, ``z`` superior; origin
at the centre of the scan range), so one :class:`CTAnatomy` renders consistently at any shape and spacing.
The patient (:mod:`medclip.synth.ct.anatomy`), the voxel grid with its landmarks (:mod:`medclip.synth.ct.grid`)
and the findings (:mod:`medclip.synth.ct.findings`) live in their own modules; this one draws the normal anatomy
and assembles the volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from medclip.errors import InputError
from medclip.registry import did_you_mean
from medclip.synth.ct import findings as ct_findings
from medclip.synth.ct.anatomy import CTAnatomy, sample_anatomy
from medclip.synth.ct.findings import CT_FINDINGS, CTFinding, noise_cells, sample_finding, smooth_noise
from medclip.synth.ct.grid import Grid

__all__ = ["CT_FINDINGS", "CTAnatomy", "CTFinding", "render", "render_ct", "sample_anatomy", "sample_finding"]

_FAT, _MED_FAT, _MUSCLE, _BLOOD, _LIVER, _LUNG = -100.0, -80.0, 50.0, 42.0, 58.0, -860.0


# ------------------------------------------------------------------------------------------------ anatomy
def _wall(c: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(base slice [H, W] with air, table, fat, muscle and mediastinal fat; body mask [H, W])."""
    an, gx, gy = c.an, c.gx, c.gy
    p = np.where(gy > 0, 3.0, 2.0)  # the back flattens against the table

    def superellipse(a: float, b: float) -> np.ndarray:
        return (np.abs(gx / a) ** p + np.abs(gy / b) ** p) < 1

    body = superellipse(c.a_b, c.b_b)
    base = np.full(body.shape, -1000.0, np.float32)
    y_table = c.b_b + 6
    base[(gy > y_table) & (gy < y_table + 9) & (np.abs(gx) < 0.85 * c.a_b)] = -150.0  # carbon-fibre table
    base[(gy >= y_table + 9) & (gy < y_table + 12) & (np.abs(gx) < 0.85 * c.a_b)] = 150.0
    base[body] = _FAT
    base[superellipse(c.a_b - an.fat_mm, c.b_b - an.fat_mm)] = _MUSCLE
    base[c.rho_c < 1] = _MED_FAT
    return base, body


def _diaphragm(c: Grid) -> np.ndarray:
    """[H, W] height of the diaphragm surface: domes mid-hemithorax, deep posterior costophrenic recesses."""
    a, b = c.a_c, c.b_c
    dome = np.where(c.gx < 0, c.dome_r, c.dome_l)
    qx = ((np.abs(c.gx) - 0.45 * a) / (0.55 * a)) ** 2
    yr = (c.gy - (c.yc - 0.05 * b)) / b
    return (dome - 38 * qx - np.where(yr > 0, 70.0, 30.0) * yr**2).astype(np.float32)


def _heart(c: Grid, findings: dict[str, CTFinding]) -> dict[str, np.ndarray]:
    """Normalised squared radius [D, H, W] of the heart ellipsoid and its (fat, effusion) shell limits."""
    an = c.an
    grow = 1.0
    if "cardiomegaly" in findings:
        grow = 1.18 + 0.32 * findings["cardiomegaly"].severity
    rx, ry, rz = 52 * c.s * an.heart_scale * grow, 44 * c.s * an.heart_scale * grow, 48 * c.s * an.heart_scale
    rz *= 1 + 0.4 * (grow - 1)
    hx, hy, hz = 0.13 * c.a_c, c.yc - 0.25 * c.b_c, c.dome_l + 0.75 * rz
    th = math.radians(an.heart_angle_deg)
    u = math.cos(th) * (c.gx - hx) - math.sin(th) * (c.gy - hy)  # long axis towards the left and anterior
    v = math.sin(th) * (c.gx - hx) + math.cos(th) * (c.gy - hy)
    rho = (u / rx) ** 2 + (v / ry) ** 2 + ((c.gz - hz) / rz) ** 2
    r_mean = (rx + ry + rz) / 3
    fat = (1 + 4.5 / r_mean) ** 2
    fluid = 0.0
    if "pericardial_effusion" in findings:
        fluid = 5 + 20 * findings["pericardial_effusion"].severity
    outer = (1 + (4.5 + fluid) / r_mean) ** 2
    return {"rho": rho, "fat": fat, "outer": outer, "top": hz + 0.8 * rz, "centre": (hx, hy, hz), "r": (rx, ry, rz)}


def _lung_space(c: Grid, heart: dict, zd: np.ndarray) -> np.ndarray:
    """[D, H, W] bool: where aerated lung can be, before pleural findings."""
    a, b, gz = c.a_c, c.b_c, c.gz
    z0 = c.apex - 75
    t2 = np.clip(1 - ((c.z - z0) / (c.apex - z0)) ** 2, 0, 1)
    t2[c.z < z0] = 1.0
    side = ((np.abs(c.gx) - 0.5 * a) / (0.62 * a)) ** 2 + ((c.gy - c.yc - 0.1 * b) / (1.05 * b)) ** 2  # apex taper
    w_m = 17 * c.s + 12 * c.s * np.exp(-(((c.z - c.z_arch) / 28) ** 2))  # mediastinal half-width
    med = ((c.gx - 4) ** 2)[None] / (w_m**2)[:, None, None] + (((c.gy - c.yc) / (1.1 * b)) ** 2)[None] < 1
    spine = (((c.gx / (c.r_v + 7)) ** 2 + ((c.gy - c.y_v) / (c.r_v + 9)) ** 2) < 1) | (
        (np.abs(c.gx) < c.r_v + 7) & (c.gy > c.y_v)
    )
    hila = (((np.abs(c.gx) - c.hilum_x) / (16 * c.s)) ** 2 + ((c.gy - c.hilum_y) / (22 * c.s)) ** 2)[None] + (
        (gz - c.z_hilum) / 26
    ) ** 2 < 1
    inside = (c.rho_c < 1) & ~spine
    return (
        (side[None] < t2[:, None, None])
        & inside[None]
        & (gz > zd[None])
        & ~med
        & ~hila
        & (heart["rho"] > heart["outer"])
    )


def _abdomen(c: Grid, vol: np.ndarray, zd: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Liver, spleen and stomach below the diaphragm; returns the liver mask."""
    gx, gy, a, b = c.gx, c.gy, c.a_c, c.b_c
    below = (c.rho_c < 1)[None] & (c.gz < zd[None])
    liver2d = gx < 0.18 * a - 0.3 * (gy - c.yc)  # the left lobe reaches across the midline anteriorly
    stomach2d = ~liver2d & (((gx - 0.45 * a) / (0.32 * a)) ** 2 + ((gy - c.yc + 0.15 * b) / (0.55 * b)) ** 2 < 1)
    spleen2d = ~liver2d & ~stomach2d & (gx > 0.3 * a) & (gy > c.yc)
    organ = np.select([liver2d, stomach2d, spleen2d], [_LIVER, 22.0, 47.0], -20.0).astype(np.float32)  # else bowel
    vol[below] = (organ[None] + 4 * smooth_noise(rng, c.shape, noise_cells(c, 20)))[below]
    if c.an.stomach_gas:  # supine: gas floats anteriorly with a flat air-fluid level
        gas = (stomach2d & (gy < c.yc - 0.25 * b))[None] & below & (c.gz > zd[None] - 35)
        vol[gas] = -1000.0
    return below & liver2d[None]


def _great_vessels(c: Grid, vol: np.ndarray, heart: dict) -> None:
    """Aorta, pulmonary trunk and arteries, SVC, IVC, arch branches, trachea and oesophagus (non-contrast)."""
    s, a, b, yc = c.s, c.a_c, c.b_c, c.yc
    asc, desc = (-0.08 * a, yc - 0.3 * b), (0.2 * a, c.y_v - 0.3 * c.r_v)
    trunk = (0.12 * a, yc - 0.38 * b)
    vol[c.zs(heart["top"] - 25, c.z_arch), c.disk(*asc, 15 * s)] = _BLOOD
    vol[c.zs(-1e9, c.z_arch), c.disk(*desc, 12 * s)] = _BLOOD
    vol[c.zs(c.z_arch - 9, c.z_arch + 9), c.segment(asc, desc, 12 * s)] = _BLOOD
    vol[c.zs(heart["top"] - 20, c.z_hilum + 8), c.disk(*trunk, 14 * s)] = _BLOOD
    for sgn in (-1, 1):
        vol[c.zs(c.z_hilum - 6, c.z_hilum + 10), c.segment(trunk, (sgn * c.hilum_x, c.hilum_y), 9 * s)] = _BLOOD
    hila = c.zs(c.z_hilum - 22, c.z_hilum + 22)
    for sgn in (-1, 1):
        vol[hila, c.disk(sgn * c.hilum_x, c.hilum_y, 12 * s)] = _BLOOD
    vol[c.zs(heart["top"] - 30, 1e9), c.disk(-0.25 * a, yc - 0.22 * b, 9 * s)] = _BLOOD  # SVC
    vol[c.zs(-1e9, heart["centre"][2] - 0.4 * heart["r"][2]), c.disk(-0.15 * a, c.y_v - c.r_v - 12, 11 * s)] = _BLOOD
    for dx, dy in ((-0.12, -0.25), (-0.02, -0.15), (0.08, -0.05)):  # brachiocephalic, carotid, subclavian
        vol[c.zs(c.z_arch + 9, 1e9), c.disk(dx * a, yc + dy * b, 6 * s)] = _BLOOD
    above = c.zs(-1e9, c.apex + 30)
    vol[above, c.disk(10 * s, c.y_v - c.r_v - 2, 6 * s)] = 35.0  # oesophagus
    top = c.zs(c.z_carina, 1e9)
    vol[top, c.disk(0, c.y_trachea, 11.5 * s)] = _MUSCLE
    vol[top, c.disk(0, c.y_trachea, 9 * s)] = -1000.0


def _bones(c: Grid, vol: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Spine (bodies, discs, posterior elements), ribs, costal cartilage, sternum, scapulae, clavicles."""
    gx, gy, s, a, b, yc = c.gx, c.gy, c.s, c.a_c, c.b_c, c.yc
    bone = np.zeros(c.shape, bool)
    period, z0 = 30 * s, float(rng.uniform(0, 30))
    disc = ((c.z - z0) % period) < 6 * s  # [D]
    r2 = gx**2 + (gy - c.y_v) ** 2
    body, cortex = r2 < c.r_v**2, r2 > (c.r_v - 3) ** 2
    y_can = c.y_v + c.r_v + 9 * s
    can2 = gx**2 + (gy - y_can) ** 2
    post = ((can2 < (13 * s) ** 2) & (can2 > (7 * s) ** 2) & (gy > y_can - 3)) | (
        (np.abs(gx) < 4 * s) & (gy > y_can) & (gy < y_can + 22 * s)
    )
    post |= (np.abs(gx) > 10 * s) & (np.abs(gx) < 30 * s) & (np.abs(gy - (y_can - 3)) < 4 * s)  # transverse processes
    spine_val = np.where(cortex, 900.0, 230.0).astype(np.float32)
    vol[:, body] = np.where(disc[:, None], 80.0, spine_val[body][None])
    vol[:, can2 < (7 * s) ** 2] = 20.0
    vol[~disc[:, None, None] & post[None]] = 750.0
    bone[:, body] = ~disc[:, None]
    bone |= ~disc[:, None, None] & post[None]
    # ribs: a band outside the cavity; each rib descends ~80 mm from the spine to its anterior end
    phi = np.arctan2(np.abs(gx) / a, (gy - yc) / b) / np.pi  # 0 posterior .. 1 anterior
    ring = (c.rho_c >= 1) & ((gx / (a + 9)) ** 2 + ((gy - yc) / (b + 9)) ** 2 < 1) & (np.abs(gx) > c.r_v + 10)
    ii, jj = np.nonzero(ring & (phi < 0.93))
    rib = ((c.z[:, None] + 110 * phi[ii, jj][None] ** 1.4 - z0) % (27 * s)) < 9 * s  # [D, n]
    cart = phi[ii, jj] > 0.8
    vol[:, ii, jj] = np.where(rib, np.where(cart, 130.0, 650.0), vol[:, ii, jj])
    bone[:, ii, jj] = rib & ~cart
    outer = (gx / a) ** 2 + ((gy - yc) / b) ** 2
    parts = (
        (c.zs(-1e9, 1e9), (np.abs(gx) < 13 * s) & (gy > yc - b - 14) & (gy < yc - b - 2)),  # sternum
        (c.zs(c.z_hilum - 25, 1e9), (phi > 0.12) & (phi < 0.42) & (outer > 1.2) & (outer < 1.32)),  # scapulae
        (c.zs(c.apex - 25, 1e9), (phi > 0.7) & (phi < 0.9) & (outer > 1.04) & (outer < 1.3)),  # clavicles
    )
    for zs, mask in parts:
        vol[zs, mask] = 600.0
        bone[zs, mask] = True
    return bone


def _airway_tree(c: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(points [N, 3] in patient mm, radii [N]) of both bronchovascular trees, main bronchi to periphery."""
    carina = np.array([0.0, c.y_trachea, c.z_carina])
    pts, rad = [], []
    for sgn in (-1.0, 1.0):
        hilum = np.array([sgn * c.hilum_x, c.hilum_y, c.z_hilum - 5])
        prim = np.array(
            [[0.35, 0, 1], [0.9, -0.3, 0.35], [1, 0.2, -0.1], [0.45, -0.6, -0.7], [0.4, 0.6, -0.75], [0.3, 0.9, 0.3]]
        ) * [sgn, 1, 1]
        start = np.repeat(hilum[None], len(prim), 0)
        d = prim / np.linalg.norm(prim, axis=1, keepdims=True)
        length = np.full(len(prim), 30.0 * c.s)
        r = np.full(len(prim), 6.5 * c.s)
        t = np.linspace(0, 1, 16)
        pts.append(carina + t[:, None] * (hilum - carina))
        rad.append(np.full(16, 6.0 * c.s))
        for _ in range(7):
            n = max(2, int(length.max() / 1.5) + 1)
            tt = np.linspace(0, 1, n)[None, :, None]
            pts.append((start[:, None] + d[:, None] * length[:, None, None] * tt).reshape(-1, 3))
            rad.append(np.repeat(r, n))
            start = np.repeat(start + d * length[:, None], 2, 0)
            out = start - hilum
            out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-6
            d = np.repeat(d, 2, 0) + 0.35 * out + rng.normal(0, 0.45, (len(start), 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            length = np.repeat(length, 2) * rng.uniform(0.65, 0.88, len(start))
            r = np.repeat(r, 2) * 0.75
    return np.concatenate(pts), np.concatenate(rad)


def _fraction(c: Grid, pts: np.ndarray, radius: np.ndarray, step: float = 1.5) -> np.ndarray:
    """Partial-volume fraction [D, H, W] of tubes sampled at ``pts`` every ``step`` mm."""
    idx, ok = c.to_index(pts)
    voxel = float(np.prod(c.spacing))
    f = np.bincount(idx[ok], weights=np.pi * radius[ok] ** 2 * step / voxel, minlength=int(np.prod(c.shape)))
    return np.minimum(f, 1.0).astype(np.float32).reshape(c.shape)


# ----------------------------------------------------------------------------------------------- render
def _blur_hw(v: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 in-plane smoothing: the scanner's point-spread function (edges replicate)."""
    for axis in (1, 2):
        p = np.concatenate([v.take([0], axis), v, v.take([-1], axis)], axis=axis)
        n = v.shape[axis]
        v = 0.5 * v + 0.25 * (p.take(range(0, n), axis) + p.take(range(2, n + 2), axis))
    return v


def _check(findings: Sequence[CTFinding | str], shape: Sequence[int], spacing: Sequence[float]) -> None:
    if len(shape) != 3 or min(int(n) for n in shape) < 8:
        raise InputError(f"shape must be 3 sizes (D, H, W), each >= 8; got {tuple(shape)}")
    if len(spacing) != 3 or not all(float(v) > 0 for v in spacing):
        raise InputError(f"spacing must be 3 positive mm values (dz, dy, dx); got {tuple(spacing)}")
    names = [f.name if isinstance(f, CTFinding) else f for f in findings]
    if len(set(names)) != len(names):
        raise InputError(f"each finding may appear once; got {names}")
    for name in names:
        if name not in CT_FINDINGS:
            raise InputError(
                f"unknown CT finding {name!r};{did_you_mean(str(name), CT_FINDINGS)} "
                f"available: {', '.join(CT_FINDINGS)}"
            )


def render(
    anatomy: CTAnatomy,
    findings: Sequence[CTFinding],
    *,
    shape: Sequence[int] = (48, 96, 96),
    spacing: Sequence[float] = (5.0, 3.6, 3.6),
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one non-contrast chest CT.

    Args:
        anatomy: the patient; see :func:`sample_anatomy`.
        findings: at most one per name; each draws from its own random stream, so adding a finding changes only
            the voxels it affects (for the same ``seed``).
        shape, spacing: (D, H, W) voxels and (dz, dy, dx) mm.
        seed: texture, vessel tree and noise.

    Returns:
        (volume float32 [D, H, W] in HU, masks): bool masks "body", "lung" (aerated lung incl. parenchymal
        findings), "heart", "bone", "liver" and one per finding name (the voxels it changed).
    """
    _check(findings, shape, spacing)
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(v) for v in spacing)
    by_name = {f.name: f for f in findings}
    if "emphysema" in by_name:  # hyperinflation flattens the diaphragm
        drop = 14 * by_name["emphysema"].severity
        anatomy = replace(anatomy, dome_right=anatomy.dome_right - drop, dome_left=anatomy.dome_left - drop)
    c = Grid(anatomy, shape, spacing)
    rng = np.random.default_rng([seed, 0])
    base, body = _wall(c)
    vol = np.repeat(base[None], shape[0], axis=0)
    zd = _diaphragm(c)
    liver = _abdomen(c, vol, zd, rng)
    heart = _heart(c, by_name)
    lung = _lung_space(c, heart, zd)
    masks: dict[str, np.ndarray] = {}
    pleural = ct_findings.pleural(c, lung, by_name, masks)  # removes effusion / pneumothorax space from ``lung``
    dependent = 40 * c.w_frac[None]  # gravity: the posterior (dependent) lung is denser
    paren = _LUNG + dependent + 15 * smooth_noise(rng, shape, noise_cells(c, 25))
    tree, radius = _airway_tree(c, rng)
    normal = rng.normal(0, 1, tree.shape) * (radius[:, None] + 1.5)  # artery runs beside its bronchus
    vessels = _fraction(c, tree + normal, radius)
    bronchi = _fraction(c, tree, 0.6 * radius)
    big = radius > 4.5 * c.s
    central = _fraction(c, tree[big], 0.6 * radius[big]) > 0.5  # main and lobar bronchi
    vol[lung] = (paren + vessels * (_BLOOD - paren))[lung]
    heart_mask, fluid = _paint_heart(c, vol, heart, by_name, masks)
    _great_vessels(c, vol, heart)
    vol[central & ~lung & ~fluid & (c.rho_c < 1)[None]] = -1000.0  # bronchi crossing the hila
    _calcium(c, vol, heart, rng)
    bone = _bones(c, vol, rng)
    ct_findings.parenchymal(c, vol, lung, bronchi, by_name, masks, seed)
    ct_findings.fill_pleural(c, vol, lung, pleural, by_name, masks)
    noise = np.random.default_rng([seed, 2]).standard_normal(shape, dtype=np.float32)
    vol = _blur_hw(vol + noise * np.float32(anatomy.noise_hu / 0.375))  # the blur scales noise std by 0.375
    np.clip(vol, -1024, 3071, out=vol)
    masks |= {"body": np.broadcast_to(body, shape), "lung": lung, "heart": heart_mask, "bone": bone, "liver": liver}
    return vol.astype(np.float32, copy=False), masks


def _paint_heart(
    c: Grid, vol: np.ndarray, heart: dict, by_name: dict[str, CTFinding], masks: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Pericardial space (fluid when there is an effusion), epicardial fat, then the heart; (heart, pericardium)."""
    hrho = np.where((c.rho_c < 1)[None], heart["rho"], np.inf)  # an enlarged heart stays inside the chest
    pericardium = hrho < heart["outer"]
    vol[pericardium] = 10.0
    vol[hrho < heart["fat"]] = -90.0
    heart_mask = hrho < 1
    vol[heart_mask] = _BLOOD
    if "pericardial_effusion" in by_name:
        masks["pericardial_effusion"] = pericardium & (hrho >= heart["fat"])
    if "cardiomegaly" in by_name:
        masks["cardiomegaly"] = heart_mask
    return heart_mask, pericardium


def _calcium(c: Grid, vol: np.ndarray, heart: dict, rng: np.random.Generator) -> None:
    """Calcified plaques along the anterior interventricular groove."""
    n = c.an.coronary_calcium
    if not n:
        return
    hx, hy, hz = heart["centre"]
    rx, ry, rz = heart["r"]
    t = rng.uniform(-0.6, 0.6, n)
    pts = np.stack([hx + 0.3 * rx * t, hy - 0.95 * ry + 3 * t, hz + 0.5 * rz * t], axis=1)
    idx, ok = c.to_index(pts)
    vol.reshape(-1)[idx[ok]] = rng.uniform(350, 900, int(ok.sum()))


def render_ct(
    findings: list,
    rng: np.random.Generator,
    *,
    shape: Sequence[int] = (48, 96, 96),
    spacing: Sequence[float] = (5.0, 3.6, 3.6),
) -> np.ndarray:
    """Render a random patient with ``findings`` (names from :data:`CT_FINDINGS` or :class:`CTFinding` specs).

    Returns a float32 [D, H, W] volume in HU; D runs inferior -> superior (the order ``load_series`` returns),
    H anterior -> posterior, W patient right -> left. The patient and noise are drawn from ``rng`` before the
    findings, so two calls with equally seeded generators differ only where the findings are.
    """
    _check(findings, shape, spacing)
    anatomy = sample_anatomy(rng)
    seed = int(rng.integers(2**63))
    specs = [f if isinstance(f, CTFinding) else sample_finding(f, rng) for f in findings]
    return render(anatomy, specs, shape=shape, spacing=spacing, seed=seed)[0]
