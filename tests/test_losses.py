from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medclip.losses import ClipLoss, create_loss, positive_mask


def _emb(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_matches_reference_symmetric_cross_entropy():
    img, txt = _emb(6), _emb(6, seed=1)
    scale = torch.tensor(10.0)
    logits = scale * img @ txt.t()
    labels = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    got = ClipLoss(duplicate_texts_positive=False)(img, txt, scale)
    assert torch.allclose(got, expected)


def test_perfect_alignment_has_low_loss_and_random_is_near_log_b():
    x = _emb(32)
    assert ClipLoss()(x, x, torch.tensor(100.0)) < 1e-3
    rand = ClipLoss()(_emb(32), _emb(32, seed=3), torch.tensor(1.0))
    assert abs(float(rand) - math.log(32)) < 0.2


def test_identical_texts_are_not_negatives():
    # Rows 0 and 1 share a report: each image's target mass is split over both copies of the text, and each text's
    # over both images, instead of treating the twin as a negative.
    keys = torch.tensor([7, 7, 1, 2])
    assert positive_mask(keys, 4, torch.device("cpu")).int().tolist() == [
        [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # fmt: skip
    img, txt, scale = _emb(4, seed=4), _emb(4, seed=5), torch.tensor(10.0)
    logits = scale * img @ txt.t()
    targets = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    assert torch.allclose(ClipLoss()(img, txt, scale, text_keys=keys), expected)
    unique = torch.arange(4)
    assert torch.allclose(ClipLoss()(img, txt, scale, text_keys=unique), ClipLoss(duplicate_texts_positive=False)(img, txt, scale))


def test_registry_builds_loss():
    assert isinstance(create_loss("infonce"), ClipLoss)
