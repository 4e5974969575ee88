"""`--csv` evaluation on a folder of PNGs written in the test, through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medclip.cli import main
from medclip.ingest.tables import finding_key, label_columns, read_csv_table


def _write_pngs(folder, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        img = (rng.random((48, 40)) * 120).astype(np.uint8)
        if i % 2:  # "effusion": a bright lower band
            img[30:, :] = 230
        names.append(f"img/{i:02d}.png")
        (folder / "img").mkdir(exist_ok=True)
        Image.fromarray(img).save(folder / names[-1])
    return names


@pytest.fixture()
def png_csv(tmp_path):
    n = 30
    names = _write_pngs(tmp_path, n)
    effusion = [float(i % 2) for i in range(n)]
    effusion[3], effusion[4] = -1.0, np.nan  # uncertain and blank, as in CheXpert
    df = pd.DataFrame(
        {
            "Path": names,
            "report": [
                "Small left pleural effusion." if i % 2 else "No acute cardiopulmonary process." for i in range(n)
            ],
            "Pleural Effusion": effusion,
            "Cardiomegaly": [float(i % 3 == 0) for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "split": ["train"] * 14 + ["val"] * 6 + ["test"] * 10,
        }
    )
    df.to_csv(tmp_path / "mine.csv", index=False)
    return tmp_path / "mine.csv"


def test_csv_table_reads_paths_labels_and_splits(png_csv):
    table = read_csv_table(png_csv)
    assert list(table.labels.columns) == ["pleural_effusion", "cardiomegaly"]
    assert table.labels["pleural_effusion"].iloc[3] == -1 and np.isnan(table.labels["pleural_effusion"].iloc[4])
    assert table.rows["image_path"].iloc[0] == str(png_csv.parent / "img" / "00.png")
    assert table.has_text and table.subset("val").rows.shape[0] == 6


def test_csv_without_split_column_is_split_by_patient(png_csv):
    df = pd.read_csv(png_csv).drop(columns="split")
    df.to_csv(png_csv, index=False)
    rows = read_csv_table(png_csv).rows.assign(patient=df["patient_id"])
    assert set(rows["split"]) <= {"train", "val", "test"}
    assert rows.groupby("patient")["split"].nunique().max() == 1


def test_csv_errors_name_the_problem(png_csv, tmp_path):
    df = pd.read_csv(png_csv)
    df.loc[2, "Path"] = "img/missing.png"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(FileNotFoundError, match="1 of 30 image files do not exist, e.g. .*missing.png"):
        read_csv_table(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="no image-path column 'nope'"):
        read_csv_table(png_csv, image_col="nope")


def test_label_column_detection():
    df = pd.DataFrame({"study_id": [0, 1], "a": [1, -1], "b": [None, 0], "c": ["x", "y"], "d": [2, 3]})
    assert label_columns(df) == ["a", "b"]
    assert finding_key("Pleural Effusion") == finding_key("Pleural_Effusion") == "pleural_effusion"


def test_eval_all_on_a_csv_of_pngs(png_csv, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(
        [
            "-q",
            "eval",
            "all",
            "--checkpoint",
            str(tiny_checkpoint),
            "--csv",
            str(png_csv),
            "--split",
            "test",
            "--bootstrap",
            "50",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    zs = results["zero_shot"]["per_finding"]
    assert set(zs) == {"pleural_effusion", "cardiomegaly"}
    assert zs["pleural_effusion"]["n"] == 10  # test rows only
    assert results["retrieval"]["n_images"] == 10
    assert set(results["probe"]["settings"]) >= {"100%", "1-shot"}
    for name in ("results.md", "roc_curves.png", "retrieval_grid.png", "probe.png", "training_curves.png"):
        assert (out / name).is_file(), name
    assert "![roc_curves](roc_curves.png)" in (out / "results.md").read_text()
