from __future__ import annotations

import importlib.util
import logging

import pytest
import torch
from safetensors.torch import save_file

import medclip.models.volume_tower as volume  # the module whose towers are checked below
from medclip.models.factory import create_image_tower
from medclip.models.image_tower import IMAGE_TOWERS

needs_einops = pytest.mark.skipif(importlib.util.find_spec("einops") is None, reason="MONAI's ViT needs einops")

# name -> (output_dim, input shape): DenseNet needs >= 32 voxels a side, ViT exactly its img_size.
TOWERS = {
    "resnet10_3d": (512, (2, 2, 32, 64, 64)),
    "resnet10_3d_small": (128, (2, 2, 32, 64, 64)),
    "resnet10_3d_small_avgmax": (256, (2, 2, 32, 64, 64)),
    "resnet18_3d": (512, (2, 2, 32, 64, 64)),
    "resnet50_3d": (2048, (2, 2, 32, 64, 64)),
    "densenet121_3d": (1024, (1, 2, 32, 32, 32)),
    "vit_3d": (384, (2, 2, 32, 64, 64)),
}
NAMES = [pytest.param(name, marks=needs_einops) if "vit" in name else name for name in TOWERS]


def tiny_tower(kind: str) -> volume.VolumeTower:
    """Small instances of each tower class (2 input channels) for backward passes."""
    if kind == "resnet":
        return create_image_tower("resnet10_3d_small", in_chans=2)
    if kind == "densenet":
        return volume.DenseNet3DTower(in_chans=2, block_config=(1, 1, 1, 1))
    if kind == "vit":
        return volume.ViT3DTower(
            in_chans=2, img_size=(16, 32, 32), patch_size=(8, 16, 16), hidden_size=32, num_layers=2, num_heads=2
        )
    raise ValueError(kind)


TINY_INPUT = {"resnet": (2, 2, 16, 32, 32), "densenet": (2, 2, 32, 32, 32), "vit": (2, 2, 16, 32, 32)}
KINDS = ["resnet", "densenet", pytest.param("vit", marks=needs_einops)]


def test_every_3d_tower_is_tested():
    registered = {name for name in IMAGE_TOWERS.list() if IMAGE_TOWERS.get(name).__module__ == volume.__name__}
    assert registered == set(TOWERS)


@pytest.mark.parametrize("name", NAMES)
def test_registered_tower_forward_shape(name):
    torch.manual_seed(0)
    tower = create_image_tower(name, in_chans=2).eval()
    output_dim, shape = TOWERS[name]
    with torch.no_grad():
        out = tower(torch.randn(shape))
    assert tower.output_dim == output_dim
    assert out.shape == (shape[0], output_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_layer_groups_cover_every_parameter_once(name):
    tower = create_image_tower(name, in_chans=2)
    names = [n for group in tower.layer_groups() for n in group]
    assert len(names) == len(set(names))
    assert set(names) == {n for n, _ in tower.named_parameters()}
    assert all(tower.layer_groups())  # no empty groups


@pytest.mark.parametrize("kind", KINDS)
def test_grad_checkpointing_gives_same_gradients(kind, monkeypatch):
    torch.manual_seed(0)
    tower = tiny_tower(kind).train()
    x = torch.randn(TINY_INPUT[kind])

    def grads() -> dict[str, torch.Tensor]:
        tower.zero_grad(set_to_none=True)
        tower(x).square().mean().backward()
        return {n: p.grad.clone() for n, p in tower.named_parameters()}

    plain = grads()
    calls = []
    real = volume.checkpoint
    monkeypatch.setattr(volume, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    tower.set_grad_checkpointing(True)
    checkpointed = grads()
    assert len(calls) in (2, 4)  # ViT blocks / residual layers / dense blocks
    for n, g in plain.items():
        torch.testing.assert_close(checkpointed[n], g, rtol=1e-4, atol=1e-6, msg=n)


def test_grad_checkpointing_is_off_in_eval(monkeypatch):
    tower = tiny_tower("resnet").eval()
    tower.set_grad_checkpointing(True)
    monkeypatch.setattr(volume, "checkpoint", lambda *a, **kw: pytest.fail("checkpoint in eval"))
    tower(torch.randn(TINY_INPUT["resnet"]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("unlocked", [0, 1, 2])
def test_lock_keeps_last_groups_trainable(kind, unlocked):
    tower = tiny_tower(kind)
    tower.lock(unlocked)
    groups = tower.layer_groups()
    expected = {n for group in groups[len(groups) - unlocked :] for n in group}
    assert {n for n, p in tower.named_parameters() if p.requires_grad} == expected


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_pretrained_round_trip(fmt, tmp_path, caplog):
    torch.manual_seed(0)
    source = create_image_tower("resnet10_3d_small", in_chans=2).eval()
    path = tmp_path / f"weights.{fmt}"
    if fmt == "pth":  # MedicalNet style: wrapped, saved from DataParallel
        torch.save({"state_dict": {f"module.{k}": v for k, v in source.net.state_dict().items()}}, path)
    else:  # a medclip tower's own state dict ("net." prefix)
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)
    with caplog.at_level(logging.INFO, logger="medclip.models.volume_tower"):
        loaded = create_image_tower("resnet10_3d_small", in_chans=2, pretrained=str(path)).eval()
    assert "0 missing, 0 unexpected" in caplog.text
    x = torch.randn(1, 2, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))


def test_single_channel_weights_are_shared_across_input_channels(tmp_path):
    source = create_image_tower("resnet10_3d_small", in_chans=1)
    torch.save(source.net.state_dict(), tmp_path / "grey.pth")
    loaded = create_image_tower("resnet10_3d_small", in_chans=2, pretrained=str(tmp_path / "grey.pth"))
    stem = source.net.conv1.weight.detach()
    torch.testing.assert_close(loaded.net.conv1.weight.detach(), stem.repeat(1, 2, 1, 1, 1) / 2)


def test_hub_and_missing_weights_raise(tmp_path):
    with pytest.raises(ValueError, match="no hub weights"):
        create_image_tower("resnet10_3d_small", in_chans=2, pretrained="hub")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_image_tower("resnet10_3d_small", in_chans=2, pretrained=str(tmp_path / "nope.pth"))


@needs_einops
def test_vit_rejects_other_volume_sizes():
    tower = tiny_tower("vit")
    with pytest.raises(ValueError, match="img_size"):
        tower(torch.randn(1, 2, 32, 32, 32))


def test_avgmax_pool_is_the_average_and_the_max_of_the_same_features():
    torch.manual_seed(0)
    avg = create_image_tower("resnet10_3d_small", in_chans=2).eval()
    both = create_image_tower("resnet10_3d_small_avgmax", in_chans=2).eval()
    both.load_state_dict(avg.state_dict())  # same parameters: only the pooling differs
    x = torch.randn(2, 2, 16, 32, 32)
    with torch.no_grad():
        a, b = avg(x), both(x)
    torch.testing.assert_close(b[:, :128], a)
    assert (b[:, 128:] >= b[:, :128] - 1e-6).all()  # a max is never below the mean
    with pytest.raises(ValueError, match="pool"):
        volume.ResNet3DTower(10, pool="median")


def test_cpu_bf16_conv3d_weight_gradient_is_right_two_slices_deep():
    # A 32-slice volume is 2 slices deep at the third ResNet stage, where torch's oneDNN bf16 Conv3d returns a
    # garbage weight gradient; Depth2SafeConv3d runs it in fp32. Reference: fp32 on the same bf16-rounded operands.
    torch.manual_seed(0)
    tower = create_image_tower("resnet10_3d_small", in_chans=3)
    convs = [m for m in tower.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(isinstance(m, volume.Depth2SafeConv3d) for m in convs)
    for depth in (2, 3):
        conv = tower.net.layer3[0].conv2  # 3^3 kernel, padding 1
        conv.zero_grad()
        x = torch.randn(4, conv.in_channels, depth, 6, 6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        assert y.dtype == (torch.float32 if depth == 2 else torch.bfloat16)  # the guard's fp32, else bf16 autocast
        g = torch.randn(y.shape)
        y.backward(g.to(y.dtype))
        w = conv.weight.detach().bfloat16().float().requires_grad_()
        torch.nn.functional.conv3d(x.bfloat16().float(), w, padding=1).backward(g.bfloat16().float())
        err = (conv.weight.grad - w.grad).abs().max() / w.grad.abs().max()
        assert err < 0.02, (depth, float(err))
