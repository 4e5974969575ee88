from __future__ import annotations

import torch

from medclip.models.text_tower import HFTextTower


def test_length_buckets_give_the_same_embeddings_and_gradients(report_batch):
    batch = report_batch  # tests/conftest.py: 8 reports of very different lengths
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


def _outputs_and_grads(tower, batch, *, train: bool = False):
    tower.train(train)
    out = tower(batch["input_ids"], batch["attention_mask"])
    out.pow(2).sum().backward()
    return out.detach(), {n: p.grad for n, p in tower.named_parameters()}


def test_packed_texts_give_the_same_embeddings_and_gradients_with_no_padding_tokens(report_batch):
    batch = report_batch
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max() < batch["attention_mask"].shape[1] + 1  # the batch does hold padding
    plain = HFTextTower("minilm")
    want, want_grads = _outputs_and_grads(plain, batch)
    for buckets in (1, 4):
        packed = HFTextTower("minilm", length_buckets=buckets, packing=True)
        packed.load_state_dict(plain.state_dict())
        assert packed.packing
        seen: list[torch.Size] = []
        hook = packed.encoder.encoder.layer[0].register_forward_hook(
            lambda m, args, out, seen=seen: seen.append(args[0].shape)
        )
        got, grads = _outputs_and_grads(packed, batch)
        hook.remove()
        assert seen == [torch.Size([1, int(lengths.sum()), packed.output_dim])]  # only the real tokens, one row
        assert torch.allclose(got, want, atol=1e-5)
        for name, g in want_grads.items():
            assert (grads[name] - g).abs().max() <= 1e-5 * max(1.0, float(g.abs().max())), name


def test_packing_trains_with_dropout_and_falls_back_for_left_padding(report_batch):
    batch = report_batch
    tower = HFTextTower("minilm", length_buckets=2, packing=True)
    torch.manual_seed(0)
    a, grads = _outputs_and_grads(tower, batch, train=True)
    b = tower.eval()(batch["input_ids"], batch["attention_mask"]).detach()
    cosine = torch.nn.functional.cosine_similarity(a, b)
    assert not torch.allclose(a, b, atol=1e-4) and cosine.min() > 0.8, cosine  # dropout on, about the same embedding
    assert all(torch.isfinite(g).all() for g in grads.values())
    # Left padding (some tokenizers) cannot be packed: the padded path runs, as in a tower without packing
    width = batch["attention_mask"].shape[1]
    shift = [(torch.arange(width) - (width - n)) % width for n in batch["attention_mask"].sum(1).tolist()]
    left = {k: torch.stack([v[i, s] for i, s in enumerate(shift)]) for k, v in batch.items()}
    plain = HFTextTower("minilm").eval()
    plain.load_state_dict(tower.state_dict())
    want = plain(left["input_ids"], left["attention_mask"])
    assert torch.allclose(tower(left["input_ids"], left["attention_mask"]), want, atol=1e-5)


def test_encoders_outside_the_packable_types_pad_instead(monkeypatch):
    from transformers import BertConfig, DistilBertConfig

    from medclip.models import text_tower as text_module

    bert = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    assert HFTextTower("x", config_dict=bert.to_dict(), packing=True).packing
    with monkeypatch.context() as m:  # transformers 4.x BERT would attend across the packed texts: never pack there
        m.setattr(text_module.transformers, "__version__", "4.57.0")  # the module text_tower.py reads (loading a model
        # can replace sys.modules["transformers"], so a fresh `import transformers` here may be another object)
        assert not HFTextTower("x", config_dict=bert.to_dict(), packing=True).packing
    distil = DistilBertConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    tower = HFTextTower("x", config_dict=distil.to_dict(), packing=True)
    assert not tower.packing
    ids = torch.tensor([[1, 5, 7, 2, 0], [1, 9, 2, 0, 0]])
    assert tower(ids, (ids > 0).long()).shape == (2, 32)


def test_varlen_attention_hands_the_kernel_each_text_as_one_sequence(report_batch, monkeypatch):
    # FlashAttention's variable-length kernel runs on CUDA only: here a per-text reference stands in for it, so this
    # checks what the tower hands the kernel (the packed tokens, int32 offsets, the longest length, the dropout) and
    # how it uses the result. tests/train/test_gpu.py checks the kernel itself against the padded tower on a GPU.
    import torch.nn.functional as F

    from medclip.models import text_tower as text_module

    calls = []

    def reference(q, k, v, cu_q, cu_k, max_q, max_k, dropout, causal, debug_mask, *, scale):
        bounds = cu_q.tolist()
        spans = list(zip(bounds[:-1], bounds[1:], strict=True))
        assert cu_q.dtype == torch.int32 and cu_k is cu_q and bounds[0] == 0 and bounds[-1] == q.shape[0]
        assert max_q == max_k == max(b - a for a, b in spans) and not causal and not debug_mask
        calls.append(dropout)
        parts = [
            F.scaled_dot_product_attention(*(x[a:b].transpose(0, 1) for x in (q, k, v)), scale=scale) for a, b in spans
        ]
        return (torch.cat([p.transpose(0, 1) for p in parts]),)

    monkeypatch.setattr(text_module, "_flash_varlen_ok", lambda q: True)
    monkeypatch.setattr(text_module, "_flash_kernel", reference)
    plain = HFTextTower("minilm")
    want, want_grads = _outputs_and_grads(plain, report_batch)
    tower = HFTextTower("minilm", length_buckets=4, packing=True, varlen_attention=True)
    tower.load_state_dict(plain.state_dict())
    got, grads = _outputs_and_grads(tower, report_batch)
    layers = len(tower.encoder.encoder.layer)
    assert calls == [0.0] * layers  # every layer through the kernel, none through the buckets
    assert torch.allclose(got, want, atol=1e-5)
    for name, g in want_grads.items():
        assert (grads[name] - g).abs().max() <= 1e-5 * max(1.0, float(g.abs().max())), name
    tower.train()(report_batch["input_ids"], report_batch["attention_mask"])
    assert calls[layers:] == [tower.encoder.config.attention_probs_dropout_prob] * layers  # dropout is the kernel's
    moved = text_module.packing_plan([3, 5], 8, 1, varlen=True).to(torch.device("meta"))  # as on a GPU: one copy
    assert moved.offsets.dtype == torch.int32 and moved.offsets.shape == (3,) and moved.max_len == 5 and moved.varlen
