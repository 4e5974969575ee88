"""Image normalisation of the preprocessing recipe: ``(x - mean) / std``, in one place.

The MONAI pipelines (:class:`NormalizeImaged`), the shard reader's whole-batch path and the on-device batch
augmentation (the normalised value of a black pixel) all call :func:`normalize_image`, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

import torch
from monai.transforms import MapTransform

from medclip.config import PreprocessCfg

ArrayT = TypeVar("ArrayT")


def normalize_image(x: ArrayT, cfg: PreprocessCfg, *, scale: float = 1.0, inplace: bool = False) -> ArrayT:
    """``(x * scale - cfg.mean) / cfg.std`` (numpy array, tensor or float), subtract then divide.

    The order matters to the last bit: it is MONAI's ``NormalizeIntensity``'s, so a recipe's images (and a trained
    model's figures) are the same as before this function existed. ``scale`` converts stored units first
    (``1 / SCALE`` for the uint16 shards). ``inplace`` (tensors only) overwrites ``x`` instead of allocating
    temporaries of its size.
    """
    if scale != 1.0:
        x = x.mul_(scale) if inplace and isinstance(x, torch.Tensor) else x * scale
    if inplace and isinstance(x, torch.Tensor):
        return x.sub_(cfg.mean).div_(cfg.std)
    return (x - cfg.mean) / cfg.std


class NormalizeImaged(MapTransform):
    """MONAI dictionary transform applying :func:`normalize_image` with the recipe's mean and std."""

    def __init__(self, keys: str | list[str], cfg: PreprocessCfg) -> None:
        super().__init__(keys)
        self.cfg = cfg

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = normalize_image(d[key], self.cfg)
        return d
