from __future__ import annotations

import torch

from medclip.models.text import HFTextTower
from medclip.text.tokenizer import load_tokenizer, tokenize

TEXTS = ["No acute disease.", "Small left pleural effusion with adjacent atelectasis. " * 6, "Normal.",
         "Mild cardiomegaly without edema.", "Right upper lobe opacity.", "Stable chest.",
         "Left basilar atelectasis. No pneumothorax. " * 3, "Clear lungs."]  # fmt: skip


def test_length_buckets_give_the_same_embeddings_and_gradients():
    batch = tokenize(load_tokenizer("minilm"), TEXTS, max_length=128)
    plain = HFTextTower("minilm")
    bucketed = HFTextTower("minilm", length_buckets=4)
    bucketed.load_state_dict(plain.state_dict())
    outs = []
    for tower in (plain, bucketed):
        tower.eval()
        out = tower(batch["input_ids"], batch["attention_mask"])
        out.pow(2).sum().backward()
        outs.append((out.detach(), {n: p.grad for n, p in tower.named_parameters()}))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    for name, want in outs[0][1].items():  # float rounding only: <= 1e-5 relative to the largest gradient
        assert (outs[1][1][name] - want).abs().max() <= 1e-5 * max(1.0, float(want.abs().max())), name
