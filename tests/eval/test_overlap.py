"""A checkpoint remembers its training patients (salted keys only); eval and index build refuse an overlapping split."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from medclip.cli import main
from medclip.config import EvalCfg
from medclip.eval.overlap import TrainingOverlapError, check_training_overlap
from medclip.eval.pipeline import evaluate
from medclip.ingest.manifest import build_manifest, read_manifest, write_manifest
from medclip.ingest.tables import load_table
from medclip.ingest.trained_on import TRAINED_ON_NAME


def raw_ids(archive: Path) -> set[str]:
    ids = set()
    for path in archive.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ids |= {str(ds.PatientID), str(ds.StudyInstanceUID)}
    return ids


def eval_argv(ckpt: Path, out: Path, *args: str, source: tuple[str, str]) -> list[str]:
    return ["-q", "eval", "retrieval", "--checkpoint", str(ckpt), *source, "--out", str(out), "--bootstrap", "0",
            *args, "plots=false", "cache=false"]  # fmt: skip


def keys_of(df: pd.DataFrame, split: str, column: str) -> set[str]:
    return set(df.loc[df["split"] == split, column]) if split != "all" else set(df[column])


def test_checkpoint_records_its_training_keys_and_no_raw_ids(tiny_checkpoint, tiny_manifest, tiny_archive):
    record = json.loads((tiny_checkpoint / TRAINED_ON_NAME).read_text())
    df, meta = read_manifest(tiny_manifest)
    assert set(record["patient_keys"]) == keys_of(df, "train", "patient_key")
    assert set(record["study_keys"]) == keys_of(df, "train", "study_key") and record["study_keys"]
    assert record["salt_fingerprint"] == meta["salt_fingerprint"] and record["manifest_hash"] == meta["content_hash"]
    ids = raw_ids(tiny_archive)
    assert len(ids) > 20
    for path in tiny_checkpoint.glob("*.json"):
        text = path.read_text()
        assert not [i for i in ids if i in text], path


def test_eval_refuses_a_split_of_training_patients(tiny_checkpoint, tiny_manifest, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("medclip.eval.embeddings.Embedder.embed", lambda *a, **k: pytest.fail("embedded first"))
    df, _ = read_manifest(tiny_manifest)
    n = len(keys_of(df, "train", "patient_key"))
    argv = eval_argv(tiny_checkpoint, tmp_path / "ev", "--split", "train", source=("--manifest", str(tiny_manifest)))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"refusing to evaluate: {n} of {n} patients" in err and "of split 'train'" in err
    assert "--allow-overlap" in err and str(tiny_checkpoint) in err


def test_eval_on_held_out_patients_passes_and_allow_overlap_records_counts(tiny_checkpoint, tiny_manifest, tmp_path):
    df, _ = read_manifest(tiny_manifest)
    source = ("--manifest", str(tiny_manifest))
    assert main(eval_argv(tiny_checkpoint, tmp_path / "test", "--split", "test", source=source)) == 0
    results = json.loads((tmp_path / "test" / "results.json").read_text())
    assert results["overlap_check"] == "passed"
    assert results["training_overlap"]["patients"] == 0
    assert results["training_overlap"]["of_patients"] == len(keys_of(df, "test", "patient_key"))
    argv = eval_argv(tiny_checkpoint, tmp_path / "all", "--split", "all", "--allow-overlap", source=source)
    assert main(argv) == 0
    results = json.loads((tmp_path / "all" / "results.json").read_text())
    assert results["overlap_check"] == "overlap allowed"
    overlap = results["training_overlap"]
    assert overlap["patients"] == len(keys_of(df, "train", "patient_key")) and overlap["of_patients"] == len(
        set(df["patient_key"])
    )
    assert overlap["studies"] == len(keys_of(df, "train", "study_key")) and overlap["salt_compared"] is True


def test_a_csv_with_patient_keys_is_checked_too(tiny_checkpoint, tiny_manifest, tmp_path, capsys):
    df, _ = read_manifest(tiny_manifest)
    train = df[df["split"] == "train"].head(6)
    csv = tmp_path / "mine.csv"
    pd.DataFrame({"image_path": train["image_path"], "text": train["text"], "patient_key": train["patient_key"],
                  "split": "test"}).to_csv(csv, index=False)  # fmt: skip
    assert main(eval_argv(tiny_checkpoint, tmp_path / "ev", "--split", "test", source=("--csv", str(csv)))) == 2
    assert f"{train['patient_key'].nunique()} of {train['patient_key'].nunique()} patients" in capsys.readouterr().err


def test_other_salt_is_refused_unless_allowed_and_an_old_checkpoint_skips(
    tiny_checkpoint, tiny_archive, tiny_manifest, tmp_path, caplog
):
    # The same archive rebuilt with another salt: keys cannot be compared, so the check cannot pass it as held out.
    other = tmp_path / "other"
    write_manifest(build_manifest(tiny_archive, salt="another-site", show_progress=False), other)
    table = load_table(manifest=other)
    with pytest.raises(TrainingOverlapError, match="another patient salt.*--allow-overlap"):
        check_training_overlap(tiny_checkpoint, table, "all")
    with caplog.at_level(logging.WARNING, logger="medclip.eval.overlap"):
        assert check_training_overlap(tiny_checkpoint, table, "all", allow=True) == {
            "overlap_check": "skipped: different patient salt"
        }
    assert "different patient salt" in caplog.text
    old = tmp_path / "old_ckpt"
    shutil.copytree(tiny_checkpoint, old)
    (old / TRAINED_ON_NAME).unlink()
    same = load_table(manifest=tiny_manifest)
    assert check_training_overlap(old, same, "all")["overlap_check"].startswith("skipped: the checkpoint records no")
    with pytest.raises(TrainingOverlapError, match="refusing to evaluate"):
        check_training_overlap(tiny_checkpoint, same, "all")
    cfg = EvalCfg(tasks=["retrieval"], checkpoint=str(old), manifest=str(tiny_manifest), split="all", bootstrap=0)
    assert evaluate(cfg, show_progress=False)["overlap_check"].startswith("skipped")


def test_index_build_refuses_training_patients(tiny_checkpoint, tiny_manifest, tmp_path, capsys):
    argv = ["-q", "index", "build", "--checkpoint", str(tiny_checkpoint), "--manifest", str(tiny_manifest), "--out"]
    assert main([*argv, str(tmp_path / "all")]) == 2  # the default split is "all"
    err = capsys.readouterr().err
    assert "refusing to build the case index" in err and "of split 'all'" in err and "--allow-overlap" in err
    assert not (tmp_path / "all" / "index.faiss").exists()
    assert main([*argv, str(tmp_path / "test"), "--split", "test"]) == 0
    info = json.loads((tmp_path / "test" / "index.json").read_text())
    assert info["overlap_check"] == "passed" and info["training_overlap"]["patients"] == 0
