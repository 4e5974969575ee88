from __future__ import annotations

import pytest

from medclip.train.optim import lr_factor


def test_warmup_then_cosine_to_min():
    kw = {"warmup_steps": 10, "total_steps": 110, "min_ratio": 0.1}
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(0.55)
    assert lr_factor(110, **kw) == pytest.approx(0.1)
    assert all(lr_factor(s, **kw) >= lr_factor(s + 1, **kw) for s in range(10, 120))


def _groups(overrides):
    from medclip.config import load_config
    from medclip.models.medclip import MedClip
    from medclip.train.optim import param_groups

    cfg = load_config("tiny", overrides)
    model = MedClip(cfg.model, cfg.preprocess)
    lr_of = {id(p): g["lr"] for g in param_groups(model, cfg.optim) for p in g["params"]}
    return {n: lr_of[id(p)] for n, p in model.named_parameters() if id(p) in lr_of}


def test_separate_learning_rates_for_towers_and_heads():
    lrs = _groups(
        [
            "optim.lr=1e-3",
            "optim.image_tower_lr=1e-4",
            "optim.image_head_lr=2e-3",
            "optim.text_head_lr=3e-3",
            "optim.text_tower_lr=1e-5",
            "model.text.unlocked_layers=1",
        ]
    )
    assert lrs["logit_scale"] == 1e-3
    assert lrs["image.trunk.conv1.0.weight"] == 1e-4 and lrs["image_proj.weight"] == 2e-3
    assert lrs["text_proj.weight"] == 3e-3
    assert {v for k, v in lrs.items() if k.startswith("text.")} == {1e-5}


def test_layer_decay_scales_lower_layers_down():
    lrs = _groups(["optim.layer_decay=0.5", "model.text.unlocked_layers=2", "optim.text_tower_lr=1e-4"])
    top, below = (
        lrs["text.encoder.encoder.layer.5.output.dense.weight"],
        lrs["text.encoder.encoder.layer.4.output.dense.weight"],
    )
    assert below == pytest.approx(top / 2)
    assert lrs["image.trunk.conv1.0.weight"] < lrs["image.trunk.layer4.0.conv1.weight"] == pytest.approx(1e-3)
    assert lrs["image_proj.weight"] == 1e-3  # heads are not decayed
    with pytest.raises(ValueError, match="layer_decay"):
        _groups(["optim.layer_decay=0"])


def test_optimizer_is_fused_and_updates_like_the_reference_adamw():
    import torch

    from medclip.config import load_config
    from medclip.models.medclip import MedClip
    from medclip.train.optim import create_optimizer, param_groups

    cfg = load_config("tiny", ["optim.lr=1e-2", "optim.weight_decay=0.1", "model.text.unlocked_layers=1"])
    model = MedClip(cfg.model, cfg.preprocess)
    params = dict(model.named_parameters())
    start = {n: p.detach().clone() for n, p in params.items()}
    torch.manual_seed(0)
    grads = [{n: torch.randn_like(p) for n, p in params.items() if p.requires_grad} for _ in range(3)]

    def run(optimizer) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(start[n])
        for step_grads in grads:
            for n, p in params.items():
                p.grad = step_grads.get(n)
            optimizer.step()
        return {n: p.detach().clone() for n, p in params.items()}

    fused = create_optimizer(model, cfg.optim)
    assert fused.defaults["fused"]
    got = run(fused)
    # torch's plain per-parameter AdamW on the same groups (learning rates, decay) and the same gradients
    want = run(torch.optim.AdamW(param_groups(model, cfg.optim), betas=(0.9, 0.98), eps=1e-6, foreach=False))
    assert all(not torch.equal(got[n], start[n]) for n in grads[0])
    for n in params:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-6)
