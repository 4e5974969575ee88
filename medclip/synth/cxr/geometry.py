"""Patient geometry and drawing primitives of the chest radiograph phantom (:mod:`medclip.synth.cxr.phantom`).

Soft-edged shapes, curves and noise on a canonical patient frame in millimetres (``x`` to image right, ``y`` down,
origin mid-thorax), the patient's build and positioning in that frame (:class:`Anatomy`), the :class:`Frame` that
maps it onto the pixel grid, and the attenuation :class:`Layers` the anatomy and the findings draw into (numpy only;
the anatomy and findings themselves are drawn in :mod:`medclip.synth.cxr.phantom`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EDGE",
    "Anatomy",
    "Frame",
    "Layers",
    "capsule",
    "ellipse",
    "ribs",
    "sig",
    "smooth_noise",
    "smooth_path",
    "upsample",
    "vessel_markings",
]

EDGE = 2.0  # soft-edge width (mm) of organ boundaries


def sig(t: np.ndarray) -> np.ndarray:
    """Smooth step from 0 to 1 around ``t = 0`` (a logistic of ``2 t``); every soft edge is built from it."""
    return 0.5 + 0.5 * np.tanh(t)


def ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, edge: float = EDGE, angle: float = 0.0
) -> np.ndarray:
    """Soft mask of the ellipse with centre ``(cx, cy)``, semi-axes ``a, b`` and rotation ``angle`` (radians)."""
    dx, dy = x - cx, y - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    r = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
    return sig((1.0 - r) * min(a, b) / edge)


def _seg_dist(x: np.ndarray, y: np.ndarray, p: Sequence[float], q: Sequence[float]) -> np.ndarray:
    dx, dy = q[0] - p[0], q[1] - p[1]
    t = np.clip(((x - p[0]) * dx + (y - p[1]) * dy) / max(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
    return np.hypot(x - p[0] - t * dx, y - p[1] - t * dy)


def smooth_path(pts: Sequence[Sequence[float]], iters: int = 2) -> list[tuple[float, float]]:
    """Chaikin corner cutting so device paths curve smoothly through their control points."""
    p = np.asarray(pts, dtype=float)
    for _ in range(iters):
        q, r = 0.75 * p[:-1] + 0.25 * p[1:], 0.25 * p[:-1] + 0.75 * p[1:]
        p = np.vstack([p[:1], np.column_stack([q, r]).reshape(-1, 2), p[-1:]])
    return [tuple(v) for v in p]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Unit-variance smooth noise with ~``cells`` blobs across the long side.

    White noise on a grid 4x finer than the blobs is Gaussian-filtered in Fourier space and then upsampled
    bilinearly; plain value noise would show the grid as blocky artefacts.
    """
    ch, cw = (max(2, round(cells * n / max(shape))) * 4 for n in shape)
    g = rng.standard_normal((ch, cw), dtype=np.float32)
    f2 = np.fft.fftfreq(ch)[:, None] ** 2 + np.fft.rfftfreq(cw)[None, :] ** 2
    g = np.fft.irfft2(np.fft.rfft2(g) * np.exp(-2 * (np.pi * 2.4) ** 2 * f2), s=(ch, cw)).astype(np.float32)
    out = upsample(g, *shape)
    return out / max(float(out[::4, ::4].std()), 1e-6)


@dataclass(frozen=True)
class Anatomy:
    """Patient build and positioning; distances in canonical mm."""

    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = -10.0
    rotation_deg: float = 0.0
    ctr: float = 0.44  # cardiothoracic ratio when there is no cardiomegaly
    dome_right: float = 66.0  # y of the hemidiaphragm dome peaks; the right one usually sits higher
    dome_left: float = 78.0
    female: bool = False
    stomach_bubble: bool = True


class Frame:
    """Canonical-mm coordinates of every pixel plus the inverse map used to crop local primitives."""

    def __init__(self, rows: int, cols: int, spacing: tuple[float, float], an: Anatomy) -> None:
        th = math.radians(an.rotation_deg)
        self.rows, self.cols, (self.sp_r, self.sp_c), self.an = rows, cols, spacing, an
        self.c, self.s = math.cos(th), math.sin(th)
        px = (np.arange(cols, dtype=np.float32) - (cols - 1) / 2) * self.sp_c - an.shift_x
        py = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2) * self.sp_r - an.shift_y
        self.x = (self.c * px[None, :] + self.s * py[:, None]) / an.scale
        self.y = (-self.s * px[None, :] + self.c * py[:, None]) / an.scale

    def crop(self, pts: Sequence[Sequence[float]], margin: float) -> tuple[slice, slice] | None:
        """Pixel window covering canonical points ``pts`` plus ``margin`` mm, or None when off-image."""
        p = np.asarray(pts, dtype=float).reshape(-1, 2)
        sc = self.an.scale
        col = (sc * (self.c * p[:, 0] - self.s * p[:, 1]) + self.an.shift_x) / self.sp_c + (self.cols - 1) / 2
        row = (sc * (self.s * p[:, 0] + self.c * p[:, 1]) + self.an.shift_y) / self.sp_r + (self.rows - 1) / 2
        mr, mc = margin * sc / self.sp_r + 2, margin * sc / self.sp_c + 2
        r0, r1 = max(0, int(row.min() - mr)), min(self.rows, int(row.max() + mr) + 1)
        c0, c1 = max(0, int(col.min() - mc)), min(self.cols, int(col.max() + mc) + 1)
        return (slice(r0, r1), slice(c0, c1)) if r0 < r1 and c0 < c1 else None

    def tube(self, acc: np.ndarray, pts: Sequence[Sequence[float]], half_width: float, amp: float) -> None:
        """Draw a smooth polyline of constant width into ``acc`` (max-combined so joints do not double up)."""
        for p, q in zip(pts[:-1], pts[1:], strict=True):
            sl = self.crop([p, q], half_width + 3)
            if sl is not None:
                band = amp * sig((half_width - _seg_dist(self.x[sl], self.y[sl], p, q)) / 0.5)
                np.maximum(acc[sl], band, out=acc[sl])

    def blob(
        self,
        acc: np.ndarray,
        cx: float,
        cy: float,
        a: float,
        b: float,
        amp: float,
        edge: float = 1.5,
        angle: float = 0.0,
    ) -> None:
        """Add a soft ellipse locally."""
        sl = self.crop([(cx, cy)], max(a, b) + 3 * edge)
        if sl is not None:
            acc[sl] += amp * ellipse(self.x[sl], self.y[sl], cx, cy, a, b, edge, angle)


@dataclass
class Layers:
    """Attenuation ingredients; ``opacity`` fills lung air (fluid, tissue), ``lucent`` adds free air."""

    tissue: np.ndarray
    lungs: np.ndarray  # lung air fraction; only this air is filled by ``opacity``
    other_air: np.ndarray  # trachea, bronchi, stomach bubble
    bone: np.ndarray
    vessels: np.ndarray
    sides: dict[str, np.ndarray]  # "right"/"left" lung fields (the same array twice on a lateral view)
    opacity: np.ndarray | None = None
    lucent: np.ndarray | None = None
    extra: np.ndarray | None = None  # finding-specific attenuation (pleural line, nodule bulk)

    def __post_init__(self) -> None:
        for name in ("opacity", "lucent", "extra"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros_like(self.lungs))


def capsule(
    xs: np.ndarray, y: np.ndarray, cx: float, a: float, y0: float, b: float, edge: float = EDGE
) -> tuple[np.ndarray, np.ndarray]:
    """Lung-like shape: elliptical apex above ``y0``, straight walls below. Returns (soft mask, radius)."""
    yy = np.minimum(y - y0, 0.0) / b
    r = np.sqrt(((xs - cx) / a) ** 2 + yy**2)
    return sig((1.0 - r) * a / edge), r


def ribs(x: np.ndarray, y: np.ndarray, curve: np.ndarray, start: float, spacing: float, count: float) -> np.ndarray:
    """Periodic curved bands following ``y = curve + k * spacing``; a cheap stand-in for a rib cage."""
    ph = (y - curve - start) / spacing
    frac = ph - np.floor(ph)
    band = sig((0.22 - np.abs(frac - 0.5)) * spacing / 1.3)
    return band * sig((ph - 0.3) * 4) * sig((count - ph) * 4)


def vessel_markings(dx: np.ndarray, dy: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Branching-looking lung markings radiating from a hilum, fading towards the periphery."""
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    coarse = (0.5 + 0.5 * np.cos(17 * theta + 1.8 * noise)) ** 8
    fine = (0.5 + 0.5 * np.cos(41 * theta - 2.6 * noise)) ** 10 * sig((r - 45) / 8)  # branches appear distally
    return (0.7 * coarse + 0.5 * fine) * np.exp(-r / 70) * sig((r - 10) / 4) + 0.6 * np.exp(-((r / 22) ** 2))


def upsample(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Separable bilinear resize with pixel-centre alignment (gathers and elementwise maths only)."""
    for axis, n_out in ((0, rows), (1, cols)):
        n_in = a.shape[axis]
        if n_in == n_out:
            continue
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.minimum(pos.astype(np.int64), max(n_in - 2, 0))
        w = (pos - i0).astype(np.float32)
        w = w[:, None] if axis == 0 else w[None, :]
        lo, hi = np.take(a, i0, axis=axis), np.take(a, np.minimum(i0 + 1, n_in - 1), axis=axis)
        a = lo + w * (hi - lo)
    return a
