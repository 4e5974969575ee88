"""Hugging Face text tower: an encoder with mean or CLS pooling, lockable LiT-style."""

from __future__ import annotations

import logging

import torch
from torch import nn

from medclip.text.tokenizer import hub_hint, resolve_text_model

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "attention")


class AttentionPool(nn.Module):
    """Learned-query multi-head attention over the token states (a MAP head, as in CoCa / SigLIP), added to the mean.

    With a locked encoder this pooling still trains, so the tower can learn which tokens matter and how words bind
    ("left" in "left foot" vs "right arm") instead of averaging them; the trainer then caches the encoder's token
    states once per unique text, not the pooled vector.
    """

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(hidden.shape[0], -1, -1).to(hidden.dtype)
        out, _ = self.attn(query, hidden, hidden, key_padding_mask=~mask.bool(), need_weights=False)  # [B, 1, H]
        return self.norm(out[:, 0] + mean)


def _without_pooler(build, source):
    # BERT-style encoders carry an unused pooler; dropping it keeps checkpoints lean and every parameter trained.
    try:
        return build(source, add_pooling_layer=False)
    except TypeError:  # encoders without that argument
        return build(source)


class HFTextTower(nn.Module):
    """``forward(input_ids, attention_mask) -> [B, hidden]``.

    Args:
        name: ``minilm`` (packaged), a hub name or a local directory.
        pooling: ``mean`` over non-padding tokens (what sentence-transformers models are trained for), ``cls``, or
            ``attention`` (:class:`AttentionPool`, trainable even when the encoder is locked).
        config_only: build the architecture from its config without loading weights (checkpoint loading does this,
            so a saved model never needs the original weights again).
        length_buckets: encode a batch as this many length-sorted chunks, each padded to its own longest text
            (1: the whole batch padded to its longest).
    """

    def __init__(
        self,
        name: str,
        *,
        pooling: str = "mean",
        config_only: bool = False,
        config_dict: dict | None = None,
        length_buckets: int = 1,
    ):
        super().__init__()
        self.length_buckets = max(1, int(length_buckets))
        from transformers import AutoConfig, AutoModel

        if pooling not in POOLINGS:
            raise ValueError(f"text pooling '{pooling}' is not one of {POOLINGS}")
        self.name, self.pooling = name, pooling
        if config_dict is not None:
            self.encoder = _without_pooler(AutoModel.from_config, AutoConfig.for_model(**config_dict))
        else:
            resolved = resolve_text_model(name)
            try:
                if config_only:
                    self.encoder = _without_pooler(AutoModel.from_config, AutoConfig.from_pretrained(resolved))
                else:
                    self.encoder = _without_pooler(AutoModel.from_pretrained, resolved)
            except OSError as exc:
                raise hub_hint(name, exc) from exc
        self.output_dim = int(self.encoder.config.hidden_size)
        self.attn_pool = AttentionPool(self.output_dim) if pooling == "attention" else None

    @property
    def caches_tokens(self) -> bool:
        """A locked encoder under a trainable pooling: cache its token states, not pooled vectors."""
        return self.attn_pool is not None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.length_buckets > 1 and input_ids.shape[0] >= 2 * self.length_buckets:
            return self._bucketed(input_ids, attention_mask)
        return self._encode(input_ids, attention_mask)

    def _bucketed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Each text's embedding does not depend on the others (padding is masked), so this is exact up to rounding.
        order = attention_mask.sum(1).argsort(stable=True)
        parts = []
        for rows in order.chunk(self.length_buckets):
            mask = attention_mask[rows]
            width = int(mask.any(0).nonzero().max()) + 1  # drop trailing all-padding columns (right padding)
            parts.append(self._encode(input_ids[rows, :width], mask[:, :width]))
        return torch.cat(parts)[order.argsort()]  # [B, H] in the input order

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.token_states(input_ids, attention_mask), attention_mask)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states [B, L, H]."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L, H] token states + [B, L] mask -> [B, H]."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [B, H]
        return self.attn_pool(hidden, attention_mask, mean) if self.attn_pool is not None else mean

    def _layers(self) -> list[nn.Module]:
        encoder = getattr(self.encoder, "encoder", None)
        layers = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
        return list(layers) if layers is not None else []

    def lock(self, unlocked_layers: int = 0) -> None:
        """Freeze the encoder; keep the last ``unlocked_layers`` transformer layers trainable."""
        for p in self.encoder.parameters():
            p.requires_grad = False
        if unlocked_layers:
            layers = self._layers()
            if not layers:
                raise ValueError(f"cannot find transformer layers in {type(self.encoder).__name__} to unlock")
            for layer in layers[-unlocked_layers:]:
                for p in layer.parameters():
                    p.requires_grad = True

    @property
    def is_locked(self) -> bool:
        return not any(p.requires_grad for p in self.encoder.parameters())

    def layer_groups(self) -> list[list[str]]:
        """Parameter names (relative to this tower) grouped embeddings, layer 0 ... layer L-1, the rest."""
        layers = self._layers()
        names = {id(p): n for n, p in self.named_parameters()}
        groups = [[names[id(p)] for p in layer.parameters()] for layer in layers]
        in_layers = {n for g in groups for n in g}
        embeddings = [n for n in names.values() if "embeddings" in n and n not in in_layers]
        rest = [n for n in names.values() if n not in in_layers and n not in embeddings]
        return [embeddings, *groups, *([rest] if rest else [])]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        # Non-reentrant checkpointing: works when the embeddings are frozen (inputs without grad) and keeps RNG.
        kwargs = {"use_reentrant": False}
        if hasattr(self.encoder, "activation_checkpointing_enable"):  # transformers >= 5
            if enable:
                self.encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.encoder.activation_checkpointing_disable()
        elif enable:
            self.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            self.encoder.gradient_checkpointing_disable()
