"""Hugging Face text tower: an encoder with mean or CLS pooling, lockable LiT-style."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from medclip.errors import InputError
from medclip.models.dropout import dropout as fast_dropout
from medclip.models.dropout import use_fast_dropout
from medclip.text.tokenizer import hub_hint, resolve_text_model

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "attention")
PACKED_ATTENTION = "medclip_packed"
# Encoders whose position ids count from 0 in each text and whose layers call Hugging Face's AttentionInterface
PACKABLE_MODEL_TYPES = ("bert",)  # BERT, MiniLM, ClinicalBERT, PubMedBERT, BioBERT ...


def packed_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, medclip_packing=None, **kwargs
):
    """SDPA over texts packed end to end into one row ([1, heads, T, d], no padding tokens).

    ``medclip_packing`` (a :class:`PackedText`) lists, per length bucket, a ``[n, Lb]`` gather index into the T
    packed tokens and its ``[n, Lb]`` validity mask: each bucket's texts are padded to the bucket's longest only here,
    inside attention; every other layer (the projections, the MLP, the norms: nearly all of the FLOPs) sees just the
    real tokens. Integer indices only, so nothing here waits for the GPU. Without it (an ordinary padded batch) this
    is Hugging Face's own SDPA attention.
    """
    if medclip_packing is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [T, heads, d]
    if medclip_packing.varlen and _flash_varlen_ok(q):
        return _flash_varlen(q, k, v, medclip_packing, dropout, scaling)[None], None
    outs = []
    for index, valid in medclip_packing.buckets:
        # index_select, not x[index]: its backward is an index_add, several times faster than advanced indexing's
        qb, kb, vb = (x.index_select(0, index.flatten()).unflatten(0, index.shape).transpose(1, 2) for x in (q, k, v))
        ob = _attend(qb, kb, vb, valid[:, None, None, :], dropout, scaling)  # [n, heads, Lb, d]
        outs.append(ob.transpose(1, 2).flatten(0, 1))  # [n * Lb, heads, d]
    return torch.cat(outs).index_select(0, medclip_packing.take)[None], None  # [1, T, heads, d], as HF returns it


def _flash_varlen_ok(q: torch.Tensor) -> bool:
    """Whether FlashAttention's variable-length kernel takes these queries: CUDA on an Ampere or newer GPU, 16-bit,
    head size a multiple of 8 up to 128 (BERT-family: 32-64; larger ones need more shared memory in the backward
    than some Ampere / Ada GPUs have), and flash SDPA neither missing from this build nor switched off."""
    d = q.shape[-1]
    return (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and d % 8 == 0
        and d <= 128
        and torch.backends.cuda.flash_sdp_enabled()
        and torch.backends.cuda.is_flash_attention_available()
        and _compute_capability(q.device.index) >= (8, 0)
    )


@functools.cache
def _compute_capability(index: int | None) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _flash_varlen(q, k, v, plan: PackedText, dropout: float, scale: float | None) -> torch.Tensor:
    """Attention of [T, heads, d] packed tokens within each text, as one FlashAttention variable-length call (the
    kernel behind ``torch.nn.attention.varlen``, which has no dropout): no padding and no gathers, one kernel
    forward and one backward per layer, where the length buckets issue several of each."""
    q, k, v = (x.contiguous() for x in (q, k, v))
    cu, n = plan.offsets, plan.max_len
    return _flash_kernel(q, k, v, cu, cu, n, n, dropout, False, False, scale=scale)[0]  # not causal, no debug mask


_flash_kernel = torch.ops.aten._flash_attention_forward  # differentiable: its backward is FlashAttention's too


def _attend(q, k, v, valid: torch.Tensor, dropout: float, scale: float | None) -> torch.Tensor:
    """Attention of [n, heads, L, d] queries over the keys where ``valid`` ([n, 1, 1, L]) is True, dropout on the
    attention probabilities. On the CPU with dropout, torch's SDPA has no fused kernel and runs this same math with
    ``bernoulli_`` masks; here the masks are :func:`medclip.models.dropout.dropout`'s (about twice as fast)."""
    if dropout == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=valid, dropout_p=dropout, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # [n, heads, L, L]
    scores += torch.zeros(valid.shape, dtype=scores.dtype).masked_fill_(~valid, float("-inf"))  # in place: no copy
    return fast_dropout(scores.softmax(-1), dropout) @ v


AttentionInterface.register(PACKED_ATTENTION, packed_attention)
AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)  # padded batches get SDPA's masks


@dataclass
class PackedText:
    """Where each text's tokens go when a right-padded [B, L] batch is packed into one row of T = sum(lengths).

    ``gather``: [T] flat index of each real token into the [B * L] batch; ``positions``: [T] position within its
    text; ``buckets``: per length-sorted bucket, the [n, Lb] packed-token index of its texts' positions (0 where
    padding) and which are real; ``take``: [T] row of each packed token in the buckets' concatenated [n * Lb] outputs;
    ``offsets``: [B + 1] int32 start of each text in the T tokens, and ``max_len`` the longest, for the variable-length
    kernel, which attention uses instead of the buckets where ``varlen`` is set and the kernel applies.
    """

    gather: torch.Tensor
    positions: torch.Tensor
    buckets: list[tuple[torch.Tensor, torch.Tensor]]
    take: torch.Tensor
    offsets: torch.Tensor
    max_len: int
    varlen: bool = False

    def to(self, device: torch.device) -> PackedText:
        """All index tensors on ``device`` in one host-to-device copy (pinned and asynchronous on CUDA)."""
        if device.type == "cpu":
            return self
        parts = [self.gather, self.positions, self.take, self.offsets, *(t for bucket in self.buckets for t in bucket)]
        flat = torch.cat([t.flatten().long() for t in parts])
        flat = flat.pin_memory() if device.type == "cuda" else flat
        chunks = flat.to(device, non_blocking=True).split([t.numel() for t in parts])
        gather, positions, take, offsets, *rest = (c.view(t.shape) for c, t in zip(chunks, parts, strict=True))
        buckets = [(rest[i], rest[i + 1].bool()) for i in range(0, len(rest), 2)]
        return PackedText(
            gather=gather,
            positions=positions,
            buckets=buckets,
            take=take,
            offsets=offsets.int(),
            max_len=self.max_len,
            varlen=self.varlen,
        )


def packing_plan(lengths: list[int], width: int, buckets: int, *, varlen: bool = False) -> PackedText:
    """The :class:`PackedText` of a right-padded batch of texts of these ``lengths``, padded to ``width`` (CPU)."""
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    starts = lengths_t.cumsum(0) - lengths_t
    row = torch.repeat_interleave(torch.arange(len(lengths)), lengths_t)  # [T]
    positions = torch.arange(int(lengths_t.sum())) - starts[row]
    take = torch.empty_like(positions)
    plan, offset = [], 0
    for rows in lengths_t.argsort(stable=True).chunk(buckets):
        steps = torch.arange(int(lengths_t[rows].max()))
        valid = steps < lengths_t[rows, None]  # [n, Lb]
        index = torch.where(valid, starts[rows, None] + steps, 0)
        take[index[valid]] = offset + valid.flatten().nonzero()[:, 0]
        plan.append((index, valid))
        offset += valid.numel()
    offsets = torch.cat([starts, lengths_t.sum()[None]]).int()
    return PackedText(
        gather=row * width + positions,
        positions=positions,
        buckets=plan,
        take=take,
        offsets=offsets,
        max_len=max(lengths),
        varlen=varlen,
    )


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


def row_extents(attention_mask: torch.Tensor) -> tuple[list[int], list[int]]:
    """Per row: how many tokens are real, and the position after the last real one (one device-to-host copy).

    The two are equal, and non-zero, exactly when the row is right-padded (ones, then zeros): what packing assumes.
    """
    mask = attention_mask.bool().long()
    ends = (mask * torch.arange(1, mask.shape[1] + 1, device=mask.device)).amax(1)
    lengths, ends = torch.stack([mask.sum(1), ends]).tolist()
    return lengths, ends


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
            (1: the whole batch padded to its longest). With ``packing``, the chunks are padded inside attention only.
        packing: encode the texts packed end to end with no padding tokens (:func:`packed_attention`) where the
            encoder allows it (``PACKABLE_MODEL_TYPES``); the same embeddings, less work. Others fall back to padding.
        varlen_attention: with packing, on CUDA in bf16 / fp16, attend with FlashAttention's variable-length kernel
            (one call per layer, no padding) instead of the length buckets; elsewhere the buckets as before.
    """

    def __init__(
        self,
        name: str,
        *,
        pooling: str = "mean",
        config_only: bool = False,
        config_dict: dict | None = None,
        length_buckets: int = 1,
        packing: bool = False,
        varlen_attention: bool = False,
    ):
        super().__init__()
        self.length_buckets, self.varlen_attention = max(1, int(length_buckets)), varlen_attention
        from transformers import AutoConfig, AutoModel

        if pooling not in POOLINGS:
            raise InputError(f"text pooling '{pooling}' is not one of {POOLINGS}")
        self.name, self.pooling = name, pooling
        if config_dict is not None:
            self.encoder = _without_pooler(AutoModel.from_config, AutoConfig.for_model(**config_dict))
        else:
            resolved = resolve_text_model(name)
            try:
                if config_only:
                    self.encoder = _without_pooler(AutoModel.from_config, AutoConfig.from_pretrained(resolved))
                else:
                    # use_kernels=False: recent transformers swap layers for Hugging Face Hub kernels by default,
                    # fetched at run time; medclip never downloads at run time (and trains the layers it loaded)
                    load = functools.partial(AutoModel.from_pretrained, use_kernels=False)
                    self.encoder = _without_pooler(load, resolved)
            except OSError as exc:
                raise hub_hint(name, exc) from exc
        use_fast_dropout(self.encoder)  # the same dropout, cheaper masks on the CPU
        self.output_dim = int(self.encoder.config.hidden_size)
        self.attn_pool = AttentionPool(self.output_dim) if pooling == "attention" else None
        self.packing = packing and self._use_packed_attention()

    def _use_packed_attention(self) -> bool:
        model_type = getattr(self.encoder.config, "model_type", "")
        if int(transformers.__version__.split(".")[0]) < 5:  # before 5.0, BERT's layers bypass AttentionInterface
            logger.info(
                "text packing needs transformers >= 5.0 (found %s); padding each batch instead",
                transformers.__version__,
            )
            return False
        if model_type not in PACKABLE_MODEL_TYPES or not self.encoder._can_set_attn_implementation():
            logger.info("text packing: not supported for model type '%s'; padding each batch instead", model_type)
            return False
        self.encoder.set_attn_implementation(PACKED_ATTENTION)
        return True

    @property
    def caches_tokens(self) -> bool:
        """A locked encoder under a trainable pooling: cache its token states, not pooled vectors."""
        return self.attn_pool is not None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        buckets = self._buckets(input_ids.shape[0])
        if not self.packing and buckets == 1:
            return self._encode(input_ids, attention_mask)
        lengths, ends = row_extents(attention_mask)  # the one wait for the device in this forward
        if self.packing and all(0 < n == e for n, e in zip(lengths, ends, strict=True)):
            return self._packed(input_ids, attention_mask, lengths, buckets)
        if buckets > 1:
            return self._bucketed(input_ids, attention_mask, lengths, ends, buckets)
        return self._encode(input_ids, attention_mask)

    def _buckets(self, batch: int) -> int:
        """Length buckets for a batch of this size: ``length_buckets`` once each holds at least two texts, else 1."""
        return self.length_buckets if batch >= 2 * self.length_buckets else 1

    def _bucketed(self, input_ids, attention_mask, lengths: list[int], ends: list[int], buckets: int) -> torch.Tensor:
        # Each text's embedding does not depend on the others (padding is masked), so this is exact up to rounding.
        order = torch.tensor(lengths).argsort(stable=True)
        parts = []
        for rows in order.chunk(buckets):
            width = max(ends[i] for i in rows.tolist())  # drop trailing all-padding columns (right padding)
            rows = rows.to(input_ids.device, non_blocking=True)
            parts.append(self._encode(input_ids[rows, :width], attention_mask[rows, :width]))
        return torch.cat(parts)[order.argsort().to(input_ids.device, non_blocking=True)]  # [B, H] in the input order

    def _packed(self, input_ids, attention_mask, lengths: list[int], buckets: int) -> torch.Tensor:
        batch, width = input_ids.shape
        plan = packing_plan(lengths, width, buckets, varlen=self.varlen_attention).to(input_ids.device)
        ids = input_ids.flatten().index_select(0, plan.gather)[None]  # [1, T]: the batch's real tokens, text after text
        # A ready-made 4-D mask passes through Hugging Face's mask building untouched (packed_attention ignores it):
        # with none, transformers >= 5.x looks for packed texts in the position ids itself, reading the device
        no_mask = ids.new_ones((1, 1, 1, 1), dtype=torch.bool)
        hidden = self.encoder(
            input_ids=ids,
            attention_mask=no_mask,
            position_ids=plan.positions[None],
            token_type_ids=torch.zeros_like(ids),
            medclip_packing=plan,
        ).last_hidden_state[0]
        padded = hidden.new_zeros(batch * width, hidden.shape[-1]).index_copy(0, plan.gather, hidden)
        return self.pool(padded.view(batch, width, -1), attention_mask)

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
                raise InputError(f"cannot find transformer layers in {type(self.encoder).__name__} to unlock")
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
