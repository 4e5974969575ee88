"""Patient salt kept per output folder, splits pinned across rebuilds, and split tables (issue #18, item 4)."""

from __future__ import annotations

import gzip
import json
import stat
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from medclip.cli import main
from medclip.config import ManifestCfg
from medclip.errors import InputError
from medclip.ingest.manifest import build_manifest, manifest_from_config, write_manifest
from medclip.ingest.split_table import norm_patient_id, norm_study_id, read_split_table
from medclip.ingest.splits import (
    HISTORY_NAME,
    SALT_ENV,
    SALT_FILE,
    assign_split,
    patient_key,
    resolve_salt,
    salt_fingerprint,
)

REPORT = "FINDINGS: Lungs are clear.\nIMPRESSION: No acute disease.\n"


@pytest.fixture(autouse=True)
def _no_env_salt(monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)


def add_study(root: Path, subject: int, study: int) -> None:
    """One MIMIC-CXR-JPG study: files/pNN/p<subject>/s<study>/<dicom_id>.jpg + s<study>.txt."""
    folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
    (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
    Image.new("L", (48, 40), 128).save(folder / f"s{study}" / f"d{study}.jpg")
    (folder / f"s{study}.txt").write_text(REPORT)


def mimic_archive(root: Path, patients: range, *, study_base: int = 50000000) -> Path:
    for p in patients:
        add_study(root, 10000000 + p, study_base + p)
    return root


def manifest(out: Path, *args: str) -> tuple[pd.DataFrame, dict]:
    code = main(["-q", "manifest", *args, "--layout", "mimic-cxr-jpg", "--no-verify", "--out", str(out)])
    assert code == 0
    return pd.read_parquet(out / "manifest.parquet"), json.loads((out / "manifest.meta.json").read_text())


def study_splits(df: pd.DataFrame) -> dict[str, str]:
    return dict(zip(df["study_id"], df["split"], strict=True))


# ---------------------------------------------------------------- the salt


def test_salt_is_created_once_kept_secret_and_reused(tmp_path):
    archive = mimic_archive(tmp_path / "a", range(12))
    first, meta = manifest(tmp_path / "m", str(archive))
    salt_file = tmp_path / "m" / SALT_FILE
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    salt = salt_file.read_text().strip()
    assert meta["salt_fingerprint"] == salt_fingerprint(salt) and len(meta["salt_fingerprint"]) == 12
    assert set(first["patient_key"]) == {patient_key(str(10000000 + p), salt) for p in range(12)}
    again, _ = manifest(tmp_path / "m", str(archive))
    assert list(again["patient_key"]) == list(first["patient_key"]) and salt_file.read_text().strip() == salt
    for path in (tmp_path / "m").rglob("*"):  # the salt is only in its own file
        assert not path.is_file() or path.name == SALT_FILE or salt.encode() not in path.read_bytes(), path


def _dataset_bytes(path) -> dict:
    return {f.relative_to(path): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_a_different_salt_is_refused_unless_reshuffle(tmp_path, capsys):
    archive = mimic_archive(tmp_path / "a", range(12))
    manifest(tmp_path / "m", str(archive))
    before = _dataset_bytes(tmp_path / "m" / "manifest.parquet")
    capsys.readouterr()
    argv = ["-q", "manifest", str(archive), "--layout", "mimic-cxr-jpg", "--no-verify", "--out", str(tmp_path / "m")]
    assert main([*argv, "--salt", "zebra-secret"]) == 2
    err = capsys.readouterr().err
    assert "another patient salt" in err and "--reshuffle" in err and len(err.strip().splitlines()) == 1
    assert "zebra" not in err  # the salt itself is never printed
    assert _dataset_bytes(tmp_path / "m" / "manifest.parquet") == before
    df, meta = manifest(tmp_path / "m", str(archive), "--salt", "zebra-secret", "--reshuffle")
    assert meta["salt_fingerprint"] == salt_fingerprint("zebra-secret") and meta["splits"]["pinned"] == 0


def test_salt_file_is_shared_between_output_folders(tmp_path):
    archive = mimic_archive(tmp_path / "a", range(8))
    shared = tmp_path / "secrets" / "site.salt"
    one, meta_one = manifest(tmp_path / "m1", str(archive), "--salt-file", str(shared))
    two, meta_two = manifest(tmp_path / "m2", str(archive), "--salt-file", str(shared))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600 and not (tmp_path / "m1" / SALT_FILE).exists()
    assert meta_one["salt_fingerprint"] == meta_two["salt_fingerprint"]
    assert list(one["patient_key"]) == list(two["patient_key"])
    with pytest.raises(InputError, match="not both"):
        resolve_salt(tmp_path / "m3", "x", shared)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        resolve_salt(tmp_path / "m3", salt_file=tmp_path / "empty")


def test_build_manifest_keeps_working_without_an_output_folder(tmp_path):
    archive = mimic_archive(tmp_path / "a", range(6))
    result = build_manifest(archive, layout="mimic-cxr-jpg", salt="s", verify_pixels=False, show_progress=False)
    assert result.meta["salt_fingerprint"] == salt_fingerprint("s")
    assert list(result.manifest["split"]) == [assign_split(k) for k in result.manifest["patient_key"]]
    assert result.meta["splits"] == {"source": "hash", "file": None, "sha256": None, "pinned": 0, "from_table": 0,
                                     "hashed": 6}  # fmt: skip
    assert result.manifest["study_key"].str.fullmatch("[0-9a-f]{20}").all()
    assert not set(result.manifest["study_key"]) & set(result.manifest["study_id"])


# ---------------------------------------------------------------- pinning on rebuild


def test_new_studies_never_move_an_old_patient(tmp_path, capsys):
    archive = mimic_archive(tmp_path / "a", range(40))
    old, _ = manifest(tmp_path / "m", str(archive))
    # More studies arrive: a second study for 20 old patients, and 20 new patients.
    for p in range(20):
        add_study(archive, 10000000 + p, 51000000 + p)
    mimic_archive(archive, range(40, 60))
    capsys.readouterr()
    new, meta = manifest(tmp_path / "m", str(archive))
    assert len(new) == 80 and meta["splits"]["pinned"] == 40 and meta["splits"]["hashed"] == 20
    assert "patient splits: 40 pinned to the previous manifest, 20 by hash" in capsys.readouterr().out
    after = study_splits(new)
    assert all(after[s] == split for s, split in study_splits(old).items())
    old_patient = dict(zip(old["patient_key"], old["split"], strict=True))
    assert all(old_patient.get(k, s) == s for k, s in zip(new["patient_key"], new["split"], strict=True))
    assert new.groupby("patient_key")["split"].nunique().max() == 1
    # Without the folder's salt (a fresh folder, as before this change) the same rebuild moves old studies.
    fresh, _ = manifest(tmp_path / "fresh", str(archive))
    moved = sum(study_splits(fresh)[s] != split for s, split in study_splits(old).items())
    assert moved > 0


def test_pinned_patients_keep_their_split_against_a_new_table(tmp_path):
    archive = mimic_archive(tmp_path / "a", range(20))
    old, _ = manifest(tmp_path / "m", str(archive))
    flipped = {"train": "test", "val": "train", "test": "train"}
    table = pd.DataFrame({"subject_id": [str(10000000 + p) for p in range(20)]})
    table["split"] = [flipped[old_split] for old_split in old.sort_values("study_id")["split"]]
    table.to_csv(tmp_path / "split.csv", index=False)
    new, meta = manifest(tmp_path / "m", str(archive), "--splits", str(tmp_path / "split.csv"))
    assert study_splits(new) == study_splits(old)
    assert meta["splits"]["pinned"] == 20 and meta["splits"]["pinned_against_table"] == 20
    again, meta = manifest(tmp_path / "m", str(archive), "--splits", str(tmp_path / "split.csv"), "--reshuffle")
    assert meta["splits"]["from_table"] == 20 and all(a != b for a, b in zip(
        again.sort_values("study_id")["split"], old.sort_values("study_id")["split"], strict=True))  # fmt: skip


def test_a_patient_missing_from_one_rebuild_keeps_its_split(tmp_path):
    # Patients 0-4 are absent from the second build (a folder not synced yet) while a split table arrives that puts
    # everyone in test: they keep their first split when they come back (split_history.parquet), the rest too.
    archive = mimic_archive(tmp_path / "a", range(20))
    first, _ = manifest(tmp_path / "m", str(archive))
    pd.DataFrame({"subject_id": [str(10000000 + p) for p in range(20)], "split": "test"}).to_csv(
        tmp_path / "t.csv", index=False
    )
    partial = mimic_archive(tmp_path / "b", range(5, 20))
    manifest(tmp_path / "m", str(partial), "--splits", str(tmp_path / "t.csv"))
    third, meta = manifest(tmp_path / "m", str(archive), "--splits", str(tmp_path / "t.csv"))
    assert study_splits(third) == study_splits(first)
    assert meta["splits"]["pinned"] == 20
    history = pd.read_parquet(tmp_path / "m" / HISTORY_NAME)
    assert set(history.columns) == {"patient_key", "split"} and len(history) == 20


# ---------------------------------------------------------------- split tables


def mimic_split_file(path: Path, rows: list[tuple[str, int, int, str]]) -> Path:
    """MIMIC-CXR's mimic-cxr-2.0.0-split.csv.gz: dicom_id, study_id, subject_id, split (ids without p/s)."""
    df = pd.DataFrame(rows, columns=["dicom_id", "study_id", "subject_id", "split"])
    with gzip.open(path, "wt") as fh:
        df.to_csv(fh, index=False)
    return path


def test_mimic_split_file_matches_mimic_paths(tmp_path):
    archive = mimic_archive(tmp_path / "a", range(6))
    add_study(archive, 10000000, 51000000)  # a study the table does not list, of a patient it does
    splits = ["train", "validate", "test", "TRAIN", "Validate", "test"]
    rows = [(f"d{50000000 + p}", 50000000 + p, 10000000 + p, splits[p]) for p in range(5)]  # patient 5 unlisted
    table = mimic_split_file(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", rows)
    df, meta = manifest(tmp_path / "m", str(archive), "--splits", str(table))
    got = study_splits(df)
    assert [got[str(50000000 + p)] for p in range(5)] == ["train", "val", "test", "train", "val"]
    assert got["51000000"] == "train"  # follows its patient's split in the table
    assert got["50000005"] == assign_split(df.loc[df["study_id"] == "50000005", "patient_key"].iloc[0])
    assert meta["splits"] == {
        "source": "table",
        "file": "mimic-cxr-2.0.0-split.csv.gz",
        "sha256": __import__("hashlib").sha256(table.read_bytes()).hexdigest(),
        "pinned": 0,
        "from_table": 5,
        "hashed": 1,
        "studies_not_in_table": 1,  # 50000005; 51000000's patient is listed
        "pinned_against_table": 0,
    }


def test_study_only_table_and_id_normalisation(tmp_path):
    assert norm_patient_id(" p10000032 ") == "10000032" and norm_study_id("s50414267") == "50414267"
    assert norm_patient_id("s123") == "s123" and norm_study_id("P7") == "P7"  # only the layout's own prefix
    archive = mimic_archive(tmp_path / "a", range(4))
    add_study(archive, 10000000, 51000000)  # unlisted: follows its patient's listed study
    pd.DataFrame({"StudyInstanceUID": [f"s{50000000 + p}" for p in range(4)], "Split": ["test"] * 4}).to_csv(
        tmp_path / "mine.csv", index=False
    )
    df, meta = manifest(tmp_path / "m", str(archive), "--splits", str(tmp_path / "mine.csv"))
    assert set(df["split"]) == {"test"} and meta["splits"]["from_table"] == 4
    assert meta["splits"]["studies_not_in_table"] == 1 and meta["splits"]["hashed"] == 0


def test_split_table_errors_name_the_file(tmp_path):
    def write(name: str, frame: dict) -> Path:
        pd.DataFrame(frame).to_csv(tmp_path / name, index=False)
        return tmp_path / name

    both = write("both.csv", {"subject_id": ["1", "1", "2"], "study_id": ["a", "b", "c"], "split": ["train", "test",
                                                                                                  "val"]})  # fmt: skip
    with pytest.raises(InputError, match=r"both\.csv: puts 1 patients in more than one split"):
        read_split_table(both)
    with pytest.raises(InputError, match=r"bad\.csv: split column 'split' has 1 values other than"):
        read_split_table(write("bad.csv", {"subject_id": ["1", "2"], "split": ["train", "holdout"]}))
    with pytest.raises(InputError, match=r"nocol\.csv: a split table needs"):
        read_split_table(write("nocol.csv", {"subject_id": ["1"], "fold": ["train"]}))
    with pytest.raises(FileNotFoundError, match="split table not found"):
        read_split_table(tmp_path / "missing.csv")
    # A study-only table that puts two studies of one patient in different splits: caught against the archive.
    archive = mimic_archive(tmp_path / "a", range(2))
    add_study(archive, 10000000, 51000000)
    table = write("studies.csv", {"study_id": ["50000000", "51000000"], "split": ["train", "test"]})
    cfg = ManifestCfg(source=str(archive), layout="mimic-cxr-jpg", out_dir=str(tmp_path / "m"), salt="s",
                      splits=str(table), verify_pixels=False)  # fmt: skip
    with pytest.raises(InputError, match=r"studies\.csv: puts 1 patients of this archive in more than one split"):
        manifest_from_config(cfg, show_progress=False)


def test_manifest_from_config_rebuild_into_the_same_folder(tmp_path):
    archive = mimic_archive(tmp_path / "a", range(10))
    cfg = ManifestCfg(source=str(archive), layout="mimic-cxr-jpg", out_dir=str(tmp_path / "m"), verify_pixels=False)
    first = manifest_from_config(cfg, show_progress=False)
    write_manifest(first, cfg.out_dir)
    second = manifest_from_config(cfg, show_progress=False)
    assert second.meta["salt_fingerprint"] == first.meta["salt_fingerprint"]
    assert second.meta["splits"]["pinned"] == 10 and second.meta["content_hash"] == first.meta["content_hash"]


def test_a_manifest_from_before_the_salt_fingerprint_is_pinned_by_study(tmp_path):
    archive = mimic_archive(tmp_path / "a", range(30))
    old = build_manifest(archive, layout="mimic-cxr-jpg", salt="old-random", verify_pixels=False, show_progress=False)
    del old.meta["salt_fingerprint"]  # as written by an older medclip (a random salt, not kept)
    write_manifest(old, tmp_path / "m")
    mimic_archive(archive, range(30, 40))
    new, meta = manifest(tmp_path / "m", str(archive))
    assert meta["splits"]["pinned"] == 30 and meta["salt_fingerprint"] != salt_fingerprint("old-random")
    assert all(study_splits(new)[s] == split for s, split in study_splits(old.manifest).items())
