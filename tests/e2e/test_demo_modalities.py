"""The CT and sketch demos end to end at tiny sizes, through the same CLI as the chest X-ray demo."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medclip.cli import main


@pytest.fixture(scope="module")
def sketch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sketch") / "run"
    code = main(
        [
            "-q",
            "demo",
            "--modality",
            "sketch",
            "--out",
            str(out),
            "--studies",
            "60",
            "train.max_steps=3",
            "train.batch_size=16",
            "preprocess.image_size=64",
        ]
    )
    assert code == 0
    return out


def test_sketch_demo_reports_region_auroc_and_retrieval(sketch_run):
    results = json.loads((sketch_run / "results.json").read_text())
    assert results["modality"] == "sketch"
    assert set(results["zero_shot"]["per_finding"]) >= {"arm_left", "arm_right", "head", "lower_back"}
    assert results["zero_shot"]["mode"] == "multiclass"  # configs/sketch.yaml's eval.mode reaches the evaluation
    assert "R@10" in results["retrieval"]["text_to_image"]
    manifest = pd.read_parquet(sketch_run / "manifest" / "manifest.parquet")
    assert (manifest["modality"] == "SKETCH").all() and len(manifest) == 60


def test_sketch_index_answers_a_symptom_description(sketch_run, capsys):
    index = sketch_run / "index"
    assert (
        main(
            [
                "-q",
                "index",
                "build",
                "--checkpoint",
                str(sketch_run / "train" / "final"),
                "--manifest",
                str(sketch_run / "manifest"),
                "--out",
                str(index),
                "--split",
                "test",  # held-out patients; the default "all" holds the training ones and is refused
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["-q", "index", "query", str(index), "chest pain in left side", "-k", "3"]) == 0
    answer = json.loads((index / "last_query.json").read_text())
    assert len(answer["results"]) == 3


def test_ct_demo_trains_on_volumes_and_reports_finding_auroc(tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "-q",
            "demo",
            "--modality",
            "ct",
            "--out",
            str(out),
            "--studies",
            "16",
            "train.max_steps=2",
            "train.batch_size=4",
            "preprocess.volume_shape=[16,32,32]",
            "preprocess.target_spacing=[10,11,11]",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["zero_shot"]["per_finding"]) >= {"lung_nodule", "emphysema", "pericardial_effusion"}
    manifest = pd.read_parquet(out / "manifest" / "manifest.parquet")
    assert (manifest["modality"] == "CT").all() and manifest["study_id"].is_unique  # one row per volume
    meta = json.loads((out / "train" / "final" / "medclip_config.json").read_text())
    assert meta["preprocess"]["spatial_dims"] == 3 and meta["preprocess"]["volume_shape"] == [16, 32, 32]
