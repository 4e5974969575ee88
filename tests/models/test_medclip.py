from __future__ import annotations

import pytest
import torch

from medclip.config import load_config
from medclip.models.medclip import MedClip
from medclip.text.tokenizer import load_tokenizer, tokenize


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("tiny")
    return MedClip(cfg.model, cfg.preprocess), load_tokenizer(cfg.model.text.name)


def test_forward_gives_normalised_embeddings_and_clamped_scale(tiny):
    model, tok = tiny
    batch = tokenize(tok, ["No pleural effusion.", "Small left apical pneumothorax."], max_length=64)
    out = model(torch.randn(2, 1, 64, 64), batch["input_ids"], batch["attention_mask"])
    assert out["image_emb"].shape == out["text_emb"].shape == (2, model.cfg.embed_dim)
    assert torch.allclose(out["image_emb"].norm(dim=-1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.scale()) == pytest.approx(100.0)


def test_dynamic_padding_pads_to_longest_not_max(tiny):
    _, tok = tiny
    batch = tokenize(tok, ["effusion", "small left pleural effusion"], max_length=128)
    assert batch["input_ids"].shape[1] < 16


def test_locked_text_tower_freezes_encoder_but_not_heads(tiny):
    model, _ = tiny
    assert model.text.is_locked
    assert all(p.requires_grad for p in model.text_proj.parameters())
    assert all(p.requires_grad for p in model.image.parameters())


def test_unlock_last_layers():
    cfg = load_config("tiny", ["model.text.unlocked_layers=1"])
    model = MedClip(cfg.model, cfg.preprocess)
    trainable = {n.split(".")[3] for n, p in model.text.named_parameters() if p.requires_grad}
    assert trainable == {"5"}  # only the last of MiniLM's 6 layers


def test_save_and_load_round_trip(tiny, tmp_path):
    model, tok = tiny
    model.eval()
    model.save_pretrained(tmp_path / "ckpt", tokenizer=tok, extra={"text_policy": "impression"})
    loaded = MedClip.from_pretrained(tmp_path / "ckpt")
    batch = tokenize(tok, ["Mild cardiomegaly."], max_length=64)
    image = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        a, b = model(image, **batch), loaded(image, **batch)
    assert torch.equal(a["image_emb"], b["image_emb"]) and torch.equal(a["text_emb"], b["text_emb"])
    assert loaded.meta["text_policy"] == "impression"
    assert loaded.preprocess == model.preprocess


def test_unreachable_hub_name_says_how_to_provide_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="Provide local weights"):
        load_tokenizer("emilyalsentzer/Bio_ClinicalBERT-not-cached")


def test_text_tower_never_swaps_in_hub_kernels():
    # transformers 5.25 loads with use_kernels=True by default: layers replaced by kernels fetched from the Hub
    from medclip.models.text_tower import HFTextTower

    assert HFTextTower("minilm").encoder.use_kernels is False


def test_unknown_timm_model_suggests():
    cfg = load_config("tiny", ["model.image.name=resnet1888"])
    with pytest.raises(ValueError, match="Did you mean"):
        MedClip(cfg.model, cfg.preprocess)
