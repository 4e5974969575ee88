from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclip.errors import InputError
from medclip.eval.grounding_metrics import (
    GroundingItem,
    box_mask,
    cnr,
    grounding_scores,
    iou_at,
    pointing_hit,
    random_floor,
    read_grounding_csv,
)
from medclip.eval.plots import overlay_png, plot_grounding_grid

MSCXR_HEADER = "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height\n"


def peaked(shape: tuple[int, int], at: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    sim = np.random.default_rng(seed).random(shape) * 0.1
    sim[at] = 1.0
    return sim


# ---------------------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("boxes", "shape", "size", "rows", "cols"),
    [
        ([(2, 3, 4, 5)], (10, 10), None, slice(3, 8), slice(2, 6)),  # same size: the box's pixels exactly
        ([(100, 200, 100, 100)], (10, 10), (1000, 1000), slice(2, 3), slice(1, 2)),  # downscaled 100x
        ([(40, 40, 40, 20)], (10, 10), (400, 200), slice(2, 3), slice(1, 2)),  # x and y scale differently
        ([(5, 5, 10, 10)], (10, 10), (100, 100), slice(0, 2), slice(0, 2)),  # partial cells count
        ([(-3, 8, 5, 9)], (10, 10), None, slice(8, 10), slice(0, 2)),  # clipped to the image
    ],
)
def test_box_mask_2d(boxes, shape, size, rows, cols):
    expected = np.zeros(shape, dtype=bool)
    expected[rows, cols] = True
    np.testing.assert_array_equal(box_mask(boxes, shape, box_image_size=size), expected)


def test_box_mask_is_the_union_of_boxes():
    mask = box_mask([(0, 0, 2, 2), (1, 1, 2, 2)], (4, 4))
    assert mask.sum() == 7 and mask[0, 0] and mask[2, 2] and not mask[0, 2]
    assert not box_mask([], (3, 3)).any()


def test_box_mask_3d_and_scaling():
    expected = np.zeros((6, 5, 4), dtype=bool)  # (D, H, W)
    expected[3:5, 2:4, 1:3] = True
    np.testing.assert_array_equal(box_mask([(1, 2, 3, 2, 2, 2)], (6, 5, 4)), expected)
    scaled = box_mask([(2, 4, 6, 4, 4, 4)], (6, 5, 4), box_image_size=(8, 10, 12))  # (w, h, d) all halved
    np.testing.assert_array_equal(scaled, expected)


def test_box_mask_rejects_a_box_of_the_wrong_length():
    with pytest.raises(InputError, match="needs 6"):
        box_mask([(1, 2, 3, 4)], (4, 4, 4))
    with pytest.raises(InputError, match="box_image_size"):
        box_mask([(1, 2, 3, 4)], (4, 4), box_image_size=(4, 4, 4))


# ---------------------------------------------------------------------------------------------------------- per map


def test_pointing_hits_inside_and_misses_outside():
    mask = box_mask([(4, 4, 3, 3)], (12, 12))
    assert pointing_hit(peaked((12, 12), (5, 5)), mask)
    assert not pointing_hit(peaked((12, 12), (0, 11)), mask)
    flat = np.ones((12, 12))  # ties: the first maximum, (0, 0), decides
    assert not pointing_hit(flat, mask) and pointing_hit(flat, box_mask([(0, 0, 1, 1)], (12, 12)))


def test_cnr_hand_computed():
    sim = np.array([2.0, 4.0, 0.0, 0.0, 1.0, 1.0])
    mask = np.array([True, True, False, False, False, False])
    # inside mean 3, var 1; outside mean 0.5, var 0.25
    assert cnr(sim, mask) == pytest.approx(2.5 / math.sqrt(1.25))


def test_cnr_of_a_noisy_indicator_matches_an_independent_formula():
    mask = box_mask([(5, 5, 8, 6)], (20, 24))
    sim = mask.astype(float) + np.random.default_rng(3).normal(0, 0.3, mask.shape)
    inside, outside = sim[mask].tolist(), sim[~mask].tolist()
    expected = abs(statistics.fmean(inside) - statistics.fmean(outside)) / math.sqrt(
        statistics.pvariance(inside) + statistics.pvariance(outside)
    )
    assert cnr(sim, mask) == pytest.approx(expected)
    assert cnr(sim, mask) == pytest.approx(1 / math.sqrt(2 * 0.3**2), rel=0.15)  # the population value


def test_cnr_is_nan_when_undefined():
    mask = box_mask([(0, 0, 2, 2)], (4, 4))
    assert math.isnan(cnr(mask.astype(float), mask))  # both sides constant: no noise
    assert math.isnan(cnr(np.random.default_rng(0).random((4, 4)), np.ones((4, 4), dtype=bool)))  # no outside


def test_iou_at():
    mask = box_mask([(2, 2, 4, 3)], (10, 10))
    np.testing.assert_allclose(iou_at(mask.astype(float), mask, [0.1, 0.5, 0.9]), 1.0)
    line, half = np.arange(10) / 9, np.arange(10) >= 5
    # > 0.5 keeps 5..9 (the mask); > 0.05 keeps 1..9 (9 pixels, 5 of them in the mask); > 0.95 keeps 9 only
    np.testing.assert_allclose(iou_at(line * 7 - 3, half, [0.5, 0.05, 0.95]), [1.0, 5 / 9, 1 / 5])
    assert iou_at(np.zeros(10), half, [0.5])[0] == 0.0  # a constant map predicts nothing


def test_map_and_mask_must_agree():
    with pytest.raises(InputError, match="differ in shape"):
        pointing_hit(np.zeros((4, 4)), np.zeros((4, 5), dtype=bool))
    with pytest.raises(InputError, match="NaN"):
        cnr(np.full((2, 2), np.nan), np.eye(2, dtype=bool))


# ---------------------------------------------------------------------------------------------------------- over items


def dataset(n: int, *, seed: int = 0, good: float = 0.8):
    """Maps peaked in their box for a fraction ``good`` of items, elsewhere for the rest."""
    rng = np.random.default_rng(seed)
    sims, masks = [], []
    for i in range(n):
        x, y = rng.integers(2, 20, size=2)
        mask = box_mask([(x, y, 6, 6)], (32, 32))
        sim = rng.normal(0, 0.2, (32, 32))
        if i < good * n:
            sim += mask
        else:
            sim[0:2, 28:32] += 1.5  # a blob outside every box
        sims.append(sim)
        masks.append(mask)
    return sims, masks


def test_grounding_scores_values_cis_and_threshold():
    sims, masks = dataset(60)
    out = grounding_scores(sims, masks, n_resamples=300, seed=1)
    pairs = list(zip(sims, masks, strict=True))
    assert out["n"] == 60
    assert out["pointing_game"]["value"] == pytest.approx(np.mean([pointing_hit(s, m) for s, m in pairs]))
    assert out["cnr"]["value"] == pytest.approx(np.mean([cnr(s, m) for s, m in pairs]))
    for key in ("pointing_game", "cnr", "miou"):
        lo, hi = out[key]["ci"]
        assert lo <= out[key]["value"] <= hi and lo < hi
    curve = np.array(out["miou"]["curve"])
    assert out["miou"]["value"] == pytest.approx(curve.max())
    assert out["miou"]["threshold"] == pytest.approx(out["miou"]["thresholds"][int(curve.argmax())])
    ious = np.array([iou_at(s, m, [out["miou"]["threshold"]])[0] for s, m in pairs])
    assert out["miou"]["value"] == pytest.approx(ious.mean())
    assert grounding_scores(sims, masks, n_resamples=300, seed=1) == out  # seeded


def test_grounding_scores_by_category():
    sims, masks = dataset(20, good=0.5)  # the first 10 are good
    cats = ["good"] * 10 + ["bad"] * 10
    out = grounding_scores(sims, masks, categories=cats, n_resamples=50)
    assert list(out["by_category"]) == ["good", "bad"]
    good, bad = out["by_category"]["good"], out["by_category"]["bad"]
    assert good["n"] == bad["n"] == 10
    assert good["pointing_game"]["value"] == 1.0 and bad["pointing_game"]["value"] == 0.0
    assert good["miou"]["threshold"] == out["miou"]["threshold"]  # the overall threshold, not chosen per category
    with pytest.raises(InputError, match="categories"):
        grounding_scores(sims, masks, categories=cats[:3])


def test_grounding_scores_rejects_mismatches_and_empty_masks():
    sims, masks = dataset(3)
    with pytest.raises(InputError, match="3 similarity maps but 2 masks"):
        grounding_scores(sims, masks[:2])
    masks[1] = np.zeros_like(masks[1])
    with pytest.raises(InputError, match="item 1: its mask is empty"):
        grounding_scores(sims, masks)


def test_random_floor_is_chance_and_below_a_model():
    rng = np.random.default_rng(5)
    masks = [box_mask([(0, 0, int(rng.integers(3, 15)), 20)], (20, 20)) for _ in range(20)]  # area 15% .. 70%
    floor = random_floor(masks, seed=2, n_maps=20, n_resamples=200)
    chance = np.mean([m.mean() for m in masks])
    assert floor["chance_pointing"] == pytest.approx(chance)
    assert floor["pointing_game"]["value"] == pytest.approx(chance, abs=0.07)
    assert abs(floor["cnr"]["value"]) < 0.2 and floor["n_maps"] == 20
    sims, model_masks = dataset(20)
    model = grounding_scores(sims, model_masks, n_resamples=50)
    model_floor = random_floor(model_masks, n_maps=5, n_resamples=50)
    assert model["pointing_game"]["value"] > model_floor["pointing_game"]["value"] + 0.5
    assert model["miou"]["value"] > model_floor["miou"]["value"]


# ---------------------------------------------------------------------------------------------------------- CSV


def test_csv_groups_boxes_of_one_phrase_and_resolves_paths(tmp_path: Path):
    csv = tmp_path / "boxes.csv"
    csv.write_text(
        "image,phrase,x,y,w,h\n"
        "a.png,left effusion,1,2,3,4\n"
        "b.png,left effusion,0,0,5,5\n"
        "a.png,left  effusion,10,20,30,40\n"  # the same phrase, spaced differently
        "/abs/c.png,nodule,1.5,2.5,3,4\n"
    )
    items = read_grounding_csv(csv)
    assert items == [
        GroundingItem(str(tmp_path / "a.png"), "left effusion", None, [(1, 2, 3, 4), (10, 20, 30, 40)], None, (1, 3)),
        GroundingItem(str(tmp_path / "b.png"), "left effusion", None, [(0, 0, 5, 5)], None, (2,)),
        GroundingItem("/abs/c.png", "nodule", None, [(1.5, 2.5, 3, 4)], None, (4,)),
    ]


def test_csv_mscxr_layout(tmp_path: Path):
    csv = tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv"
    csv.write_text(
        MSCXR_HEADER + "d1,Pneumonia,right lower lobe opacity,files/p1/s1/d1.jpg,100,200,50,60,2544,3056\n"
        "d1,Pneumonia,right lower lobe opacity,files/p1/s1/d1.jpg,400,500,70,80,2544,3056\n"
        "d2,Cardiomegaly,enlarged heart,files/p2/s2/d2.jpg,300,300,900,700,3056,2544\n"
    )
    items = read_grounding_csv(csv, image_root="/data/mimic-cxr-jpg")
    assert [i.phrase for i in items] == ["right lower lobe opacity", "enlarged heart"]
    first = items[0]
    assert first.image == "/data/mimic-cxr-jpg/files/p1/s1/d1.jpg" and first.category == "Pneumonia"
    assert first.boxes == [(100, 200, 50, 60), (400, 500, 70, 80)] and first.image_size == (2544, 3056)
    mask = box_mask(first.boxes, (3056 // 8, 2544 // 8), box_image_size=first.image_size)
    assert mask.sum() == pytest.approx((50 * 60 + 70 * 80) / 64, rel=0.3)


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("image,x,y,w,h\na.png,1,2,3,4\n", {}, r"no phrase column; expected one of phrase, label_text, text"),
        ("path,text,x,y,w\na.png,t,1,2,3\n", {}, r"no box column\(s\) \['h'\]"),
        ("path,text,x,y,w,h\na.png,t,1,2,3,4\n", {"image_col": "file"}, r"no column 'file' \(given as image_col\)"),
        ("path,text,x,y,w,h\na.png,t,1,2,3,4\nb.png,t,1,oops,3,4\n", {}, r"row 2 \(line 3\): y='oops'"),
        ("path,text,x,y,w,h\na.png,t,1,2,-3,4\n", {}, r"row 1 \(line 2\): box w=-3"),
        ("path,text,x,y,w,h,image_width\na.png,t,1,2,3,4,10\n", {}, "both image_width and image_height"),
        ("path,text,category,x,y,w,h\na.png,t,A,1,2,3,4\na.png,t,B,1,2,3,4\n", {}, "rows 1 and 2 .* category"),
    ],
)
def test_csv_errors_name_the_file_and_the_problem(tmp_path: Path, text, kwargs, match):
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(InputError, match=match) as info:
        read_grounding_csv(csv, **kwargs)
    assert str(csv) in str(info.value)


# ---------------------------------------------------------------------------------------------------------- plots


def overlay_item(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    image = rng.random((64, 48))
    heat = box_mask([(10, 20, 15, 12)], (16, 12), box_image_size=(48, 64)).astype(float)  # coarser than the image
    return {"image": image, "heatmap": heat, "boxes": [(10, 20, 15, 12)], "title": f"phrase {seed} (hit)"}


def assert_png_drawn(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.size > 0 and pixels.std() > 0


def test_plot_grounding_grid(tmp_path: Path):
    out = plot_grounding_grid([overlay_item(i) for i in range(5)], tmp_path / "grid.png", ncols=3)
    assert out == tmp_path / "grid.png"
    assert_png_drawn(out)
    assert plot_grounding_grid([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_overlay_png(tmp_path: Path):
    item = overlay_item(0)
    out = overlay_png(item["image"], item["heatmap"], tmp_path / "sub" / "overlay.png", boxes=item["boxes"], title="x")
    assert_png_drawn(out)
    big = np.random.default_rng(1).random((512, 400))
    out = overlay_png(big, big, tmp_path / "big.png", colorbar=False)
    w, h = Image.open(out).size
    assert 300 <= w <= 600 and 350 <= h <= 700  # about the image's size
