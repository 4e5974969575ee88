"""GPU checks (``pytest -m gpu``; run by scripts/gpu_check.sh). Skipped where CUDA is absent."""

from __future__ import annotations

import json

import pytest
import torch

from medclip.config import load_config
from medclip.train.trainer import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_training_on_cuda(tiny_manifest, tmp_path, precision):
    cfg = load_config(
        "tiny",
        [
            f"data.manifest={tiny_manifest}",
            f"train.out_dir={tmp_path}",
            "train.device=cuda",
            f"train.precision={precision}",
            "train.max_steps=4",
            "train.log_every=1",
            "model.text.unlocked_layers=1",
            "train.grad_checkpointing=true",
        ],
    )
    final = train(cfg, show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert (final / "model.safetensors").is_file() and records[-1]["mem_gb"] > 0
    assert all(r["loss"] == r["loss"] for r in records)  # finite or skipped by the fp16 scaler, never NaN logged
    if precision == "fp16":
        assert "loss_scale" in records[-1]


def test_grad_cache_matches_full_batch_on_cuda():
    from medclip.losses import loss_from_cfg
    from medclip.models.medclip import MedClip
    from medclip.train.optim import create_optimizer, create_scheduler
    from medclip.train.step import StepParts, autocast_factory, loss_and_grads, set_train_mode

    torch.backends.cudnn.allow_tf32 = False  # exact comparison: no TF32 convolutions
    device = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    inputs = {
        "image": torch.randn(16, 1, 64, 64, generator=g).to(device),
        "text_features": torch.randn(16, 384, generator=g).to(device),
    }
    keys = {"text_keys": torch.arange(16, device=device)}
    grads = []
    for micro in (0, 4):
        cfg = load_config("tiny", ["model.image.name=test_convnext"])
        torch.manual_seed(0)
        model = MedClip(cfg.model, cfg.preprocess).to(device)
        opt = create_optimizer(model, cfg.optim)
        parts = StepParts(
            model=model,
            forward_model=model,
            loss_fn=loss_from_cfg(cfg.loss),
            optimizer=opt,
            scheduler=create_scheduler(opt, cfg.optim, 10),
            scaler=torch.amp.GradScaler("cuda", enabled=False),
            autocast=autocast_factory(device, "fp32"),
            micro_batch=micro,
        )
        set_train_mode(model)
        loss_and_grads(parts, inputs, keys)
        grads.append({n: p.grad.cpu() for n, p in model.named_parameters() if p.grad is not None})
    for key, want in grads[0].items():
        assert (grads[1][key] - want).abs().max() <= 1e-5 * max(1.0, float(want.abs().max())), key


def test_varlen_attention_matches_the_padded_tower_on_cuda(report_batch, monkeypatch):
    # FlashAttention's variable-length kernel (model.text.varlen_attention) against the plain padded tower, in bf16
    # without dropout: the same embeddings and gradients up to bf16 rounding; with dropout, the kernel drops too.
    from medclip.models import text_tower as text_module
    from medclip.models.text_tower import HFTextTower

    calls = []
    kernel = text_module._flash_kernel
    monkeypatch.setattr(text_module, "_flash_kernel", lambda *a, **kw: calls.append(a[7]) or kernel(*a, **kw))
    batch = {k: v.cuda() for k, v in report_batch.items()}
    plain = HFTextTower("minilm").cuda()
    varlen = HFTextTower("minilm", length_buckets=4, packing=True, varlen_attention=True).cuda()
    varlen.load_state_dict(plain.state_dict())
    results = []
    for tower in (plain, varlen):
        tower.eval()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = tower(batch["input_ids"], batch["attention_mask"]).float()
        out.pow(2).sum().backward()
        results.append((out.detach(), {n: p.grad.float() for n, p in tower.named_parameters()}))
    layers = len(varlen.encoder.encoder.layer)
    assert calls == [0.0] * layers  # the kernel ran for every layer (no silent fallback to the buckets)
    (want, want_grads), (got, grads) = results
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.999
    # Relative to each gradient, plus a floor from the whole: the key biases' gradients are 0 up to rounding noise
    # (a CPU stand-in, packed buckets against padded in bf16: noise 0.04, floor 0.2, smallest other gradient 4.6)
    floor = 1e-4 * float(torch.cat([g.flatten() for g in want_grads.values()]).norm())
    for name, g in want_grads.items():
        assert (grads[name] - g).norm() <= 0.05 * float(g.norm()) + floor, name
    varlen.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        dropped = varlen(batch["input_ids"], batch["attention_mask"]).float()
    assert calls[layers:] == [varlen.encoder.config.attention_probs_dropout_prob] * layers
    assert torch.isfinite(dropped).all() and not torch.allclose(dropped, got, atol=1e-3)
