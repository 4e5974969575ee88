"""Warm start from trained weights: a medclip directory or an open_clip checkpoint (timm + Hugging Face towers).

Only tensors whose names and shapes match are copied (a 3-channel stem is folded to the model's channel count the
way timm does it); everything else keeps its initialisation, and the counts are logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from medclip.errors import InputError

logger = logging.getLogger(__name__)

# open_clip's TimmModel / HFTextEncoder names -> medclip's (longest prefix first).
OPEN_CLIP_PREFIXES = (
    ("visual.trunk.", "image.trunk."),
    ("visual.head.proj.", "image_proj."),
    ("text.transformer.", "text.encoder."),
    ("text.proj.", "text_proj."),
)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a medclip directory (``final/``, ``checkpoints/step-*``), a ``.safetensors`` or a torch file."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from: {path} not found (give a medclip run dir or an open_clip file)")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise InputError(f"model.init_from: {path} holds no state dict")
    # DDP-trained open_clip checkpoints prefix every name with "module."
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def translate_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename open_clip keys to medclip's; keys of a medclip state dict pass through unchanged."""
    out = {}
    for key, value in state.items():
        for old, new in OPEN_CLIP_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def _fit(name: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    if value.shape == target.shape:
        return value
    if value.ndim == 4 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
        from timm.models import adapt_input_conv

        logger.info("warm start: %s adapted from %d to %d input channels", name, value.shape[1], target.shape[1])
        return adapt_input_conv(target.shape[1], value)
    return None


def load_warm_start(model: nn.Module, path: str | Path) -> dict[str, int]:
    """Copy matching tensors of ``path`` into ``model``; returns counts of loaded / skipped / untouched tensors."""
    state = translate_open_clip(read_state_dict(path))
    own = model.state_dict()
    matched, skipped = {}, []
    for key, value in state.items():
        fitted = _fit(key, value, own[key]) if key in own else None
        if fitted is None:
            skipped.append(key)
        else:
            matched[key] = fitted.to(own[key].dtype)
    if not matched:
        raise InputError(f"model.init_from: no tensor of {path} matches this model's names and shapes")
    model.load_state_dict(matched, strict=False)
    counts = {"loaded": len(matched), "skipped": len(skipped), "untouched": len(own) - len(matched)}
    logger.info(
        "warm start from %s: %d tensors loaded, %d skipped (no match), %d of the model's kept their init",
        path,
        counts["loaded"],
        counts["skipped"],
        counts["untouched"],
    )
    if skipped:
        logger.debug("warm start skipped: %s", ", ".join(skipped[:20]))
    return counts
