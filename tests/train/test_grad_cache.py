"""The gradient cache gives the gradients of the full-batch computation (<= 1e-5), with dropout and BatchNorm."""

from __future__ import annotations

import pytest
import torch

from medclip.config import load_config
from medclip.losses import loss_from_cfg
from medclip.models.medclip import MedClip
from medclip.text.tokenizer import load_tokenizer, tokenize
from medclip.train.grad_cache import GradCache, split_inputs
from medclip.train.optim import create_optimizer, create_scheduler
from medclip.train.step import StepParts, autocast_factory, loss_and_grads, set_train_mode

REPORTS = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion.",
    "Mild cardiomegaly. No edema.",
    "Right lower lobe opacity, possibly pneumonia, in the appropriate clinical setting.",
    "Normal chest.",
    "No acute cardiopulmonary process.",
    "Left apical pneumothorax, small.",
    "Stable postoperative chest.",
]


def _parts(overrides: list[str], micro: int) -> StepParts:
    cfg = load_config("tiny", overrides)
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
    )


def _inputs(tokens: bool) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(3)
    inputs = {"image": torch.randn(len(REPORTS), 1, 64, 64, generator=g)}
    if tokens:
        inputs.update(tokenize(load_tokenizer("minilm"), REPORTS, max_length=64))
    else:
        inputs["text_features"] = torch.randn(len(REPORTS), 384, generator=g)
    return inputs, {"text_keys": torch.tensor([0, 1, 2, 3, 4, 0, 5, 6])}


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys() and want
    for key, grad in want.items():
        assert (got[key] - grad).abs().max() <= 1e-5 * max(1.0, float(grad.abs().max())), key


@pytest.mark.parametrize("micro", [3, 4])  # 3: uneven micro-batches (3 + 3 + 2)
def test_matches_full_batch_without_batch_coupling(micro):
    # ConvNeXt (LayerNorm) + cached text features: nothing couples the rows, so one full forward is the reference.
    overrides = ["model.image.name=test_convnext"]
    inputs, keys = _inputs(tokens=False)
    full = _parts(overrides, micro=0)
    set_train_mode(full.model)
    loss_full, _ = loss_and_grads(full, inputs, keys)
    cached = _parts(overrides, micro=micro)
    set_train_mode(cached.model)
    loss_cached, _ = loss_and_grads(cached, inputs, keys)
    assert abs(float(loss_full) - float(loss_cached)) <= 1e-6
    _assert_close(_grads(cached.model), _grads(full.model))
    assert "logit_scale" in _grads(cached.model) and "image.trunk.stem.0.weight" in _grads(cached.model)


def test_dropout_and_batchnorm_match_the_micro_batched_forward():
    # ResNet (BatchNorm) + the last MiniLM layer unlocked (dropout active): the reference runs the same micro-batches
    # with autograd from the same RNG state, so dropout masks must be replayed and BN stats counted once.
    overrides = ["model.text.unlocked_layers=1"]
    inputs, keys = _inputs(tokens=True)
    ref = _parts(overrides, micro=0)
    set_train_mode(ref.model)
    assert ref.model.text.training  # dropout on
    torch.manual_seed(11)
    outs = [ref.model(**chunk) for chunk in split_inputs(inputs, 3)]
    cat = {k: torch.cat([o[k] for o in outs]) for k in ("image_emb", "text_emb")}
    loss_ref = ref.loss_fn(cat["image_emb"], cat["text_emb"], ref.model.scale(), **keys)
    loss_ref.backward()

    cached = _parts(overrides, micro=3)
    set_train_mode(cached.model)
    torch.manual_seed(11)
    loss_cached, _ = loss_and_grads(cached, inputs, keys)
    assert abs(float(loss_ref) - float(loss_cached)) <= 1e-6
    _assert_close(_grads(cached.model), _grads(ref.model))
    assert any(".encoder.layer.5." in n for n in _grads(cached.model))
    for (name, a), b in zip(ref.model.named_buffers(), cached.model.buffers(), strict=True):
        assert torch.equal(a, b), name  # running statistics updated once per micro-batch, as in the reference


def test_rng_replay_matters():
    # Without restoring RNG, the second pass would draw other dropout masks: the embeddings would not match.
    parts = _parts(["model.text.unlocked_layers=1"], micro=4)
    set_train_mode(parts.model)
    inputs, _ = _inputs(tokens=True)
    cache = GradCache(parts.model, forward_model=parts.model, micro_batch=4, autocast=parts.autocast)
    first = cache.embed(inputs)["text_emb"].detach()
    cache._rng[0].restore()
    again = parts.model(**split_inputs(inputs, 4)[0])["text_emb"]
    assert torch.allclose(again, first[:4], atol=1e-6)
    assert not torch.allclose(parts.model(**split_inputs(inputs, 4)[0])["text_emb"], first[:4], atol=1e-6)


def test_micro_batches_trim_padding_to_their_longest_text():
    inputs, _ = _inputs(tokens=True)
    chunks = split_inputs(inputs, 4)
    assert [c["image"].shape[0] for c in chunks] == [4, 4]
    width = inputs["input_ids"].shape[1]
    assert chunks[0]["input_ids"].shape[1] == width  # the long report (row 3) sets the first micro-batch's width
    assert chunks[1]["input_ids"].shape[1] < width  # the second is not padded to it
    assert all(c["attention_mask"][:, -1].any() for c in chunks)
