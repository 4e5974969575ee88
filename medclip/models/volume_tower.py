"""3-D image towers for CT volumes ``[B, C, D, H, W]``, built from MONAI networks (``monai.networks.nets``).

Registered in ``IMAGE_TOWERS`` (each ``forward(x) -> [B, output_dim]``):

==================  ============================================================  ==========
name                network                                                       output_dim
==================  ============================================================  ==========
resnet10_3d         MONAI ResNet-10, basic blocks                                 512
resnet10_3d_small   the same at ``widen_factor=0.25`` (the CPU demo's tower)      128
resnet18_3d         MONAI ResNet-18, basic blocks                                 512
resnet50_3d         MONAI ResNet-50, bottleneck blocks                            2048
densenet121_3d      MONAI DenseNet-121 ``features`` + ReLU + global average pool  1024
vit_3d              MONAI ViT, 6 x 384 wide, patch (8, 16, 16), mean of tokens    384
==================  ============================================================  ==========

The CPU demo uses ``resnet10_3d_small``: 0.9 M parameters; on two CPU cores a training step at batch 8 and
``[2, 32, 64, 64]`` runs at roughly 5-25 volumes/s (``resnet18_3d``: about 1.5). The ResNets use MedicalNet's stem
(7^3 convolution with stride 2, where MONAI defaults to stride 1, which costs 8x the compute in every later layer)
and MedicalNet's ``shortcut_type`` / ``bias_downsample`` for their depth, so MedicalNet weights load without
missing keys.

The medclip builder calls a registered tower with ``in_chans``, ``pretrained`` and ``drop_path`` only, so a
registered name always uses its defaults; other sizes (``widen_factor``, ViT ``img_size`` / ``hidden_size``) are
keyword arguments of the entry points and classes here, for code that builds towers directly.

``pretrained`` is a local MONAI/MedicalNet-style state dict (``.pth``/``.pt`` or ``.safetensors``); there are no hub
weights for 3-D towers. ``drop_path`` is ignored: MONAI's networks have no stochastic depth. ``vit_3d`` needs
``einops`` (MONAI imports it lazily and does not install it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medclip.errors import InputError, SetupError
from medclip.models.image_tower import IMAGE_TOWERS, SpatialFeatures

logger = logging.getLogger(__name__)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # MedicalNet files are {"state_dict": ..., "epoch": ...}; a medclip tower's own state dict has a "net." prefix.
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")  # saved from DataParallel
        out[key.removeprefix("net.")] = value
    return out


def _adapt_shapes(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Fit input-channel counts of conv weights in place (like timm's ``adapt_input_conv``); drop other mismatches.

    Returns the adapted and the dropped keys.
    """
    adapted, dropped = [], []
    for key in list(state):
        src, dst = state[key], target.get(key)
        if dst is None or src.shape == dst.shape:
            continue
        same_but_inputs = src.ndim == dst.ndim >= 3 and src.shape[0] == dst.shape[0] and src.shape[2:] == dst.shape[2:]
        if same_but_inputs and src.shape[1] == 1:  # grey-level weights, C input channels: share the filter
            state[key] = src.repeat(1, dst.shape[1], *([1] * (src.ndim - 2))) / dst.shape[1]
            adapted.append(key)
        elif same_but_inputs and dst.shape[1] == 1:
            state[key] = src.sum(dim=1, keepdim=True)
            adapted.append(key)
        else:
            del state[key]
            dropped.append(f"{key} {tuple(src.shape)} -> {tuple(dst.shape)}")
    return adapted, dropped


def load_volume_weights(net: nn.Module, pretrained: str) -> None:
    """Load a local state dict into a MONAI network, non-strictly, logging what did not fit.

    Args:
        net: the MONAI network (the tower's ``net``).
        pretrained: path of a ``.pth``/``.pt``/``.safetensors`` file; ``"module."`` and ``"net."`` prefixes are
            stripped, a MedicalNet ``{"state_dict": ...}`` wrapper is unwrapped.
    """
    if pretrained == "hub":
        raise InputError(
            "there are no hub weights for 3-D towers; download MedicalNet/MONAI weights once and give the file "
            "instead: model.image.pretrained=/path/to/resnet_10_23dataset.pth"
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"3-D image tower weights not found: {path} (give a local .pth/.safetensors file)")
    state = _read_state_dict(path)
    adapted, dropped = _adapt_shapes(state, net.state_dict())
    result = net.load_state_dict(state, strict=False)
    logger.info(
        "loaded %d tensors from %s: %d missing, %d unexpected, %d adapted to in_chans, %d dropped (shape)",
        len(state) - len(result.unexpected_keys),
        path,
        len(result.missing_keys),
        len(result.unexpected_keys),
        len(adapted),
        len(dropped),
    )
    for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys), ("dropped", dropped)):
        if keys:
            logger.warning("%d %s keys loading %s, e.g. %s", len(keys), kind, path, ", ".join(keys[:5]))


class Depth2SafeConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs in fp32 where CPU bf16 autocast computes a wrong weight gradient.

    With torch 2.14's oneDNN, a bf16 Conv3d on the CPU whose input is 2 slices deep and whose kernel spans more than
    one slice (3^3 with padding 1: a ResNet's stage at 1/16 of a 32-slice volume) returns a weight gradient that is
    garbage: it reads memory the kernel never wrote (errors of 1e26-1e36, or the gradient's own size when that memory
    happens to be zero). The input gradient and the forward pass are right; other depths, 2-D convolutions and fp32
    are right. Same family as pytorch/pytorch#169688. Those layers are tiny, so they simply run in fp32.
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.shape[2] == 2
            and self.kernel_size[0] > 1
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") != torch.float32
        ):
            with torch.autocast("cpu", enabled=False):
                return super()._conv_forward(x.float(), weight.float(), None if bias is None else bias.float())
        return super()._conv_forward(x, weight, bias)


def guard_cpu_bf16_conv3d(net: nn.Module) -> nn.Module:
    """Make every ``nn.Conv3d`` in ``net`` a :class:`Depth2SafeConv3d` (same parameters and state-dict keys)."""
    for module in net.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = Depth2SafeConv3d
    return net


class VolumeTower(nn.Module):
    """Shared adapter behaviour: weights, ``lock``, ``layer_groups`` and gradient checkpointing around ``net``.

    Subclasses set ``net`` and ``output_dim``, define ``forward`` (running the checkpointable stages through
    ``_stage``) and ``_group_prefixes``.
    """

    net: nn.Module
    output_dim: int

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    def _init_weights(self, pretrained: str, drop_path: float) -> None:
        guard_cpu_bf16_conv3d(self.net)
        if drop_path:
            logger.warning("drop_path=%s is ignored by %s (MONAI networks have no stochastic depth)", drop_path, self)
        if pretrained:
            load_volume_weights(self.net, pretrained)

    def _stage(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # Recomputing a stage in backward runs its BatchNorms twice, so running statistics take two momentum steps
        # per batch; the gradients are unchanged.
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def _group_prefixes(self) -> list[tuple[str, ...]]:
        """Parameter-name prefixes of each group, stem to head; parameters matching none form a last group."""
        raise NotImplementedError

    def layer_groups(self) -> list[list[str]]:
        """Parameter names (relative to this tower) per layer group, ordered from stem to head."""
        prefixes = self._group_prefixes()
        groups: list[list[str]] = [[] for _ in range(len(prefixes) + 1)]
        for name, _ in self.named_parameters():
            index = next((i for i, group in enumerate(prefixes) if name.startswith(group)), len(prefixes))
            groups[index].append(name)
        return [group for group in groups if group]

    def lock(self, unlocked_groups: int = 0) -> None:
        """Freeze the tower; keep the last ``unlocked_groups`` layer groups trainable."""
        for p in self.parameters():
            p.requires_grad = False
        if unlocked_groups:
            for group in self.layer_groups()[-unlocked_groups:]:
                for name in group:
                    self.get_parameter(name).requires_grad = True

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


class ResNet3DTower(VolumeTower):
    """MONAI ResNet without its classifier: ``forward([B, C, D, H, W]) -> [B, output_dim]`` (global average pool).

    Args:
        depth: 10, 18, 34, 50, 101, 152 or 200.
        in_chans: input channels.
        pretrained: local weights file (see ``load_volume_weights``), or ``""`` for random init.
        drop_path: ignored.
        widen_factor: multiplies every stage width (0.25 gives the CPU demo size).
        shortcut_type, bias_downsample: ``None`` takes MedicalNet's choice for this depth ("A" and bias for 18/34,
            "B" without bias otherwise), which its weights need.
        conv1_stride: stride of the 7^3 stem convolution (MedicalNet: 2).
    """

    _LAYERS = {
        10: [1, 1, 1, 1],
        18: [2, 2, 2, 2],
        34: [3, 4, 6, 3],
        50: [3, 4, 6, 3],
        101: [3, 4, 23, 3],
        152: [3, 8, 36, 3],
        200: [3, 24, 36, 3],
    }

    def __init__(
        self,
        depth: int,
        *,
        in_chans: int = 1,
        pretrained: str = "",
        drop_path: float = 0.0,
        widen_factor: float = 1.0,
        shortcut_type: str | None = None,
        bias_downsample: bool | None = None,
        conv1_stride: int = 2,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        from monai.networks.nets.resnet import ResNet, get_medicalnet_pretrained_resnet_args

        if depth not in self._LAYERS:
            raise InputError(f"ResNet depth {depth} is not one of {sorted(self._LAYERS)}")
        medicalnet_bias, medicalnet_shortcut = get_medicalnet_pretrained_resnet_args(depth)
        self.net = ResNet(
            "basic" if depth < 50 else "bottleneck",
            self._LAYERS[depth],
            [64, 128, 256, 512],
            spatial_dims=3,
            n_input_channels=in_chans,
            conv1_t_stride=conv1_stride,
            shortcut_type=shortcut_type or medicalnet_shortcut,
            bias_downsample=medicalnet_bias if bias_downsample is None else bias_downsample,
            widen_factor=widen_factor,
            feed_forward=False,
        )
        if pool not in ("avg", "avgmax"):
            raise InputError(f"pool '{pool}' is not one of avg, avgmax")
        self.pool = pool
        features = int(self.net.in_planes)  # channels out of layer4 (after widening and block expansion)
        self.local_channels = [m for m in self.net.layer3.modules() if isinstance(m, nn.Conv3d)][-1].out_channels
        self.output_dim = features * (2 if pool == "avgmax" else 1)
        self._init_weights(pretrained, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).pooled

    def forward_maps(self, x: torch.Tensor) -> SpatialFeatures:
        """``local``: layer3's 3-D feature map; ``last``: layer4's (each cell doubled for ``avgmax``: a one-cell
        volume's average and maximum are the cell itself)."""
        net = self.net
        x = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        for layer in (net.layer1, net.layer2, net.layer3):
            x = self._stage(layer, x)
        local = x
        x = self._stage(net.layer4, x)
        if self.pool == "avgmax":  # the max keeps a small focal finding that the average over the volume dilutes
            pooled = torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1)  # [B, 2F]
            return SpatialFeatures(pooled, local, torch.cat([x, x], dim=1))
        return SpatialFeatures(net.avgpool(x).flatten(1), local, x)  # pooled [B, F]

    def _group_prefixes(self) -> list[tuple[str, ...]]:
        return [("net.conv1.", "net.bn1."), *[(f"net.layer{i}.",) for i in range(1, 5)]]


class DenseNet3DTower(VolumeTower):
    """MONAI DenseNet-121 ``features`` + ReLU + global average pool (its classifier is removed).

    Each spatial side must be at least 32 voxels: the stem and three transitions halve it five times.
    """

    def __init__(
        self,
        *,
        in_chans: int = 1,
        pretrained: str = "",
        drop_path: float = 0.0,
        block_config: Sequence[int] = (6, 12, 24, 16),
    ) -> None:
        super().__init__()
        from monai.networks.nets import DenseNet

        self.net = DenseNet(spatial_dims=3, in_channels=in_chans, out_channels=1, block_config=block_config)
        del self.net.class_layers  # out_channels=1 above is a placeholder; we pool the features ourselves
        self.output_dim = int(self.net.features.norm5.num_features)
        self.n_blocks = len(block_config)
        transition = getattr(self.net.features, f"transition{self.n_blocks - 1}", None)
        self.local_channels = int(transition.conv.out_channels) if transition is not None else self.output_dim
        self._init_weights(pretrained, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).pooled

    def forward_maps(self, x: torch.Tensor) -> SpatialFeatures:
        """``local``: the output of the last transition (before the last dense block, twice as fine); ``last``: the
        final features."""
        local = x
        for name, module in self.net.features.named_children():
            x = self._stage(module, x) if name.startswith("denseblock") else module(x)
            if name.startswith("transition"):
                local = x
        x = torch.relu(x)  # as the classifier of MONAI (and torchvision) does after norm5
        return SpatialFeatures(nn.functional.adaptive_avg_pool3d(x, 1).flatten(1), local, x)  # pooled [B, F]

    def _group_prefixes(self) -> list[tuple[str, ...]]:
        stem = ("net.features.conv0.", "net.features.norm0.")
        blocks = [(f"net.features.denseblock{i}.", f"net.features.transition{i}.") for i in range(1, self.n_blocks + 1)]
        return [stem, *blocks]  # norm5 is the last, head-ish group


class ViT3DTower(VolumeTower):
    """MONAI ViT (no class token) -> mean of the normed output tokens.

    The learnable position embedding fixes the input size: volumes must be exactly ``img_size``.

    Args:
        in_chans: input channels.
        pretrained: local weights file (see ``load_volume_weights``), or ``""``.
        drop_path: ignored.
        img_size: ``(D, H, W)`` of the input volumes.
        patch_size: ``(d, h, w)`` of a patch; must divide ``img_size``.
        hidden_size: token width (384 small, 768 base); ``output_dim``.
        num_layers, num_heads: transformer depth and heads (``hidden_size % num_heads == 0``).
        mlp_dim: MLP width, default ``4 * hidden_size``.
    """

    def __init__(
        self,
        *,
        in_chans: int = 1,
        pretrained: str = "",
        drop_path: float = 0.0,
        img_size: Sequence[int] = (32, 64, 64),
        patch_size: Sequence[int] = (8, 16, 16),
        hidden_size: int = 384,
        num_layers: int = 6,
        num_heads: int = 6,
        mlp_dim: int | None = None,
    ) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        try:
            import einops  # noqa: F401  # MONAI's self-attention block needs it; MONAI does not install it
        except ImportError as exc:
            raise SetupError("vit_3d needs einops, which MONAI's ViT imports lazily: pip install einops") from exc
        self.img_size = tuple(int(s) for s in img_size)
        if len(self.img_size) != 3 or any(s % p for s, p in zip(self.img_size, patch_size, strict=True)):
            raise InputError(f"vit_3d img_size {self.img_size} must be 3 sides divisible by patch_size {patch_size}")
        self.net = ViT(
            in_channels=in_chans,
            img_size=self.img_size,
            patch_size=tuple(patch_size),
            hidden_size=hidden_size,
            mlp_dim=mlp_dim or 4 * hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            classification=False,
            spatial_dims=3,
        )
        for block in self.net.blocks:
            # MONAI builds this LayerNorm even without cross-attention; left in, its parameters never get a gradient
            # (DDP would need find_unused_parameters). Its keys in MONAI ViT weights are logged as unexpected.
            block.norm_cross_attn = nn.Identity()
        self.output_dim = self.local_channels = hidden_size
        self.patch_grid = tuple(s // p for s, p in zip(self.img_size, patch_size, strict=True))
        self._init_weights(pretrained, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).pooled

    def forward_maps(self, x: torch.Tensor) -> SpatialFeatures:
        """The normed patch tokens laid on the patch grid serve as both ``local`` and ``last``."""
        if tuple(x.shape[2:]) != self.img_size:
            raise InputError(
                f"vit_3d was built for volumes of {self.img_size}, got {tuple(x.shape[2:])}; resize the volumes "
                f"(preprocessing) or build ViT3DTower(img_size=...)"
            )
        x = self.net.patch_embedding(x)  # [B, N, hidden]
        for block in self.net.blocks:
            x = self._stage(block, x)
        tokens = self.net.norm(x)
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.patch_grid)
        return SpatialFeatures(tokens.mean(dim=1), grid, grid)  # pooled [B, hidden]

    def _group_prefixes(self) -> list[tuple[str, ...]]:
        return [("net.patch_embedding.",), *[(f"net.blocks.{i}.",) for i in range(len(self.net.blocks))]]


@IMAGE_TOWERS.register("resnet10_3d")
def resnet10_3d(
    *, in_chans: int = 1, pretrained: str = "", drop_path: float = 0.0, widen_factor: float = 1.0
) -> ResNet3DTower:
    """MONAI 3-D ResNet-10 (MedicalNet layout), 512 features."""
    return ResNet3DTower(10, in_chans=in_chans, pretrained=pretrained, drop_path=drop_path, widen_factor=widen_factor)


@IMAGE_TOWERS.register("resnet10_3d_small")
def resnet10_3d_small(*, in_chans: int = 1, pretrained: str = "", drop_path: float = 0.0) -> ResNet3DTower:
    """3-D ResNet-10 at a quarter width (128 features): the CPU demo's tower."""
    return ResNet3DTower(10, in_chans=in_chans, pretrained=pretrained, drop_path=drop_path, widen_factor=0.25)


@IMAGE_TOWERS.register("resnet10_3d_small_avgmax")
def resnet10_3d_small_avgmax(*, in_chans: int = 1, pretrained: str = "", drop_path: float = 0.0) -> ResNet3DTower:
    """``resnet10_3d_small`` pooled by average and max concatenated (256 features)."""
    return ResNet3DTower(
        10, in_chans=in_chans, pretrained=pretrained, drop_path=drop_path, widen_factor=0.25, pool="avgmax"
    )


@IMAGE_TOWERS.register("resnet18_3d")
def resnet18_3d(
    *, in_chans: int = 1, pretrained: str = "", drop_path: float = 0.0, widen_factor: float = 1.0
) -> ResNet3DTower:
    """MONAI 3-D ResNet-18 (MedicalNet layout, shortcut "A"), 512 features."""
    return ResNet3DTower(18, in_chans=in_chans, pretrained=pretrained, drop_path=drop_path, widen_factor=widen_factor)


@IMAGE_TOWERS.register("resnet50_3d")
def resnet50_3d(
    *, in_chans: int = 1, pretrained: str = "", drop_path: float = 0.0, widen_factor: float = 1.0
) -> ResNet3DTower:
    """MONAI 3-D ResNet-50 (MedicalNet layout), 2048 features."""
    return ResNet3DTower(50, in_chans=in_chans, pretrained=pretrained, drop_path=drop_path, widen_factor=widen_factor)


@IMAGE_TOWERS.register("densenet121_3d")
def densenet121_3d(*, in_chans: int = 1, pretrained: str = "", drop_path: float = 0.0) -> DenseNet3DTower:
    """MONAI 3-D DenseNet-121, 1024 features; inputs of at least 32 voxels a side."""
    return DenseNet3DTower(in_chans=in_chans, pretrained=pretrained, drop_path=drop_path)


@IMAGE_TOWERS.register("vit_3d")
def vit_3d(
    *,
    in_chans: int = 1,
    pretrained: str = "",
    drop_path: float = 0.0,
    img_size: Sequence[int] = (32, 64, 64),
    hidden_size: int = 384,
) -> ViT3DTower:
    """MONAI 3-D ViT, 6 layers x 6 heads, patch (8, 16, 16); registered for ``(32, 64, 64)`` volumes.

    The medclip builder passes no ``img_size``, so a model configured with ``vit_3d`` needs preprocessing that
    yields exactly ``(32, 64, 64)``; build ``ViT3DTower`` directly for other sizes.
    """
    return ViT3DTower(
        in_chans=in_chans, pretrained=pretrained, drop_path=drop_path, img_size=img_size, hidden_size=hidden_size
    )
