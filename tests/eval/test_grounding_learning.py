"""Learning check for grounding: a small CXR demo trained with the local word-region loss points at its held-out
lesion boxes far better than the same recipe trained without it (whose maps come from the global head per cell).

Slow (two short trainings, a few minutes on 2 CPU cores): ``pytest -m slow tests/eval/test_grounding_learning.py``.
The full-size comparison is ``scripts/bench_grounding.py``.
"""

from __future__ import annotations

import pytest

from medclip.config import DemoCfg
from medclip.demo import run_demo

RECIPE = ["train.epochs=10"]
LOCAL = ["loss.local_weight=1.0", "model.local_dim=64", "model.image.local_stride=8"]


@pytest.mark.slow
def test_the_local_loss_teaches_maps_to_point_at_the_lesions(tmp_path):
    runs = {}
    for name, extra in (("global", []), ("local", LOCAL)):
        cfg = DemoCfg(modality="cxr", out_dir=str(tmp_path / name), studies=400, seed=0)
        runs[name] = run_demo(cfg, overrides=[*RECIPE, *extra], show_progress=False)["grounding"]
    local, base = runs["local"], runs["global"]
    assert (local["method"], base["method"]) == ("local", "global")
    # at this size (10 epochs of 400 studies) the local maps point at about 0.2 of the lesions, the global ones at
    # almost none, random maps at 0.07; the full demo reaches 0.81 (README)
    floor = local["random_floor"]["pointing_game"]["value"]
    assert local["pointing_game"]["ci"][0] > max(base["pointing_game"]["ci"][1], floor)
    assert local["cnr"]["ci"][0] > base["cnr"]["ci"][1]
