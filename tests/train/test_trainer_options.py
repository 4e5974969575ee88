"""The trainer's options end to end on the tiny preset (a few CPU steps each)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

import medclip.train.trainer as trainer_module
from medclip.config import load_config
from medclip.models.medclip import MedClip
from medclip.train.trainer import label_matrix, train

REDUCED = {"bf16": torch.bfloat16, "fp16": torch.float16}


def record_conv_dtypes(monkeypatch) -> set[torch.dtype]:
    """The dtypes the image tower's convolutions compute in during training (filled by forward hooks on the model
    the trainer builds): under autocast they are the reduced precision, without it float32."""
    seen: set[torch.dtype] = set()
    build = trainer_module.build_model

    def build_and_hook(cfg, device):
        model = build(cfg, device)
        convs = [m for m in model.image.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs
        for conv in convs:
            conv.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
        return model

    monkeypatch.setattr(trainer_module, "build_model", build_and_hook)
    return seen


@pytest.fixture(scope="module")
def labelled_manifest(tiny_manifest, tmp_path_factory):
    """The tiny manifest plus two CheXpert-style label columns (1 / 0 / -1 / blank)."""
    out = tmp_path_factory.mktemp("labelled") / "manifest"
    shutil.copytree(tiny_manifest, out)  # manifest.parquet is a folder of parts
    df = pd.read_parquet(out / "manifest.parquet")
    df["Pleural Effusion"] = [[1.0, 0.0, -1.0, float("nan")][i % 4] for i in range(len(df))]
    df["Cardiomegaly"] = [[0.0, 1.0, float("nan")][i % 3] for i in range(len(df))]
    shutil.rmtree(out / "manifest.parquet")
    df.to_parquet(out / "manifest.parquet")  # a single file reads as well
    return out


@pytest.mark.parametrize(
    "options",
    [
        # bf16 autocast, gradient cache, label-aware multi-view loss, unlocked text layer with checkpointing, LLRD
        [
            "train.precision=bf16",
            "train.grad_cache_micro_batch=3",
            "loss.name=infonce_soft",
            "loss.study_positives=true",
            "model.text.unlocked_layers=1",
            "train.grad_checkpointing=true",
            "optim.layer_decay=0.8",
        ],
        # fp16 with a GradScaler, SigLIP with its bias, image tower locked but for its last layer group
        [
            "train.precision=fp16",
            "loss.name=siglip",
            "model.logit_bias=true",
            "model.init_temperature=0.1",
            "model.image.lock=true",
            "model.image.unlocked_groups=1",
        ],
    ],
    ids=["bf16-gradcache-soft", "fp16-siglip"],
)
def test_options_train_and_save_a_loadable_model(labelled_manifest, tmp_path, options, monkeypatch):
    dtypes = record_conv_dtypes(monkeypatch)
    cfg = load_config(
        "tiny",
        [
            f"data.manifest={labelled_manifest}",
            f"train.out_dir={tmp_path}",
            "train.max_steps=3",
            "train.log_every=1",
            *options,
        ],
    )
    final = train(cfg, show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert {"lr", "temperature", "grad_norm", "pairs_per_s", "rss_gb", "epoch"} <= records[-1].keys()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    model = MedClip.from_pretrained(final)
    assert (model.logit_bias is not None) == ("loss.name=siglip" in options)
    precision = next(o.split("=")[1] for o in options if o.startswith("train.precision="))
    assert dtypes == {REDUCED[precision]}  # the steps really ran under autocast
    assert ("loss_scale" in records[-1]) == (precision == "fp16")  # fp16's GradScaler is on, and only for fp16
    if precision == "fp16":
        assert all(r["loss_scale"] > 1 for r in records)


def test_label_matrix_maps_uncertain_and_blank(labelled_manifest):
    df = pd.read_parquet(labelled_manifest / "manifest.parquet").head(4)
    labels = label_matrix(df, columns=[], uncertain=0.5)
    assert labels[:, 0].tolist() == [1.0, 0.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="label columns"):
        label_matrix(df, columns=["No Such Finding"], uncertain=0.5)


def test_siglip_without_bias_is_a_config_error(tiny_manifest, tmp_path):
    cfg = load_config("tiny", [f"data.manifest={tiny_manifest}", f"train.out_dir={tmp_path}", "loss.name=siglip"])
    with pytest.raises(ValueError, match="model.logit_bias=true"):
        train(cfg, show_progress=False)


@pytest.mark.slow
def test_compiled_towers_train_and_save(tiny_manifest, tmp_path):
    cfg = load_config(
        "tiny",
        [
            f"data.manifest={tiny_manifest}",
            f"train.out_dir={tmp_path}",
            "train.max_steps=2",
            "train.compile=true",
            "model.text.unlocked_layers=1",
        ],
    )
    final = train(cfg, show_progress=False)
    from safetensors.torch import load_file

    # compiled in place: the saved names are the plain module's (no "_orig_mod."), so from_pretrained loads them
    assert set(load_file(str(final / "model.safetensors"))) == set(MedClip.from_pretrained(final).state_dict())


def test_auto_precision_follows_the_hardware(monkeypatch):
    from medclip.train.step import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_resolved_in_the_saved_config(tiny_manifest, tmp_path, monkeypatch, native_bf16, expected):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native_bf16)
    dtypes = record_conv_dtypes(monkeypatch)
    cfg = load_config(
        "tiny",
        [f"data.manifest={tiny_manifest}", f"train.out_dir={tmp_path}", "train.max_steps=1", "train.precision=auto"],
    )
    train(cfg, show_progress=False)
    saved = (tmp_path / "config.yaml").read_text()
    assert f"precision: {expected}" in saved
    assert dtypes == {REDUCED.get(expected, torch.float32)}  # and the step ran in what was saved
