from __future__ import annotations

import math

import pytest
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
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
    ]
    img, txt, scale = _emb(4, seed=4), _emb(4, seed=5), torch.tensor(10.0)
    logits = scale * img @ txt.t()
    targets = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    assert torch.allclose(ClipLoss()(img, txt, scale, text_keys=keys), expected)
    unique = torch.arange(4)
    assert torch.allclose(
        ClipLoss()(img, txt, scale, text_keys=unique), ClipLoss(duplicate_texts_positive=False)(img, txt, scale)
    )


def test_registry_builds_loss():
    assert isinstance(create_loss("infonce"), ClipLoss)


def test_multi_view_images_of_a_study_are_positives():
    from medclip.losses import pair_mask

    study = torch.tensor([0, 0, 1, 2])  # rows 0, 1: PA + lateral of one study, different report keys
    text = torch.tensor([5, 6, 7, 8])
    mask = pair_mask(slice(None), 4, [text, study], torch.device("cpu"))
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    img, txt, scale = _emb(4, seed=4), _emb(4, seed=5), torch.tensor(10.0)
    with_views = ClipLoss(study_positives=True)(img, txt, scale, text_keys=text, study_keys=study)
    assert torch.allclose(with_views, ClipLoss()(img, txt, scale, text_keys=torch.tensor([5, 5, 7, 8])))
    assert not torch.allclose(with_views, ClipLoss()(img, txt, scale, text_keys=text, study_keys=study))


def test_label_soft_targets_reference():
    from medclip.losses import LabelSoftClipLoss

    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # row 3 has no labels
    img, txt, scale = _emb(4, seed=6), _emb(4, seed=7), torch.tensor(10.0)
    logits = scale * img @ txt.t()
    unit = F.normalize(labels, dim=-1)
    soft = torch.softmax(unit @ unit.t() / 0.1, dim=-1)
    targets = 0.7 * torch.eye(4) + 0.3 * soft
    targets[3] = torch.eye(4)[3]  # no labels: hard targets
    expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    loss = LabelSoftClipLoss(label_weight=0.3, label_temperature=0.1, duplicate_texts_positive=False)
    assert torch.allclose(loss(img, txt, scale, labels=labels), expected)
    with pytest.raises(ValueError, match="label columns"):
        loss(img, txt, scale)


def test_siglip_reference():
    from medclip.losses import SigLipLoss

    img, txt = _emb(5, seed=8), _emb(5, seed=9)
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    logits = scale * img @ txt.t() + bias
    signs = 2 * torch.eye(5) - 1
    expected = -F.logsigmoid(signs * logits).sum() / 5
    assert torch.allclose(SigLipLoss(duplicate_texts_positive=False)(img, txt, scale, logit_bias=bias), expected)
    keys = torch.tensor([0, 0, 1, 2, 3])  # a duplicate report flips the (0, 1) and (1, 0) pairs to positive
    signs[0, 1] = signs[1, 0] = 1
    expected = -F.logsigmoid(signs * logits).sum() / 5
    assert torch.allclose(SigLipLoss()(img, txt, scale, logit_bias=bias, text_keys=keys), expected)
    with pytest.raises(ValueError, match="logit_bias"):
        SigLipLoss()(img, txt, scale)


@pytest.mark.parametrize("name", ["infonce", "infonce_soft", "siglip"])
def test_every_registered_loss_builds_from_config(name):
    from medclip.config import LossCfg
    from medclip.losses import LOSSES, loss_from_cfg

    assert name in LOSSES.list()
    assert isinstance(loss_from_cfg(LossCfg(name=name, local_loss=True)), LOSSES.get(name))
