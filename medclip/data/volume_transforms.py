"""MONAI pipeline for 3-D CT volumes: load -> canonical orientation -> resample -> HU windows -> crop/pad.

Axis order. The output is float32 ``[C, D, H, W]``: channel ``c`` is ``hu_windows[c]``; D runs inferior -> superior,
H anterior -> posterior and W from the patient's right to their left: an axial slice ``[:, k]`` looks as a
radiologist displays it (patient's left on the image's right), the same axes that
:func:`~medclip.io.volumes.load_series` and :func:`~medclip.io.volumes.load_volume` return for an axial scan.
In nibabel/MONAI terms the spatial axcodes are ``"SPL"``. We reorient to ``"SPL"`` rather than ``"RAS"``: both are
canonical orientations that MONAI computes from the affine, but ``"RAS"`` would give spatial axes (x, y, z) =
(W, H, D) with W and H reversed (higher x index = patient's right), whereas ``PreprocessCfg.volume_shape`` is (D, H,
W) and ``target_spacing`` (z, y, x), which then apply as they are.

Geometry. :class:`LoadVolumed` gives MONAI a ``MetaTensor`` whose affine maps the (D, H, W) voxel index to RAS world
millimetres (MONAI's convention), built from the loaders' LPS ``spacing``/``origin``/``direction``; so volumes stored in any axis order (feet-first,
R-A-S NIfTI, coronal or sagittal slices) end up in the same orientation, and a DICOM series and a NIfTI export of it
give the same array. An oblique volume is turned to its closest axes, not rotated onto them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureTyped, MapTransform, Orientationd, ResizeWithPadOrCropd, Spacingd
from monai.utils import MetaKeys, SpaceKeys

from medclip.config import PreprocessCfg
from medclip.errors import InputError
from medclip.io.volumes import SERIES_TAG, is_nifti, load_series, load_volume, series_files

__all__ = ["AXCODES", "HUWindowsd", "LoadVolumed", "read_volume", "volume_affine", "volume_is_input"]
__all__ += ["volume_transforms"]

AXCODES = "SPL"  # output spatial axes: D -> superior, H -> posterior, W -> patient's left (see module docstring)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def volume_is_input(path: str | PathLike[str]) -> bool:
    """True for what :class:`LoadVolumed` reads: a NIfTI, a series folder or a ``<folder>#series=<uid>`` path.

    A single DICOM file is a 2-D image here (a one-slice "volume" is rarely meant), even though LoadVolumed reads it.
    """
    text = str(path)
    return is_nifti(text) or SERIES_TAG in text or Path(text).is_dir()


def read_volume(path: str | PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """A NIfTI (load_volume) or a series folder / ``folder#series=uid`` / slice file (load_series) -> ([D, H, W], meta).

    Raises:
        ReadError: the loaders' reasons (series_gap, series_duplicate, unreadable, ...), naming the path.
    """
    if is_nifti(path):
        return load_volume(path)
    return load_series(series_files(path))


def volume_affine(meta: Mapping[str, Any]) -> np.ndarray:
    """4x4 affine from the (D, H, W) voxel index to RAS millimetres, from load_series/load_volume meta (LPS)."""
    spacing = np.asarray(meta["spacing"], dtype=np.float64)  # (dz, dy, dx)
    direction = np.asarray(meta["direction"], dtype=np.float64)  # rows: unit vectors of D, H, W in LPS
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ (direction.T * spacing)  # column k: one voxel step along axis k, in RAS
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(meta["origin"], dtype=np.float64)
    return affine


class LoadVolumed(MapTransform):
    """Read a CT volume path into a ``MetaTensor`` [1, D, H, W] float32 in HU, with its RAS affine."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            volume, meta = read_volume(d[key])
            d[key] = MetaTensor(
                torch.from_numpy(volume[None]),  # [1, D, H, W]
                affine=torch.as_tensor(volume_affine(meta), dtype=torch.float64),
                meta={"filename_or_obj": str(d[key]), MetaKeys.SPACE: SpaceKeys.RAS, "hu_spacing": meta["spacing"]},
            )
        return d


class HUWindowsd(MapTransform):
    """[1, ...] HU -> [C, ...] in [0, 1]: channel c clips to ``centre ± width / 2`` of window c and scales linearly."""

    def __init__(self, keys: str | Sequence[str], windows: Sequence[Sequence[float]]) -> None:
        super().__init__(keys)
        self.bounds = [_window_bounds(w) for w in windows]
        if not self.bounds:
            raise InputError("hu_windows is empty; give at least one [centre, width], e.g. [[-600, 1500], [40, 400]]")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            hu = d[key]
            if hu.shape[0] != 1:
                raise ValueError(f"HUWindowsd needs one HU channel, got shape {tuple(hu.shape)} for {key!r}")
            # Plain-tensor arithmetic: MetaTensor re-wraps every intermediate, which costs more than the maths.
            x = hu.as_tensor() if isinstance(hu, MetaTensor) else torch.as_tensor(hu)
            out = torch.cat([((x - lo) / (hi - lo)).clamp_(0.0, 1.0) for lo, hi in self.bounds], dim=0)  # [C, ...]
            d[key] = (
                MetaTensor(out, meta=hu.meta, applied_operations=hu.applied_operations)
                if isinstance(hu, MetaTensor)
                else out
            )
        return d


def _window_bounds(window: Sequence[float]) -> tuple[float, float]:
    if len(window) != 2 or not float(window[1]) > 0:
        raise InputError(f"HU window {list(window)} must be [centre, width] with width > 0, e.g. [40, 400]")
    centre, width = float(window[0]), float(window[1])
    return centre - width / 2, centre + width / 2


def _check_cfg(cfg: PreprocessCfg) -> None:
    if cfg.spatial_dims != 3:
        raise InputError(f"volume_transforms needs preprocess.spatial_dims=3, got {cfg.spatial_dims}")
    if len(cfg.volume_shape) != 3 or any(int(s) < 1 for s in cfg.volume_shape):
        raise InputError(f"preprocess.volume_shape {list(cfg.volume_shape)} must be 3 positive sizes [D, H, W]")
    if len(cfg.target_spacing) != 3 or any(not float(s) > 0 for s in cfg.target_spacing):
        raise InputError(f"preprocess.target_spacing {list(cfg.target_spacing)} must be 3 positive mm [z, y, x]")
    if cfg.channels != len(cfg.hu_windows):
        raise InputError(
            f"preprocess.channels={cfg.channels} but hu_windows has {len(cfg.hu_windows)} windows (one channel "
            f"each); set channels={len(cfg.hu_windows)}"
        )


def volume_transforms(cfg: PreprocessCfg, keys: str | Sequence[str] = "image") -> list:
    """The deterministic (cacheable) dictionary transforms: path -> float32 tensor [C, D, H, W] in [0, 1].

    Load (HU, RAS affine) -> orient to :data:`AXCODES` -> resample to ``target_spacing`` (bilinear, on HU so the
    windows see interpolated HU) -> one channel per ``hu_windows`` entry -> centre crop / zero pad to
    ``volume_shape`` (0 = at or below every window). The result carries no metadata (a plain tensor).
    """
    _check_cfg(cfg)
    return [
        LoadVolumed(keys),
        Orientationd(keys, axcodes=AXCODES, labels=None),  # None: axis labels from the MetaTensor's space (RAS)
        # After AXCODES the spatial axes are (z, y, x), the order target_spacing is written in.
        Spacingd(keys, pixdim=tuple(float(s) for s in cfg.target_spacing), mode="bilinear", dtype=np.float32),
        HUWindowsd(keys, cfg.hu_windows),
        ResizeWithPadOrCropd(keys, spatial_size=tuple(int(s) for s in cfg.volume_shape), mode="constant", value=0),
        EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
