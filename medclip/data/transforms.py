"""MONAI preprocessing pipelines built from a :class:`PreprocessCfg` recipe.

Deterministic steps (decode, resize, pad) come first so MONAI's ``CacheDataset`` can keep their output in memory;
randomness comes after, only through seedable MONAI transforms. Evaluation uses the same deterministic steps.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    Resized,
    SpatialPadd,
)

from medclip.config import PreprocessCfg
from medclip.data.batch_aug import AUGMENT_MODES
from medclip.data.normalize import NormalizeImaged
from medclip.errors import InputError


class LoadMedicalImaged(MapTransform):
    """Decode DICOM / PNG / JPEG with :func:`medclip.io.dicom.load_image` into a [1, H, W] float32 array in [0, 1]."""

    def __init__(self, keys: str | list[str], *, window_index: int = 0, invert: bool = False) -> None:
        super().__init__(keys)
        self.window_index, self.invert = window_index, invert

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from medclip.io.dicom import load_image

        d = dict(data)
        for key in self.key_iterator(d):
            pixels, _ = load_image(d[key], window_index=self.window_index)
            if self.invert:
                pixels = 1.0 - pixels
            d[key] = np.ascontiguousarray(pixels[None], dtype=np.float32)  # [1, H, W]
        return d


def deterministic_transforms(cfg: PreprocessCfg, keys: str = "image") -> list:
    """Decode -> [C, S, S] in [0, 1] (2-D), or for ``spatial_dims: 3`` the CT volume pipeline -> [C, D, H, W]."""
    if cfg.spatial_dims == 3:
        from medclip.data.volume_transforms import volume_transforms

        return volume_transforms(cfg, keys)
    if cfg.spatial_dims != 2:
        raise InputError(f"preprocess.spatial_dims must be 2 or 3, got {cfg.spatial_dims}")
    return [
        LoadMedicalImaged(keys, window_index=cfg.window_index, invert=cfg.invert),
        # Keep the aspect ratio: scale the longest side to image_size, then pad the short side with black.
        Resized(keys, spatial_size=cfg.image_size, size_mode="longest", mode="area"),
        SpatialPadd(keys, spatial_size=(cfg.image_size, cfg.image_size), mode="constant"),
    ]


def random_transforms(cfg: PreprocessCfg, keys: str = "image") -> list:
    # No RandFlip: a horizontal flip swaps the patient's left and right, which the reports describe.
    size = cfg.image_size
    return [
        RandAffined(
            keys,
            prob=0.8,
            rotate_range=math.radians(cfg.rotate_degrees),
            # One value per spatial axis: a scalar would only scale/shift along the first axis.
            scale_range=(cfg.scale_range, cfg.scale_range),
            translate_range=(cfg.translate_frac * size, cfg.translate_frac * size),
            padding_mode="zeros",
            mode="bilinear",
        ),
        RandAdjustContrastd(keys, prob=0.5, gamma=(1.0 - cfg.contrast_gamma, 1.0 + cfg.contrast_gamma)),
        RandGaussianNoised(keys, prob=0.5, std=cfg.noise_std),
    ]


def build_transforms(cfg: PreprocessCfg, *, train: bool, keys: str = "image") -> Compose:
    """The per-sample pipeline. Training adds the MONAI random transforms only with ``augment: monai``; with
    ``augment: batch`` the trainer augments whole batches (:class:`medclip.data.batch_aug.BatchAugment`), so the
    training and evaluation pipelines are the same."""
    if cfg.augment not in AUGMENT_MODES:
        raise InputError(f"preprocess.augment '{cfg.augment}' is not one of {AUGMENT_MODES}")
    steps = deterministic_transforms(cfg, keys)
    if train and cfg.augment == "monai":
        if cfg.spatial_dims == 3:
            raise InputError("preprocess.augment: monai is 2-D only; use batch (in-plane warps on the device) or none")
        steps += random_transforms(cfg, keys)
    steps += [
        NormalizeImaged(keys, cfg),
        EnsureTyped(keys, dtype=np.float32, track_meta=False),
    ]
    return Compose(steps)
