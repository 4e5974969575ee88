from __future__ import annotations

import pytest
import torch

from medclip.config import load_config
from medclip.models.medclip import MedClip
from medclip.models.warm_start import load_warm_start, translate_open_clip


def test_warm_start_from_a_medclip_run(tiny_checkpoint):
    cfg = load_config("tiny")
    torch.manual_seed(123)
    model = MedClip(cfg.model, cfg.preprocess)
    counts = load_warm_start(model, tiny_checkpoint)
    trained = MedClip.from_pretrained(tiny_checkpoint)
    assert counts["loaded"] == len(model.state_dict()) and counts["skipped"] == 0
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values(), strict=True)
    )


def test_open_clip_names_are_translated(tmp_path):
    cfg = load_config("tiny")
    source = MedClip(cfg.model, cfg.preprocess)
    renamed = {}
    for key, value in source.state_dict().items():  # how open_clip's TimmModel + HFTextEncoder name them
        key = key.replace("image.trunk.", "visual.trunk.").replace("image_proj.", "visual.head.proj.")
        key = key.replace("text.encoder.", "text.transformer.").replace("text_proj.", "text.proj.")
        renamed["module." + key] = value
    renamed["module.visual.trunk.conv1.0.weight"] = renamed["module.visual.trunk.conv1.0.weight"].repeat(1, 3, 1, 1)
    torch.save({"epoch": 3, "state_dict": renamed}, tmp_path / "epoch_3.pt")
    assert set(translate_open_clip({k[7:]: v for k, v in renamed.items()})) == set(source.state_dict())
    target = MedClip(cfg.model, cfg.preprocess)
    counts = load_warm_start(target, tmp_path / "epoch_3.pt")
    assert counts["skipped"] == 0  # the RGB stem is folded to one channel (timm's adapt_input_conv)
    assert torch.equal(target.image_proj.weight, source.image_proj.weight)


def test_real_open_clip_checkpoint(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from medclip.text.tokenizer import resolve_text_model

    minilm = resolve_text_model("minilm")
    oc = open_clip.CustomTextCLIP(
        embed_dim=64,
        vision_cfg={"timm_model_name": "test_resnet", "image_size": 64},
        text_cfg={
            "hf_model_name": minilm,
            "hf_tokenizer_name": minilm,
            "hf_proj_type": "linear",
            "hf_model_pretrained": False,
        },
    )
    torch.save(oc.state_dict(), tmp_path / "open_clip.pt")
    cfg = load_config("tiny")
    model = MedClip(cfg.model, cfg.preprocess)
    counts = load_warm_start(model, tmp_path / "open_clip.pt")
    assert torch.equal(model.text_proj.weight, oc.text.proj.weight)
    assert torch.equal(model.image.trunk.layer4[0].conv1.weight, oc.visual.trunk.layer4[0].conv1.weight)
    assert counts["loaded"] >= len(model.state_dict()) - 1  # all but, at most, a differently shaped tensor


def test_no_matching_tensor_is_an_error(tmp_path):
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pt")
    cfg = load_config("tiny")
    with pytest.raises(ValueError, match="no tensor"):
        load_warm_start(MedClip(cfg.model, cfg.preprocess), tmp_path / "other.pt")
