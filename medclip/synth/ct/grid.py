"""The voxel grid of the chest CT phantom: patient-mm coordinates of every voxel and the landmarks derived from
a :class:`~medclip.synth.ct.anatomy.CTAnatomy` (body and thoracic cavity outline, spine, hila, carina, trachea).

The renderer (:mod:`medclip.synth.ct.phantom`) and the findings (:mod:`medclip.synth.ct.findings`) draw through
one :class:`Grid`. Axes as in the phantom: ``[D, H, W]`` = inferior -> superior, anterior -> posterior, patient
right -> left; ``x`` runs to the patient's left, ``y`` posterior, ``z`` superior.
"""

from __future__ import annotations

import numpy as np

from medclip.synth.ct.anatomy import CTAnatomy

__all__ = ["Grid"]


class Grid:
    """Grid coordinates and the derived landmarks shared by every drawing step."""

    def __init__(self, an: CTAnatomy, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        (D, H, W), (dz, dy, dx) = shape, spacing
        self.an, self.shape, self.spacing = an, shape, spacing
        self.z = ((np.arange(D) - (D - 1) / 2) * dz).astype(np.float32)  # [D]
        self.gz = self.z[:, None, None]  # [D, 1, 1]
        self.gy = ((np.arange(H) - (H - 1) / 2) * dy - an.shift_y).astype(np.float32)[:, None]  # [H, 1]
        self.gx = ((np.arange(W) - (W - 1) / 2) * dx - an.shift_x).astype(np.float32)[None, :]  # [1, W]
        # a patient wider than the field of view would be cut at its edges; keep the body inside it
        self.a_b = min(an.width_mm / 2, 0.97 * W * dx / 2 - abs(an.shift_x))
        self.b_b = min(self.a_b * an.ap_ratio, 0.93 * H * dy / 2 - abs(an.shift_y))
        self.s = self.a_b / 150.0  # body-size scale for organs
        wall_a, wall_p = an.fat_mm + an.muscle_mm + 9, an.fat_mm + an.muscle_mm + 9 + 14 * self.s  # paraspinal muscles
        self.a_c, self.b_c = self.a_b - an.fat_mm - an.muscle_mm - 9, self.b_b - (wall_a + wall_p) / 2
        self.yc = (wall_a - wall_p) / 2  # thoracic cavity centre, anterior of the body centre
        gx, gy, a, b, yc = self.gx, self.gy, self.a_c, self.b_c, self.yc
        self.rho_c = (gx / a) ** 2 + ((gy - yc) / b) ** 2  # [H, W] squared cavity radius
        half = np.sqrt(np.clip(1 - (gx / a) ** 2, 0, 1))
        self.y_front, self.y_back = yc - b * half, yc + b * half  # [1, W] cavity walls
        self.w_frac = np.clip((gy - self.y_front) / np.maximum(self.y_back - self.y_front, 1e-3), 0, 1)  # [H, W]
        self.r_v = 16.0 * self.s  # vertebral body radius
        self.y_v = yc + b + 6 - self.r_v
        self.apex, self.dome_r, self.dome_l = an.apex_z, an.dome_right, an.dome_left
        self.z_hilum = self.dome_r + 0.42 * (self.apex - self.dome_r)
        self.z_carina, self.z_arch = self.z_hilum + 18, self.z_hilum + 40
        self.hilum_x, self.hilum_y = 0.28 * a, yc + 0.05 * b
        self.y_trachea = self.y_v - self.r_v - 16 * self.s

    def disk(self, cx: float, cy: float, r: float) -> np.ndarray:
        """[H, W] bool disk, centre in patient mm."""
        return (self.gx - cx) ** 2 + (self.gy - cy) ** 2 < r * r

    def segment(self, p: tuple[float, float], q: tuple[float, float], r: float) -> np.ndarray:
        """[H, W] bool capsule of radius r around the in-plane segment p-q."""
        px, py, qx, qy = *p, *q
        vx, vy = qx - px, qy - py
        t = np.clip(((self.gx - px) * vx + (self.gy - py) * vy) / max(vx * vx + vy * vy, 1e-6), 0, 1)
        return (self.gx - px - t * vx) ** 2 + (self.gy - py - t * vy) ** 2 < r * r

    def zs(self, lo: float, hi: float) -> slice:
        """Slices whose centre lies in [lo, hi) mm."""
        k = np.flatnonzero((self.z >= lo) & (self.z < hi))
        return slice(int(k[0]), int(k[-1]) + 1) if k.size else slice(0, 0)

    def to_index(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patient mm [N, 3] (x, y, z) -> (flat voxel index, inside-grid flag)."""
        (D, H, W), (dz, dy, dx) = self.shape, self.spacing
        j = np.rint((pts[:, 0] + self.an.shift_x) / dx + (W - 1) / 2).astype(np.int64)
        i = np.rint((pts[:, 1] + self.an.shift_y) / dy + (H - 1) / 2).astype(np.int64)
        k = np.rint(pts[:, 2] / dz + (D - 1) / 2).astype(np.int64)
        ok = (k >= 0) & (k < D) & (i >= 0) & (i < H) & (j >= 0) & (j < W)
        return (k * H + i) * W + j, ok

    def mm(self, k: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Voxel indices -> patient mm [N, 3] (x, y, z)."""
        return np.stack([self.gx[0, j], self.gy[i, 0], self.z[k]], axis=1)
