import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.transforms import Affine

from medclip.config import PreprocessCfg
from medclip.data.batch_aug import BatchAugment, _affine_grid, affine_theta
from medclip.data.transforms import build_transforms


def _images(b=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, size, size, generator=g)


def test_same_seed_step_rank_give_the_same_batch_and_others_differ():
    cfg = PreprocessCfg(image_size=32)
    aug, x = BatchAugment(cfg, seed=3), _images()
    a = aug(x, step=5)
    assert torch.equal(a, aug(x, step=5))
    assert torch.equal(a, BatchAugment(cfg, seed=3)(x, step=5))  # no hidden state
    assert not torch.allclose(a, aug(x, step=6))
    assert not torch.allclose(a, aug(x, step=5, rank=1))
    assert not torch.allclose(a, BatchAugment(cfg, seed=4)(x, step=5))
    assert not torch.allclose(a, x)
    assert x.equal(_images())  # the input is not modified in place


def test_result_does_not_depend_on_the_cpu_chunk_size(monkeypatch):
    """On a CPU the batch is augmented in cache-sized chunks; every parameter and noise draw follows batch order."""
    import medclip.data.batch_aug as batch_aug

    cfg, x = PreprocessCfg(image_size=32), _images(b=13)
    monkeypatch.setattr(batch_aug, "_CPU_CHUNK_BYTES", 1 << 30)
    whole = BatchAugment(cfg, seed=1)(x, step=2)
    for chunk_images in (1, 3, 5):
        monkeypatch.setattr(batch_aug, "_CPU_CHUNK_BYTES", chunk_images * x[0].numel() * 4)
        torch.testing.assert_close(BatchAugment(cfg, seed=1)(x, step=2), whole, atol=1e-6, rtol=1e-6)


def test_zero_ranges_leave_images_unchanged():
    cfg = PreprocessCfg(rotate_degrees=0, scale_range=0, translate_frac=0, contrast_gamma=0, noise_std=0)
    x = _images()
    torch.testing.assert_close(BatchAugment(cfg)(x, step=0), x, atol=1e-5, rtol=0)


def test_normalised_space_equals_augmenting_in_unit_range_then_normalising():
    unit, x = _images(), PreprocessCfg(mean=0.0, std=1.0)
    normed = PreprocessCfg(mean=0.5, std=0.25)
    a = BatchAugment(x, seed=1)(unit, step=2)
    b = BatchAugment(normed, seed=1)((unit - 0.5) / 0.25, step=2)
    torch.testing.assert_close(b, (a - 0.5) / 0.25, atol=1e-4, rtol=1e-4)


def test_warp_pads_with_black():
    cfg = PreprocessCfg(rotate_degrees=0, scale_range=0.0, translate_frac=0.4, contrast_gamma=0, noise_std=0)
    white = torch.ones(16, 1, 32, 32)
    out = BatchAugment(cfg)((white - cfg.mean) / cfg.std, step=0) * cfg.std + cfg.mean
    warped = (out - 1).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert warped.any()
    assert out[warped].amin() == pytest.approx(0.0, abs=1e-5)  # the shifted-in border is black, not normalised 0


def test_fast_grid_equals_affine_grid():
    theta = torch.randn(4, 2, 3)
    expected = F.affine_grid(theta, [4, 1, 20, 24], align_corners=False)
    torch.testing.assert_close(_affine_grid(theta, 20, 24), expected, atol=1e-5, rtol=1e-5)


def test_rotation_matches_monai_affine():
    """The warp convention (output -> input, angle sign) is MONAI's: same image for the same rotation."""
    img = torch.zeros(1, 1, 33, 33)
    img[..., 8:14, 20:26] = 1.0  # an off-centre square
    angle = math.radians(20)
    theta = affine_theta(torch.tensor([angle]), torch.ones(1, 2), torch.zeros(1, 2))
    ours = F.grid_sample(img, _affine_grid(theta, 33, 33), mode="bilinear", padding_mode="zeros", align_corners=False)
    monai, _ = Affine(rotate_params=angle, padding_mode="zeros", mode="bilinear", image_only=False)(img[0])
    torch.testing.assert_close(ours[0], torch.as_tensor(monai).as_tensor(), atol=1e-4, rtol=0)


def test_parameters_follow_the_recipe_ranges():
    cfg = PreprocessCfg(rotate_degrees=0, scale_range=0, translate_frac=0, noise_std=0, contrast_gamma=0.3)
    x = _images(b=256, size=8)
    out = BatchAugment(cfg)(x, step=0)
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert 0.35 < changed.float().mean() < 0.65  # contrast with probability 0.5
    noisy = BatchAugment(PreprocessCfg(rotate_degrees=0, scale_range=0, translate_frac=0, contrast_gamma=0))(x, step=0)
    assert 0.35 < ((noisy - x).abs().amax(dim=(1, 2, 3)) > 1e-6).float().mean() < 0.65


def test_training_pipeline_is_the_evaluation_pipeline_unless_monai_augments(tmp_path):
    names = lambda c: [type(t).__name__ for t in c.transforms]  # noqa: E731
    cfg = PreprocessCfg(image_size=32)
    assert names(build_transforms(cfg, train=True)) == names(build_transforms(cfg, train=False))
    monai = names(build_transforms(PreprocessCfg(image_size=32, augment="monai"), train=True))
    assert "RandAffined" in monai
    with pytest.raises(ValueError, match="augment"):
        build_transforms(PreprocessCfg(augment="gpu"), train=True)
    assert np.isfinite(BatchAugment(cfg)(_images(), step=0).numpy()).all()


def test_volumes_warp_in_plane_and_keep_their_shape():
    cfg = PreprocessCfg(rotate_degrees=10, scale_range=0.1, translate_frac=0.1, contrast_gamma=0, noise_std=0)
    vol = torch.zeros(4, 2, 8, 16, 16)
    vol[:, :, 2:6, 4:12, 4:12] = 1.0
    out = BatchAugment(cfg, seed=0)(vol, step=0)
    assert out.shape == vol.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, vol)
    zero = PreprocessCfg(rotate_degrees=0, scale_range=0, translate_frac=0, contrast_gamma=0, noise_std=0)
    torch.testing.assert_close(BatchAugment(zero)(vol, step=0), vol, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expects"):
        BatchAugment(cfg)(torch.zeros(2, 16, 16), step=0)


def test_volume_warp_equals_trilinear_grid_sample():
    """In-plane 2-D sampling of every slice plus a linear shift along the slices is trilinear sampling, exactly."""
    from medclip.data.batch_aug import _shift_slices

    g = torch.Generator().manual_seed(0)
    vol = torch.rand(3, 2, 9, 12, 14, generator=g)
    theta = affine_theta(
        torch.tensor([0.3, -0.1, 0.0]),
        torch.tensor([[1.1, 0.9], [1.0, 1.0], [0.8, 1.2]]),
        torch.tensor([[0.1, -0.2], [0.0, 0.0], [0.3, 0.1]]),
    )
    shift_z = torch.tensor([0.37, -0.5, 2.1])  # normalised; the last one moves every slice out of range
    theta3 = torch.zeros(3, 3, 4)
    theta3[:, :2, :2], theta3[:, :2, 3] = theta[:, :, :2], theta[:, :, 2]
    theta3[:, 2, 2], theta3[:, 2, 3] = 1.0, shift_z
    expected = F.grid_sample(vol, F.affine_grid(theta3, list(vol.shape), align_corners=False), align_corners=False)
    planes = F.grid_sample(vol.reshape(3, 18, 12, 14), _affine_grid(theta, 12, 14), align_corners=False)
    ours = _shift_slices(planes.view(vol.shape), shift_z * 9 / 2)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert ours[2].abs().max() == 0  # shifted out entirely: all padding
