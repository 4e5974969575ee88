"""2-D image towers: the registry of named towers and the timm adapter.

Every tower is a thin adapter with one interface (``forward -> [B, F]``, ``output_dim``, ``lock()``,
``set_grad_checkpointing()``), like open_clip's ``TimmModel``, plus ``forward_maps -> SpatialFeatures`` and
``local_channels`` for grounding: the same forward that also returns the tower's spatial features (CNN feature-map
cells, ViT patch tokens, 3-D patches of the CT towers). Named towers register in :data:`IMAGE_TOWERS`
(:mod:`medclip.models.sketch_tower`, :mod:`medclip.models.volume_tower`); :mod:`medclip.models.factory` builds them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medclip.errors import InputError, SetupError
from medclip.registry import Registry, did_you_mean

logger = logging.getLogger(__name__)

IMAGE_TOWERS: Registry = Registry("image tower")


@dataclass
class SpatialFeatures:
    """One forward of an image tower with its spatial features, channels first (``[B, C, *grid]``, 2-D or 3-D).

    ``pooled`` is exactly what ``forward`` returns. ``last`` holds the cells the pooling summarises (so the projection
    head applied to each cell gives a similarity map for any model). ``local`` holds the finer features a local
    word-region loss aligns: the stage before the last one for CNNs (stride 16, as GLoRIA takes ResNet's conv4),
    the last patch tokens for ViTs.
    """

    pooled: torch.Tensor
    local: torch.Tensor
    last: torch.Tensor | None  # None where the pooled vector is not a per-cell summary (the sketch encoder)


def cells(features: torch.Tensor) -> torch.Tensor:
    """``[B, C, *grid]`` -> ``[B, N, C]``: one row per region."""
    return features.flatten(2).transpose(1, 2)


class TimmImageTower(nn.Module):
    """Any timm backbone with its classifier removed, built for ``in_chans`` input channels (1 for radiographs)."""

    def __init__(
        self, name: str, *, in_chans: int = 1, pretrained: str = "", drop_path: float = 0.0, local_stride: int = 0
    ) -> None:
        super().__init__()
        import timm

        if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
            raise InputError(f"unknown timm model '{name}'.{did_you_mean(name, timm.list_models())}")
        kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
        if drop_path:
            kwargs["drop_path_rate"] = drop_path
        if pretrained and pretrained != "hub":
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"image tower weights not found: {path} (give a local .safetensors/.pth file)")
            # timm adapts the stem to in_chans (sums RGB filters) and drops the classifier for us.
            kwargs["pretrained_cfg_overlay"] = {"file": str(path), "num_classes": 0}
        try:
            self.trunk = timm.create_model(name, pretrained=bool(pretrained), **kwargs)
        except Exception as exc:  # network errors surface from deep inside huggingface_hub
            if pretrained == "hub":
                raise SetupError(
                    f"could not fetch timm weights for '{name}' ({type(exc).__name__}). Offline? Download them once "
                    f"where the network is reachable and set model.image.pretrained=/path/to/model.safetensors"
                ) from exc
            raise
        self.output_dim = int(self.trunk.num_features)
        info = list(self.trunk.feature_info)
        # GLoRIA's local features: the stage before the last when it is finer (CNNs), else the last (ViTs);
        # local_stride picks the stage of that feature stride instead
        if local_stride:
            strides = [int(stage["reduction"]) for stage in info]
            if local_stride not in strides:
                raise InputError(
                    f"model.image.local_stride={local_stride}: '{name}' has feature strides {sorted(set(strides))}; "
                    "pick one of them, or 0 for the default"
                )
            local_index = max(i for i, r in enumerate(strides) if r == local_stride)
        else:
            local_index = (
                len(info) - 2 if len(info) > 1 and info[-2]["reduction"] < info[-1]["reduction"] else len(info) - 1
            )
        self._stages = len(info) - local_index  # forward_intermediates returns the last this many stages
        self.local_channels = int(info[local_index]["num_chs"])
        self.num_prefix_tokens = int(getattr(self.trunk, "num_prefix_tokens", 0) or 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)  # [B, F]

    def forward_maps(self, x: torch.Tensor) -> SpatialFeatures:
        final, stages = self.trunk.forward_intermediates(x, indices=self._stages, norm=True, intermediates_only=False)
        pooled = self.trunk.forward_head(final, pre_logits=True)  # [B, F], as forward
        if final.ndim == 3:  # ViT-style tokens [B, T, F]: drop the class/register tokens, lay the patches on the grid
            grid = stages[-1].shape[-2:]
            last = final[:, self.num_prefix_tokens :].transpose(1, 2).reshape(final.shape[0], final.shape[2], *grid)
        else:
            last = final
        return SpatialFeatures(pooled, stages[0], last)

    def lock(self, unlocked_groups: int = 0) -> None:
        for p in self.trunk.parameters():
            p.requires_grad = False
        if unlocked_groups:
            # timm's group_matcher orders parameter groups from stem to head; unfreeze the last K.
            from timm.models import group_parameters

            groups = group_parameters(self.trunk, self.trunk.group_matcher())
            for group in list(groups.values())[-unlocked_groups:]:
                for pname in group:
                    self.trunk.get_parameter(pname).requires_grad = True

    def layer_groups(self) -> list[list[str]]:
        """Parameter names (relative to this tower) in timm's layer groups, ordered from stem to head."""
        from timm.models import group_parameters

        groups = group_parameters(self.trunk, self.trunk.group_matcher())
        return [[f"trunk.{name}" for name in names] for names in groups.values()]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)
