"""2-D image towers: the registry of named towers and the timm adapter.

Every tower is a thin adapter with one interface (``forward -> [B, F]``, ``output_dim``, ``lock()``,
``set_grad_checkpointing()``), like open_clip's ``TimmModel``. Named towers register in :data:`IMAGE_TOWERS`
(:mod:`medclip.models.sketch_tower`, :mod:`medclip.models.volume_tower`); :mod:`medclip.models.factory` builds them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from medclip.errors import InputError, SetupError
from medclip.registry import Registry, did_you_mean

logger = logging.getLogger(__name__)

IMAGE_TOWERS: Registry = Registry("image tower")


class TimmImageTower(nn.Module):
    """Any timm backbone with its classifier removed, built for ``in_chans`` input channels (1 for radiographs)."""

    def __init__(self, name: str, *, in_chans: int = 1, pretrained: str = "", drop_path: float = 0.0) -> None:
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)  # [B, F]

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
