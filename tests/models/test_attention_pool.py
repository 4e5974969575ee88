"""Attention pooling over a locked text encoder: token states are cached once and the pooling still trains."""

from __future__ import annotations

import torch

from medclip.config import load_config
from medclip.models.medclip import MedClip
from medclip.text.tokenizer import load_tokenizer, tokenize
from medclip.train.trainer import prepare_inputs, text_features, train


def test_cached_token_states_give_the_same_embeddings_as_the_full_forward():
    cfg = load_config("tiny", ["model.text.pooling=attention"])
    model = MedClip(cfg.model, cfg.preprocess).eval()
    assert model.text.is_locked and model.text.caches_tokens
    assert all(p.requires_grad for p in model.text.attn_pool.parameters())  # the pooling trains
    tokenizer = load_tokenizer(cfg.model.text.name)
    texts = ["Sharp pain in the left foot.", "Dull ache in the right upper arm since yesterday, 4/10.", "Headache."]
    states, mask = text_features(model, tokenizer, texts, max_length=64, device=torch.device("cpu"))
    assert states.dtype == torch.bfloat16 and states.shape[:2] == mask.shape
    batch = {"image": torch.zeros(3, 1, 64, 64), "text_index": torch.tensor([2, 0, 1])}
    inputs = prepare_inputs(batch, device=torch.device("cpu"), cached=(states, mask), channels_last=False)
    with torch.no_grad():
        cached = model.encode_text_features(inputs["text_features"], mask=inputs["text_mask"])
        enc = tokenize(tokenizer, [texts[i] for i in (2, 0, 1)], max_length=64)
        direct = model.encode_text(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(cached, direct, atol=2e-2, rtol=0)  # bf16 storage of the token states
    assert (cached * direct).sum(1).min() > 0.999


def test_training_updates_the_pooling_of_a_locked_encoder(tiny_manifest, tmp_path):
    """Two runs from the same seed, 1 and 3 steps: the pooling moves between them, the encoder does not."""
    runs = []
    for steps in (1, 3):
        cfg = load_config(
            "tiny",
            [
                f"data.manifest={tiny_manifest}",
                f"train.out_dir={tmp_path / str(steps)}",
                f"train.max_steps={steps}",
                "model.text.pooling=attention",
            ],
        )
        runs.append(MedClip.from_pretrained(train(cfg, show_progress=False)))
    one, three = runs
    assert not torch.equal(one.text.attn_pool.query, three.text.attn_pool.query)
    encoder_one = dict(one.text.encoder.named_parameters())
    for name, p in three.text.encoder.named_parameters():
        torch.testing.assert_close(p, encoder_one[name])  # the encoder stayed locked
