"""Image towers' spatial features (forward_maps): what the local word-region loss and grounding maps read."""

from __future__ import annotations

import pytest
import torch

from medclip.errors import InputError
from medclip.models.factory import create_image_tower


@pytest.mark.parametrize(
    ("name", "stride", "local_grid", "last_grid"),
    [
        ("resnet10t", 0, (8, 8), (4, 4)),  # the stage before the last: stride 16 (GLoRIA's conv4)
        ("resnet10t", 8, (16, 16), (4, 4)),
        ("resnet10t", 32, (4, 4), (4, 4)),
    ],
)
def test_cnn_regions_come_from_the_stage_of_the_chosen_stride(name, stride, local_grid, last_grid):
    tower = create_image_tower(name, in_chans=1, local_stride=stride).eval()
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        maps = tower.forward_maps(x)
        assert torch.allclose(maps.pooled, tower(x), atol=1e-5)  # the same forward as training's
    assert tuple(maps.local.shape) == (2, tower.local_channels, *local_grid)
    assert tuple(maps.last.shape[2:]) == last_grid


def test_vit_regions_are_its_patch_tokens_without_the_class_token():
    tower = create_image_tower("vit_tiny_patch16_224", in_chans=1).eval()
    with torch.no_grad():
        maps = tower.forward_maps(torch.randn(1, 1, 224, 224))
    assert tuple(maps.local.shape) == (1, tower.local_channels, 14, 14)
    assert tuple(maps.last.shape) == (1, tower.output_dim, 14, 14)


def test_a_stride_the_tower_does_not_have_is_an_input_error():
    with pytest.raises(InputError, match=r"local_stride=12: 'resnet10t' has feature strides \[2, 4, 8, 16, 32\]"):
        create_image_tower("resnet10t", local_stride=12)
    with pytest.raises(InputError, match="applies to timm CNN towers"):
        create_image_tower("sketch_cnn", local_stride=8)
