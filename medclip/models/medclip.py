"""The MedClip module: image tower + text tower + projection heads + learnable temperature."""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medclip.config import ImageTowerCfg, ModelCfg, PreprocessCfg, TextTowerCfg, init_logit_scale
from medclip.errors import InputError
from medclip.io import storage
from medclip.models.factory import create_image_tower
from medclip.models.image_tower import cells
from medclip.models.text_tower import HFTextTower
from medclip.version import __version__

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "medclip_config.json"
TOKENIZER_DIR = "tokenizer"
HEADS = ("linear", "mlp")


def _not_a_checkpoint(path: str | os.PathLike) -> FileNotFoundError:
    return FileNotFoundError(
        f"{storage.display(path)} is not a medclip checkpoint (no {CONFIG_NAME}){storage.where_missing(path)}; "
        "pass a run's final/ dir"
    )


def local_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder on this machine: a local path (or ``file://`` URL) as it is; a URL (``s3://...``) fetched
    once into the local cache (:func:`medclip.io.storage.fetch`: again only when an object changed).

    Every reader of a checkpoint goes through here, so each accepts a URL. A missing object or bucket is a
    FileNotFoundError naming the URL (without credentials); ``medclip_config.json`` is looked for before anything is
    downloaded, so a wrong folder (a whole run, a bucket) is refused, not copied.
    """
    if not storage.is_url(path):
        return storage.local_path(path)
    if not storage.isfile(storage.join(path, CONFIG_NAME)):
        raise _not_a_checkpoint(path)
    local = storage.fetch(path)
    logger.info("checkpoint %s: local copy %s", storage.display(path), local)
    return local


def checkpoint_sibling(checkpoint: str | os.PathLike, name: str) -> Path | None:
    """A file of the checkpoint's run folder (``config.yaml``, ``metrics.jsonl``) on this machine, fetched when the
    checkpoint is a URL; None when the run has no such file."""
    if not storage.is_url(checkpoint):
        path = storage.local_path(checkpoint).parent / name
        return path if path.is_file() else None
    url = storage.join(os.fspath(checkpoint).rstrip("/").rsplit("/", 1)[0], name)
    return storage.fetch(url) if storage.isfile(url) else None


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The checkpoint's ``medclip_config.json`` (recipe, text policy, ...) without loading weights; ``path`` may be a
    URL (see :func:`local_checkpoint`)."""
    local = local_checkpoint(path)
    if not (local / CONFIG_NAME).is_file():
        raise _not_a_checkpoint(path)
    return json.loads((local / CONFIG_NAME).read_text())


def projection_head(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        hidden = max(in_dim, out_dim)
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
    raise InputError(f"model.head '{kind}' is not one of {HEADS}")


def word_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: the tokens of each text but its first and last ([CLS] and [SEP] of BERT-family tokenizers)."""
    mask = attention_mask.bool()
    last = mask.long().cumsum(1).argmax(1, keepdim=True)  # the last real token of each row
    words = mask.clone()
    words[:, 0] = False
    words.scatter_(1, last, False)
    return words


class MedClip(nn.Module):
    """``forward(image, input_ids, attention_mask) -> {"image_emb", "text_emb", "logit_scale"}`` (embeddings L2-normed).

    ``text_features`` (pooled text-tower output) may replace ``input_ids`` when the text tower is locked and its
    outputs are cached.
    """

    def __init__(self, cfg: ModelCfg, preprocess: PreprocessCfg, *, text_config: dict | None = None) -> None:
        super().__init__()
        self.cfg, self.preprocess = cfg, preprocess
        self.image = create_image_tower(
            cfg.image.name,
            in_chans=preprocess.channels,
            pretrained="" if text_config is not None else cfg.image.pretrained,
            drop_path=cfg.image.drop_path,
            local_stride=cfg.image.local_stride,
        )
        self.text = HFTextTower(
            cfg.text.name,
            pooling=cfg.text.pooling,
            config_dict=text_config,
            length_buckets=cfg.text.length_buckets,
            packing=cfg.text.packing,
            varlen_attention=cfg.text.varlen_attention,
        )
        self.image_proj = projection_head(cfg.head, self.image.output_dim, cfg.embed_dim)
        self.text_proj = projection_head(cfg.head, self.text.output_dim, cfg.embed_dim)
        # Local word-region heads (GLoRIA): region features and token states -> a shared space; absent unless asked,
        # so checkpoints without them keep loading strictly
        self.image_local_proj = self.text_local_proj = None
        if cfg.local_dim > 0:
            self.image_local_proj = nn.Linear(self.image.local_channels, cfg.local_dim)
            self.text_local_proj = nn.Linear(self.text.output_dim, cfg.local_dim)
        self.logit_scale = nn.Parameter(torch.tensor(init_logit_scale(cfg)))
        self.max_log_scale = float(torch.tensor(cfg.max_logit_scale).log())
        # SigLIP's learnable bias; absent otherwise, so checkpoints without it keep loading strictly.
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias))) if cfg.logit_bias else None
        if cfg.image.lock:
            self.image.lock(cfg.image.unlocked_groups)
        if cfg.text.lock:
            self.text.lock(cfg.text.unlocked_layers)

    def encode_image(self, image: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        emb = self.image_proj(self.image(image))  # [B, D]
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text_features(
        self, features: torch.Tensor, *, mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Projected text embeddings from cached tower outputs: pooled [B, H], or token states [B, L, H] with their
        ``mask`` when the tower's pooling trains (``model.text.pooling: attention``)."""
        if mask is not None:
            features = self.text.pool(features, mask)
        emb = self.text_proj(features)  # [B, D]
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, normalize: bool = True):
        return self.encode_text_features(self.text(input_ids, attention_mask), normalize=normalize)

    @property
    def has_local_heads(self) -> bool:
        return self.image_local_proj is not None

    @property
    def caches_text_tokens(self) -> bool:
        """A locked text tower's outputs are cached as token states (not pooled vectors): its pooling trains, or the
        local heads read every word."""
        return self.text.caches_tokens or self.has_local_heads

    def encode_image_local(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One image-tower forward -> ``image_emb`` [B, D] and ``image_regions`` [B, N, Dl], both L2-normed."""
        maps = self.image.forward_maps(image)
        regions = self.image_local_proj(cells(maps.local))  # [B, N, Dl]
        return {
            "image_emb": F.normalize(self.image_proj(maps.pooled), dim=-1),
            "image_regions": F.normalize(regions, dim=-1),
        }

    def encode_text_local(self, states: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token states [B, L, H] + attention mask -> ``text_emb`` [B, D], ``text_tokens`` [B, L, Dl] (L2-normed) and
        ``token_mask`` [B, L]: the words, without the [CLS] / [SEP] ends of each text."""
        emb = F.normalize(self.text_proj(self.text.pool(states, mask)), dim=-1)
        return {
            "text_emb": emb,
            "text_tokens": F.normalize(self.text_local_proj(states), dim=-1),
            "token_mask": word_mask(mask),
        }

    def scale(self) -> torch.Tensor:
        # Clamp like CLIP: the logit scale may not exceed max_logit_scale (100).
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward for both towers (a locked text tower has nothing to recompute)."""
        self.image.set_grad_checkpointing(enable)
        if not self.text.is_locked:
            self.text.set_grad_checkpointing(enable)

    def forward(
        self,
        image: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        text_features: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        return_local: bool = False,
    ) -> dict[str, torch.Tensor]:
        """``return_local`` (models with local heads): also ``image_regions``, ``text_tokens`` and ``token_mask`` for
        :class:`medclip.losses.LocalAlignmentLoss`."""
        if return_local:
            return self._forward_local(image, input_ids, attention_mask, text_features, text_mask)
        if text_features is not None:
            text_emb = self.encode_text_features(text_features, mask=text_mask)
        elif input_ids is not None and attention_mask is not None:
            text_emb = self.encode_text(input_ids, attention_mask)
        else:
            raise ValueError("MedClip.forward needs input_ids + attention_mask or text_features")
        out = {"image_emb": self.encode_image(image), "text_emb": text_emb, "logit_scale": self.scale()}
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out

    def _forward_local(self, image, input_ids, attention_mask, text_features, text_mask) -> dict[str, torch.Tensor]:
        if not self.has_local_heads:
            raise InputError("this model has no local word-region heads (model.local_dim=0); set loss.local_weight>0")
        if text_features is not None:
            if text_mask is None:
                raise ValueError("the local loss needs token states with their mask, not pooled text features")
            states, mask = text_features, text_mask
        elif input_ids is not None and attention_mask is not None:
            states, mask = self.text.token_states(input_ids, attention_mask), attention_mask
        else:
            raise ValueError("MedClip.forward needs input_ids + attention_mask or text_features")
        out = {**self.encode_image_local(image), **self.encode_text_local(states, mask), "logit_scale": self.scale()}
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out

    # -- persistence -------------------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path, *, tokenizer: Any = None, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` + ``medclip_config.json`` (+ ``tokenizer/``): a self-describing directory."""
        from safetensors.torch import save_model

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_model(self, str(out / WEIGHTS_NAME))
        meta = {
            "medclip_version": __version__,
            "model": asdict(self.cfg),
            "preprocess": asdict(self.preprocess),
            "text_config": self.text.encoder.config.to_dict(),
            **(extra or {}),
        }
        (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2, default=str))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
        return out

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | torch.device = "cpu", meta: dict | None = None
    ) -> MedClip:
        """Load a ``save_pretrained`` directory (or its URL, fetched to the local cache); needs no model hub and no
        original tower weights.

        ``meta``: the directory's :func:`read_checkpoint_meta`, when the caller has read it already.
        """
        from safetensors.torch import load_model

        path = local_checkpoint(path)
        meta = copy.deepcopy(meta) if meta is not None else read_checkpoint_meta(path)
        mcfg = meta["model"]
        cfg = ModelCfg(image=ImageTowerCfg(**mcfg.pop("image")), text=TextTowerCfg(**mcfg.pop("text")), **mcfg)
        text_config = dict(meta["text_config"])
        model = cls(cfg, PreprocessCfg(**meta["preprocess"]), text_config=text_config)
        load_model(model, str(path / WEIGHTS_NAME), device=str(device))
        model.meta = meta
        return model.to(device).eval()
