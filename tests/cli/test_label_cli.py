"""`medclip label` and `medclip manifest --labels`: labels flow from report text into files and the manifest."""

from __future__ import annotations

import pandas as pd

from medclip.cli import main
from medclip.ingest.manifest import read_manifest


def test_label_command_on_a_folder_of_reports(tmp_path, capsys):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "a.txt").write_text("FINDINGS: Small left pleural effusion.\nIMPRESSION: Left effusion.\n")
    (folder / "b.txt").write_text("IMPRESSION: No pneumothorax. No pleural effusion.\n")
    (folder / "c.txt").write_bytes(b"")
    out = tmp_path / "labels.csv"
    assert main(["-q", "label", str(folder), "--out", str(out), "--labels", "chestxray14"]) == 0
    assert "inputs = labelled + rejected: 3 = 2 + 1" in capsys.readouterr().out
    table = pd.read_csv(out, dtype={"id": str}).set_index("id")
    assert table.loc["a", "Effusion"] == 1 and table.loc["b", "Effusion"] == 0
    assert table.loc["b", "Pneumothorax"] == 0


def test_manifest_attaches_labels(tiny_archive, tmp_path):
    assert (
        main(["-q", "manifest", str(tiny_archive), "--out", str(tmp_path / "m"), "--salt", "s", "--labels", "chexpert"])
        == 0
    )
    df, meta = read_manifest(tmp_path / "m")
    assert meta["label_set"] == "chexpert"
    truth = pd.read_csv(tiny_archive / "labels.csv")[["study_id", "pleural_effusion"]]
    joined = df.merge(truth, on="study_id")
    # The labeler reads the report; the synthetic ground truth made the report. They must agree on effusions.
    agree = (joined["Pleural Effusion"].fillna(0).clip(lower=0) == joined["pleural_effusion"]).mean()
    assert agree > 0.95
