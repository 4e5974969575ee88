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
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    Resized,
    SpatialPadd,
)

from medclip.config import PreprocessCfg


class LoadMedicalImaged(MapTransform):
    """Decode DICOM / PNG / JPEG with :func:`medclip.data.dicom.load_image` into a [1, H, W] float32 array in [0, 1]."""

    def __init__(self, keys: str | list[str], *, window_index: int = 0) -> None:
        super().__init__(keys)
        self.window_index = window_index

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from medclip.data.dicom import load_image

        d = dict(data)
        for key in self.key_iterator(d):
            pixels, _ = load_image(d[key], window_index=self.window_index)
            d[key] = np.ascontiguousarray(pixels[None], dtype=np.float32)  # [1, H, W]
        return d


def deterministic_transforms(cfg: PreprocessCfg, keys: str = "image") -> list:
    return [
        LoadMedicalImaged(keys, window_index=cfg.window_index),
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
    steps = deterministic_transforms(cfg, keys)
    if train:
        steps += random_transforms(cfg, keys)
    steps += [
        NormalizeIntensityd(keys, subtrahend=cfg.mean, divisor=cfg.std),
        EnsureTyped(keys, dtype=np.float32, track_meta=False),
    ]
    return Compose(steps)
