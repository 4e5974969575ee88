"""A sketch encoder for body-map drawings: thin strokes on empty paper, where *where* the ink is carries the meaning.

Two properties of such drawings shape the network, unlike a photo or radiograph backbone:

- Strokes are one or two pixels wide and sparse. A stride-4 stem or average pooling dilutes them into the
  background; here every stage keeps full-resolution 3x3 convolutions and downsamples with max pooling, which
  keeps a thin line's peak response.
- Location is the label: the same scribble on the left or the right arm, the front or the back view, means a
  different region. A CNN ending in global average pooling is translation invariant and would have to infer
  position from the padding; the encoder adds normalised x / y coordinate channels to the input (CoordConv, Liu et
  al. 2018) and ends with a small spatial grid flattened into a linear layer instead of global pooling.

The preprocessing recipe for sketches inverts the image (``preprocess.invert``) so ink is bright and padding is
empty paper; augmentation never flips horizontally (it would swap the patient's left and right).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from medclip.errors import InputError
from medclip.models.image_tower import IMAGE_TOWERS, SpatialFeatures


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@IMAGE_TOWERS.register("sketch_cnn")
class SketchEncoder(nn.Module):
    """``forward([B, C, H, W]) -> [B, output_dim]``.

    Args:
        in_chans: input channels (1 for sketches).
        widths: channels of the stages; each stage halves the resolution.
        grid: side of the spatial grid kept before the final linear layer.
        output_dim: feature size handed to the projection head.
    """

    def __init__(
        self,
        *,
        in_chans: int = 1,
        pretrained: str = "",
        drop_path: float = 0.0,
        widths: tuple[int, ...] = (16, 32, 64, 128, 192),
        grid: int = 4,
        output_dim: int = 512,
    ) -> None:
        super().__init__()
        if pretrained:
            raise InputError("sketch_cnn has no pretrained weights; warm-start it from a medclip checkpoint instead")
        del drop_path  # not used by this small network
        chans = [in_chans + 2, *widths]  # + x / y coordinate channels
        self.stages = nn.ModuleList(_stage(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.grid = grid
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * grid * grid, output_dim), nn.ReLU(inplace=True))
        self.output_dim = output_dim
        self.local_channels = widths[-2] if len(widths) > 1 else widths[-1]
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).pooled  # [B, output_dim]

    def forward_maps(self, x: torch.Tensor) -> SpatialFeatures:
        """``forward`` with the second-to-last stage's feature map as ``local``. ``last`` is None: the pooled vector
        is a linear map of the whole grid, not a summary of per-cell features a projection head could score."""
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        x = torch.cat([x, xs, ys], dim=1)
        maps = []
        for stage in self.stages:
            x = checkpoint(stage, x, use_reentrant=False) if self.grad_checkpointing and self.training else stage(x)
            maps.append(x)
        return SpatialFeatures(self.proj(F.adaptive_max_pool2d(x, self.grid)), maps[-2], None)

    def lock(self, unlocked_groups: int = 0) -> None:
        for p in self.parameters():
            p.requires_grad = False
        if unlocked_groups:
            for group in [*self.stages, self.proj][-unlocked_groups:]:
                for p in group.parameters():
                    p.requires_grad = True

    def layer_groups(self) -> list[list[str]]:
        """Parameter names per stage, stem to head (for layer-wise learning-rate decay)."""
        groups = [[f"stages.{i}.{n}" for n, _ in stage.named_parameters()] for i, stage in enumerate(self.stages)]
        return [*groups, [f"proj.{n}" for n, _ in self.proj.named_parameters()]]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
