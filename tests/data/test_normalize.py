"""One image normalisation: the MONAI pipeline, the shard batch reader and batch augmentation agree on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclip.config import PreprocessCfg
from medclip.data.batch_aug import BatchAugment
from medclip.data.normalize import NormalizeImaged, normalize_image
from medclip.data.shards import SCALE
from medclip.data.transforms import build_transforms, deterministic_transforms

CFG = PreprocessCfg(image_size=32, mean=0.3, std=0.7)


def test_normalize_image_is_x_minus_mean_over_std_for_arrays_tensors_and_floats():
    x = np.linspace(0, 1, 11, dtype=np.float32)
    assert np.allclose(normalize_image(x, CFG), (x - 0.3) / 0.7, atol=1e-6)
    assert normalize_image(x, CFG).dtype == np.float32
    assert torch.allclose(normalize_image(torch.from_numpy(x), CFG), torch.from_numpy((x - 0.3) / 0.7), atol=1e-6)
    raw = np.array([0, SCALE // 2, SCALE], dtype=np.uint16).astype(np.float32)  # how shards store [0, 1]
    assert np.allclose(normalize_image(raw, CFG, scale=1.0 / SCALE), (raw / SCALE - 0.3) / 0.7, atol=1e-6)
    assert normalize_image(0.0, CFG) == pytest.approx(-0.3 / 0.7)


def test_the_monai_pipeline_and_batch_augmentation_use_it(tiny_manifest):
    from medclip.ingest.manifest import read_manifest

    df, _ = read_manifest(tiny_manifest)
    item = {"image": df["image_path"].iloc[0]}
    pipeline = build_transforms(CFG, train=False)
    assert sum(isinstance(t, NormalizeImaged) for t in pipeline.transforms) == 1
    raw = np.asarray(deterministic_transforms(CFG)[0](item)["image"])  # decode only
    for step in deterministic_transforms(CFG)[1:]:
        raw = np.asarray(step({"image": raw})["image"])
    got = np.asarray(pipeline(item)["image"])
    assert np.allclose(got, (raw - CFG.mean) / CFG.std, atol=1e-5)
    assert BatchAugment(CFG).black == pytest.approx(normalize_image(0.0, CFG))


@pytest.mark.parametrize(("mean", "std"), [(0.5, 0.25), (0.3, 0.3), (0.05, 0.2)])  # CXR, CT, sketch recipes
def test_bit_identical_to_monai_normalize_intensity(mean, std):
    """Subtract-then-divide, as MONAI did before: recipes' images, and so trained figures, do not move by an ulp."""
    from monai.transforms import NormalizeIntensity

    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    cfg = PreprocessCfg(mean=mean, std=std)
    want = np.asarray(NormalizeIntensity(subtrahend=mean, divisor=std)(x))
    assert np.array_equal(normalize_image(x, cfg), want)
    assert np.array_equal(normalize_image(torch.from_numpy(x.copy()), cfg, inplace=True).numpy(), want)
