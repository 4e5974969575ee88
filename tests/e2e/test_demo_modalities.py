"""The CT and sketch demos end to end at tiny sizes, through the same CLI as the chest X-ray demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="module")
def ct_run(ct_demo_run):
    return ct_demo_run


def test_ct_demo_trains_on_volumes_and_reports_finding_auroc(ct_run):
    out = ct_run
    results = json.loads((out / "results.json").read_text())
    assert set(results["zero_shot"]["per_finding"]) >= {"lung_nodule", "emphysema", "pericardial_effusion"}
    manifest = pd.read_parquet(out / "manifest" / "manifest.parquet")
    assert (manifest["modality"] == "CT").all() and manifest["study_id"].is_unique  # one row per volume
    meta = json.loads((out / "train" / "final" / "medclip_config.json").read_text())
    assert meta["preprocess"]["spatial_dims"] == 3 and meta["preprocess"]["volume_shape"] == [16, 32, 32]


def _serve(run, tmp_path):
    from fastapi.testclient import TestClient

    from medclip.config import IndexBuildCfg
    from medclip.eval.index import build_case_index
    from medclip.serve.app import create_app
    from medclip.serve.engine import CaseService

    cfg = IndexBuildCfg(
        checkpoint=str(run / "train" / "final"), manifest=str(run / "manifest"), out_dir=str(tmp_path / "index"),
        allow_overlap=True,
    )  # fmt: skip
    build_case_index(cfg, show_progress=False)
    service = CaseService(run / "train" / "final", tmp_path / "index")
    return service, TestClient(create_app(service))


def _thumbnail(client):
    import io

    import numpy as np
    from PIL import Image

    r = client.get("/api/thumbnail/0")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert max(img.shape[:2]) == 256 and img.std() > 5
    return img


def test_serve_a_sketch_index(sketch_run, tmp_path):
    """The page's API over the sketch demo: search by symptoms, thumbnails, and screening with its prompt set in the
    checkpoint's multiclass mode."""
    pytest.importorskip("fastapi")
    service, client = _serve(sketch_run, tmp_path)
    info = client.get("/api/info").json()
    assert info["zero_shot_mode"] == "multiclass" and "arm_left" in info["findings"]
    answer = client.get("/api/search", params={"q": "pain in the left arm", "k": 4}).json()
    assert len(answer["results"]) == 4
    img = _thumbnail(client)
    assert np.median(img) > 128  # paper white, ink dark: the model's inverted input is turned back for people
    sketch = service.index.entries["image_path"][0]
    r = client.post("/api/screen", files={"file": ("s.png", Path(sketch).read_bytes())})
    assert r.status_code == 200, r.text
    screening = r.json()["screening"]
    assert abs(sum(row["score"] for row in screening) - 1) < 1e-3  # multiclass: a softmax over the regions


def test_serve_a_ct_index(ct_run, tmp_path):
    """Over the CT demo: thumbnails are a volume's middle slice; a study is uploaded as a ZIP of its DICOM series
    or as a NIfTI file and screened with the CT prompts."""
    import io
    import zipfile

    pytest.importorskip("fastapi")
    service, client = _serve(ct_run, tmp_path)
    info = client.get("/api/info").json()
    assert info["input"] == "volume" and "lung_nodule" in info["findings"]
    _thumbnail(client)
    paths = [Path(p) for p in service.index.entries["image_path"]]
    nifti = next(p for p in paths if p.name.endswith((".nii", ".nii.gz")))
    r = client.post("/api/screen", params={"k": 3}, files={"file": (nifti.name, nifti.read_bytes())})
    assert r.status_code == 200, r.text
    assert {row["finding"] for row in r.json()["screening"]} == set(info["findings"])
    series = next(p for p in paths if p.is_dir())
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        for f in sorted(series.iterdir()):
            z.write(f, f"export/{f.name}")
    r = client.post("/api/screen", params={"k": 3}, files={"file": ("series.zip", zipped.getvalue())})
    assert r.status_code == 200, r.text
    own = r.json()["results"][0]
    assert own["entry"] == paths.index(series) and own["score"] > 0.99  # the same volume, the same preprocessing
    files = [("file", (f.name, f.read_bytes())) for f in sorted(series.iterdir())]
    assert client.post("/api/screen", files=files).status_code == 200  # the series as several files
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # a 2-D image for a volume index
    assert client.post("/api/screen", files={"file": ("x.png", png)}).status_code == 415
