"""The local word-region loss (GLoRIA): scores against a word-by-word reference, exact under the gradient cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medclip.config import load_config
from medclip.errors import InputError
from medclip.losses import LocalAlignmentLoss, local_loss_from_cfg, local_pair_scores, loss_from_cfg
from medclip.models.medclip import MedClip, word_mask
from medclip.text.tokenizer import load_tokenizer, tokenize
from medclip.train.optim import create_optimizer, create_scheduler
from medclip.train.step import StepParts, autocast_factory, loss_and_grads, set_train_mode

REPORTS = [
    "Small left pleural effusion.",
    "Right lower lobe opacity, possibly pneumonia.",
    "No acute cardiopulmonary process.",
    "Left apical pneumothorax, small.",
    "No acute cardiopulmonary process.",
    "Mild cardiomegaly. No edema.",
    "Nodule in the right upper lobe, 12 mm.",
]


def _reference_score(words, mask, regions, g1, g2) -> float:
    """One (text, image) pair, word by word, as GLoRIA's paper writes it."""
    terms = []
    for w, keep in zip(words, mask, strict=True):
        if not keep:
            continue
        attn = [math.exp(g1 * float(w @ r)) for r in regions]
        context = sum(a / sum(attn) * r for a, r in zip(attn, regions, strict=True))
        terms.append(math.exp(g2 * float(F.cosine_similarity(w, context, dim=0))))
    return math.log(sum(terms)) / g2 if terms else 0.0


def test_pair_scores_match_a_word_by_word_reference():
    g = torch.Generator().manual_seed(0)
    words = F.normalize(torch.randn(3, 5, 8, generator=g), dim=-1)
    regions = F.normalize(torch.randn(4, 6, 8, generator=g), dim=-1)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    got = local_pair_scores(words, mask, regions, attention_temperature=4.0, word_temperature=5.0, chunk=3)
    assert got.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert float(got[i, j]) == pytest.approx(
                _reference_score(words[i], mask[i], regions[j], 4.0, 5.0), abs=1e-5
            )
    assert torch.all(got[2] == 0)  # a text without words scores nothing


def test_loss_prefers_matching_pairs_and_counts_duplicate_texts_as_positives():
    g = torch.Generator().manual_seed(1)
    regions = F.normalize(torch.randn(4, 9, 16, generator=g), dim=-1)
    # each text's words are copies of regions of its own image: the matching pairs score highest
    words = regions[:, :4].clone()
    mask = torch.ones(4, 4, dtype=torch.bool)
    loss = LocalAlignmentLoss()
    aligned = loss(regions, words, mask)
    shuffled = loss(regions, words[[1, 2, 3, 0]], mask)
    assert float(aligned) < float(shuffled)
    # rows 0 and 1 carry the same report: with duplicate positives, swapping their images costs less than without
    keys = torch.tensor([7, 7, 1, 2])
    swap = regions[[1, 0, 2, 3]]
    with_keys = float(loss(swap, words, mask, text_keys=keys)) - float(loss(regions, words, mask, text_keys=keys))
    without = float(loss(swap, words, mask)) - float(aligned)
    assert 0 <= with_keys < without
    assert float(
        LocalAlignmentLoss(duplicate_texts_positive=False)(swap, words, mask, text_keys=keys)
    ) == pytest.approx(float(loss(swap, words, mask)))


def test_word_mask_drops_the_special_tokens_of_each_text():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    assert word_mask(mask).tolist() == [
        [False, True, True, False, False],
        [False, True, False, False, False],
        [False, False, False, False, False],
    ]


def test_bad_temperatures_and_missing_heads_are_input_errors():
    with pytest.raises(InputError, match="local_scale"):
        LocalAlignmentLoss(scale=0)
    cfg = load_config("tiny")
    assert local_loss_from_cfg(cfg.loss) is None
    model = MedClip(cfg.model, cfg.preprocess)
    with pytest.raises(InputError, match="local_dim"):
        model(
            torch.zeros(1, 1, 64, 64),
            text_features=torch.zeros(1, 3, 384),
            text_mask=torch.ones(1, 3),
            return_local=True,
        )


def _parts(overrides: list[str], micro: int) -> StepParts:
    cfg = load_config("tiny", ["loss.local_weight=1.0", "model.local_dim=32", *overrides])
    torch.manual_seed(0)
    model = MedClip(cfg.model, cfg.preprocess)
    opt = create_optimizer(model, cfg.optim)
    return StepParts(
        model=model,
        forward_model=model,
        loss_fn=loss_from_cfg(cfg.loss),
        optimizer=opt,
        scheduler=create_scheduler(opt, cfg.optim, 10),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        autocast=autocast_factory(torch.device("cpu"), "fp32"),
        micro_batch=micro,
        local_loss=local_loss_from_cfg(cfg.loss),
        local_weight=cfg.loss.local_weight,
    )


@pytest.mark.parametrize("micro", [3, 4])
def test_gradient_cache_gives_the_full_batch_gradients_with_the_local_loss(micro):
    # ConvNeXt (no BatchNorm) + the last MiniLM layer trainable from tokens: micro-batches trim their tokens to
    # different widths, and the cached token outputs are padded back together
    overrides = ["model.image.name=test_convnext", "model.text.lock=false"]
    g = torch.Generator().manual_seed(3)
    inputs = {"image": torch.randn(len(REPORTS), 1, 64, 64, generator=g)}
    inputs.update(tokenize(load_tokenizer("minilm"), REPORTS, max_length=32))
    keys = {"text_keys": torch.tensor([0, 1, 2, 3, 2, 4, 5])}
    grads, losses, terms = [], [], []
    for m in (0, micro):
        parts = _parts(overrides, m)
        parts.model.text.eval()  # no dropout: one full forward is the reference
        parts.model.image.train()
        t: dict = {}
        losses.append(float(loss_and_grads(parts, inputs, keys, t)[0]))
        terms.append(float(t["local_loss"]))
        grads.append({n: p.grad.clone() for n, p in parts.model.named_parameters() if p.grad is not None})
    assert losses[0] == pytest.approx(losses[1], abs=1e-5) and terms[0] == pytest.approx(terms[1], abs=1e-5)
    assert grads[0].keys() == grads[1].keys() and "image_local_proj.weight" in grads[0]
    assert any(".encoder.layer." in n for n in grads[0])
    for name, want in grads[0].items():
        assert (grads[1][name] - want).abs().max() <= 1e-5 * max(1.0, float(want.abs().max())), name


def test_the_local_term_is_logged_and_adds_to_the_loss():
    parts = _parts([], 0)
    set_train_mode(parts.model)
    g = torch.Generator().manual_seed(4)
    inputs = {
        "image": torch.randn(4, 1, 64, 64, generator=g),
        "text_features": torch.randn(4, 6, 384, generator=g),
        "text_mask": torch.ones(4, 6, dtype=torch.long),
    }
    terms: dict = {}
    total, _ = loss_and_grads(parts, inputs, {}, terms)
    parts.local_loss, parts.local_weight = None, 0.0
    parts.optimizer.zero_grad()
    global_only, _ = loss_and_grads(parts, inputs, {})
    assert float(total) == pytest.approx(float(global_only) + float(terms["local_loss"]), abs=1e-5)
    assert float(terms["local_loss"]) > 0


@pytest.mark.parametrize(("tower", "shape"), [("resnet10_3d_small_avgmax", (16, 64, 64)), ("vit_3d", (32, 64, 64))])
def test_ct_towers_align_words_with_3d_patches(tower, shape):
    overrides = [
        f"model.image.name={tower}",
        "preprocess.spatial_dims=3",
        "preprocess.channels=3",
        f"preprocess.volume_shape=[{','.join(map(str, shape))}]",
    ]
    parts = _parts(overrides, 0)
    set_train_mode(parts.model)
    x = torch.randn(3, 3, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        maps = parts.model.image.forward_maps(x)
    assert maps.local.ndim == 5 and maps.local.shape[1] == parts.model.image.local_channels  # [B, C, d, h, w]
    assert math.prod(maps.local.shape[2:]) > 1
    inputs = {
        "image": x,
        "text_features": torch.randn(3, 5, 384, generator=torch.Generator().manual_seed(6)),
        "text_mask": torch.ones(3, 5, dtype=torch.long),
    }
    terms: dict = {}
    loss_and_grads(parts, inputs, {}, terms)
    assert float(terms["local_loss"]) > 0
    grads = {n: p.grad for n, p in parts.model.named_parameters() if p.grad is not None}
    assert "image_local_proj.weight" in grads and any(
        n.startswith("image.") and g.abs().sum() > 0 for n, g in grads.items()
    )
