"""Build an image tower by name: a registered medclip tower (2-D sketch, 3-D CT) or any timm model."""

from __future__ import annotations

from torch import nn

from medclip.errors import InputError

# The tower modules register themselves in IMAGE_TOWERS when imported.
from medclip.models import sketch_tower, volume_tower
from medclip.models.image_tower import IMAGE_TOWERS, TimmImageTower

__all__ = ["create_image_tower", "image_tower_names", "sketch_tower", "volume_tower"]


def image_tower_names() -> list[str]:
    """The registered tower names (any timm model name works besides these)."""
    return IMAGE_TOWERS.list()


def create_image_tower(
    name: str, *, in_chans: int = 1, pretrained: str = "", drop_path: float = 0.0, local_stride: int = 0
) -> nn.Module:
    """A registered medclip tower by name, else any timm model name."""
    if name in IMAGE_TOWERS:
        if local_stride:
            raise InputError(
                f"model.image.local_stride applies to timm CNN towers; '{name}' has a fixed region grid (set it to 0)"
            )
        return IMAGE_TOWERS.get(name)(in_chans=in_chans, pretrained=pretrained, drop_path=drop_path)
    return TimmImageTower(
        name, in_chans=in_chans, pretrained=pretrained, drop_path=drop_path, local_stride=local_stride
    )
