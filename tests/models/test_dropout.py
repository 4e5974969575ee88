from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medclip.models.dropout import Dropout, dropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_drop_each_element_with_probability_p_in_both_halves_of_each_draw(p):
    torch.manual_seed(0)
    n = 400_000
    drop = ~keep_mask((n,), p)
    sigma = math.sqrt(p * (1 - p) / (n // 2))
    # each 64-bit draw gives two elements: a bias in either half (e.g. a draw whose top bit is fixed) shows here
    for half in (drop[0::2], drop[1::2]):
        assert abs(half.float().mean().item() - p) < 5 * sigma
    both = (drop[0::2] & drop[1::2]).float().mean().item()  # the two halves of a draw are independent
    assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / (n // 2))
    assert keep_mask((3, 5, 7), p).shape == (3, 5, 7)  # odd sizes: the last draw is half used


def test_dropout_zeroes_and_rescales_and_its_gradient_uses_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 384, requires_grad=True)
    y = dropout(x, 0.3)
    kept = y != 0
    assert 0.6 < kept.float().mean() < 0.8
    assert torch.allclose(y[kept], x[kept] / 0.7)
    grad = torch.randn_like(y)
    y.backward(grad)
    assert torch.equal(x.grad == 0, ~kept) and torch.allclose(x.grad, torch.where(kept, grad / 0.7, 0.0))


def test_dropout_follows_the_torch_seed_and_passes_through_when_off():
    x = torch.randn(1000)
    torch.manual_seed(3)
    a = dropout(x, 0.2)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.2), a)
    assert not torch.equal(dropout(x, 0.2), a)  # the generator moved on
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dropout(x.bfloat16(), 0.5).dtype == torch.bfloat16


def test_text_towers_use_it_for_every_dropout_with_the_same_rates():
    from transformers import AutoModel

    from medclip.models.text_tower import HFTextTower
    from medclip.text.tokenizer import resolve_text_model

    tower = HFTextTower("minilm")
    plain = AutoModel.from_pretrained(resolve_text_model("minilm"), add_pooling_layer=False)
    want = [(n, m.p) for n, m in plain.named_modules() if isinstance(m, nn.Dropout)]
    got = [(n, m.p) for n, m in tower.encoder.named_modules() if isinstance(m, nn.Dropout)]
    assert want and got == want  # same places, same rates
    assert all(type(m) is Dropout for m in tower.encoder.modules() if isinstance(m, nn.Dropout))
    assert tower.encoder.state_dict().keys() == plain.state_dict().keys()
    assert use_fast_dropout(tower) == 0  # nothing left to replace


def test_packed_attention_math_with_dropout_equals_sdpa_and_uses_the_drawn_mask():
    from medclip.models.text_tower import _attend

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 6, 4) for _ in range(3))
    valid = (torch.arange(6) < torch.tensor([6, 4, 1])[:, None])[:, None, None, :]
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=valid)
    # a rate this small keeps every element: the explicit math alone, against torch's SDPA
    assert torch.allclose(_attend(q, k, v, valid, 1e-12, None), want, atol=1e-6)
    torch.manual_seed(1)
    got = _attend(q, k, v, valid, 0.25, 0.5)
    torch.manual_seed(1)
    keep = keep_mask((3, 2, 6, 6), 0.25)
    probs = (q @ k.transpose(-2, -1) * 0.5).masked_fill(~valid, float("-inf")).softmax(-1)
    assert torch.allclose(got, (probs * keep / 0.75) @ v, atol=1e-6)
