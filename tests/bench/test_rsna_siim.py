"""rsna-pneumonia and siim-pneumothorax: tiny Kaggle-layout folders run end to end; the GLoRIA split reproduced."""

from __future__ import annotations

import logging
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from medclip.bench.base import PRESETS, subset_hash
from medclip.bench.presets.rsna import gloria_split
from medclip.errors import InputError
from tests.bench.conftest import run_bench, write_dicom

N_IMAGES = 40
SEXES, VIEWS = ("M", "F"), ("PA", "AP")
RSNA_CLASS = {1: "Lung Opacity", 0: "Normal"}
SIIM_UID = "1.2.276.0.7230010.3.1.4.8323329.{}.1517875{:03d}.{}"


def _dicom(path: Path, i: int, *, age: str) -> None:
    # RSNA and SIIM store PatientAge as "51", which pydicom warns (and logs) is not an AS value when it is written
    log = logging.getLogger("pydicom")
    level, log.level = log.level, logging.ERROR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            write_dicom(path, i, size=(64, 64), PatientSex=SEXES[i % 2], PatientAge=age, ViewPosition=VIEWS[i % 3 == 0])
    finally:
        log.setLevel(level)


def _rsna_ids(n: int) -> list[str]:
    """Kaggle-like patientIds, not in sorted order (GLoRIA splits them sorted, whatever the CSV's order)."""
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"rsna-{i}")) for i in range(n)]


def _rsna_positives(ids: list[str]) -> set[str]:
    """Every other image of each split is positive, so each split has both classes whatever the fixture's ids."""
    ordered = sorted(ids)
    split = gloria_split(len(ordered), what="fixture")
    positives = set()
    for name in ("train", "val", "test"):
        positives |= {pid for j, pid in enumerate(p for p, s in zip(ordered, split, strict=True) if s == name) if j % 2}
    return positives


def write_rsna(root: Path, n: int = N_IMAGES) -> Path:
    """stage_2_train_labels.csv (one row per box, a blank row for an image without one), the class info CSV and one
    DICOM per patientId, with PatientSex / PatientAge / ViewPosition varied."""
    ids = _rsna_ids(n)
    positives = _rsna_positives(ids)
    rows, classes = [], []
    for i, pid in enumerate(ids):
        if pid in positives:
            for b in range(1 + i % 3):  # 1 to 3 boxes
                rows.append((pid, 200 + 10 * b, 300, 150, 240, 1))
        else:
            rows.append((pid, None, None, None, None, 0))
        label = int(pid in positives)
        classes.append((pid, "No Lung Opacity / Not Normal" if not label and i % 4 == 0 else RSNA_CLASS[label]))
        _dicom(root / "stage_2_train_images" / f"{pid}.dcm", i, age=str(8 + 2 * i))
    pd.DataFrame(rows, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        root / "stage_2_train_labels.csv", index=False
    )
    pd.DataFrame(classes, columns=["patientId", "class"]).to_csv(root / "stage_2_detailed_class_info.csv", index=False)
    return root


def _siim_id(i: int) -> str:
    return SIIM_UID.format(5000 + i, i, 100000 + 37 * i)


def write_siim(root: Path, n: int = N_IMAGES, *, unlabelled: int = 1) -> Path:
    """train-rle.csv with the release's header and cell spacing (``ImageId, EncodedPixels``, `` -1``), one row per
    mask (positives: 1 to 3), rows of an image not always adjacent; DICOMs under Study/Series folders, plus
    ``unlabelled`` DICOMs the CSV does not list (the release has a few)."""
    lines, later = ["ImageId, EncodedPixels"], []
    for i in range(n):
        image_id = _siim_id(i)
        if i % 2 == 0:
            masks = [f" {1000 + i} {20 + m} {900 + m} 15" for m in range(1 + (i % 6 == 0) + (i % 12 == 0))]
            lines.append(f"{image_id},{masks[0]}")
            later += [f"{image_id},{m}" for m in masks[1:]]  # further masks of an image come further down
        else:
            lines.append(f"{image_id}, -1")
        _dicom(root / "dicom-images-train" / f"1.2.276.0.7230010.{i}" / f"1.2.276.0.7230010.{i}.1" / f"{image_id}.dcm",
               i, age=str(20 + i))  # fmt: skip
    for k in range(unlabelled):
        _dicom(root / "dicom-images-train" / f"9.9.{k}" / f"9.9.{k}.1" / f"{_siim_id(900 + k)}.dcm", 900 + k, age="40")
    (root / "train-rle.csv").write_text("\n".join(lines + later) + "\n")
    return root


@pytest.fixture
def rsna(tmp_path) -> Path:
    return write_rsna(tmp_path / "rsna")


@pytest.fixture
def siim(tmp_path) -> Path:
    return write_siim(tmp_path / "siim")


def _load(name: str, root: Path):
    return PRESETS.get(name).load(root)


def _split_sets(table) -> dict[str, set[str]]:
    return {s: set(table.rows.loc[table.rows["split"] == s, "study_id"]) for s in ("train", "val", "test")}


def _reference_rows(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """GLoRIA's split as its script calls it, on a frame: 0.3 held out, then halved; the first half is test."""
    train, held_out = train_test_split(df, test_size=0.15 * 2, random_state=0)
    test, val = train_test_split(held_out, test_size=0.5, random_state=0)
    return {"train": train, "val": val, "test": test}


# ---- the split ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "sizes"), [(40, (28, 6, 6)), (26684, (18678, 4003, 4003)), (101, (70, 16, 15))])
def test_gloria_split_sizes(n, sizes):
    split = gloria_split(n, what="t")
    assert tuple(int((split == s).sum()) for s in ("train", "val", "test")) == sizes


def test_rsna_split_matches_gloria_grouping_and_order(rsna):
    labels = pd.read_csv(rsna / "stage_2_train_labels.csv")
    per_image = labels.groupby("patientId").agg(list).reset_index()  # what GLoRIA splits: sorted ids, one row each
    expected = {s: set(df["patientId"]) for s, df in _reference_rows(per_image).items()}
    table = _load("rsna-pneumonia", rsna).table
    assert _split_sets(table) == expected
    assert len(table.rows) == N_IMAGES < len(labels)  # several boxes of one image are one row


def test_siim_test_images_are_glorias_and_no_image_is_in_two_splits(siim):
    rle = pd.read_csv(siim / "train-rle.csv")
    assert " EncodedPixels" in rle.columns  # the fixture has the release's header
    reference = {s: set(df["ImageId"]) for s, df in _reference_rows(rle).items()}
    data = _load("siim-pneumothorax", siim)
    sets = _split_sets(data.table)
    assert sets["test"] == reference["test"]
    assert sets["val"] == reference["val"] - reference["test"]
    assert sets["train"] == reference["train"] - reference["val"] - reference["test"]
    assert sum(map(len, sets.values())) == N_IMAGES == rle["ImageId"].nunique() < len(rle)
    straddling = sum(
        len(reference[a] & reference[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
    )
    assert data.decisions["images_in_several_splits"] == straddling


# ---- labels and subgroups -----------------------------------------------------------------------------------------


def test_rsna_labels_and_header_subgroups(rsna):
    data = _load("rsna-pneumonia", rsna)
    rows, labels = data.table.rows, data.table.labels
    truth = _rsna_positives(_rsna_ids(N_IMAGES))
    assert list(labels.columns) == ["pneumonia"]
    assert dict(zip(rows["study_id"], labels["pneumonia"], strict=True)) == {
        pid: float(pid in truth) for pid in _rsna_ids(N_IMAGES)
    }
    for s in ("train", "val", "test"):  # the probe needs both classes in train and val
        assert set(labels.loc[rows["split"] == s, "pneumonia"]) == {0.0, 1.0}
    i = 25  # PatientAge "58", ViewPosition PA, PatientSex F
    row = rows[rows["study_id"] == _rsna_ids(N_IMAGES)[i]].iloc[0]
    assert (row["sex"], row["age_band"], row["view"]) == ("F", "40-59", "PA")
    assert set(rows["view"]) == {"PA", "AP"} and set(rows["sex"]) == {"M", "F"}
    assert "PatientAge" not in rows.columns and not rows["age_band"].str.fullmatch(r"\d+").any()
    assert data.decisions["boxes"] == sum(1 + i % 3 for i, p in enumerate(_rsna_ids(N_IMAGES)) if p in truth)
    assert any("No Lung Opacity / Not Normal" in note for note in data.notes)


def test_siim_labels_any_mask_is_positive(siim):
    data = _load("siim-pneumothorax", siim)
    rows, labels = data.table.rows, data.table.labels
    expected = {_siim_id(i): float(i % 2 == 0) for i in range(N_IMAGES)}
    assert dict(zip(rows["study_id"], labels["pneumothorax"], strict=True)) == expected
    for s in ("train", "val", "test"):
        assert set(labels.loc[rows["split"] == s, "pneumothorax"]) == {0.0, 1.0}
    assert data.decisions["unlabelled_dicoms_skipped"] == 1
    assert _siim_id(900) not in set(rows["study_id"])
    assert set(rows["age_band"]) == {"18-39", "40-59"} and set(rows["view"]) == {"PA", "AP"}


def test_siim_accepts_a_header_without_the_space(siim):
    path = siim / "train-rle.csv"
    before = subset_hash(_load("siim-pneumothorax", siim).table, siim)
    path.write_text(path.read_text().replace("ImageId, EncodedPixels", "ImageId,EncodedPixels", 1))
    assert subset_hash(_load("siim-pneumothorax", siim).table, siim) == before


# ---- end to end ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "writer", "sizes"),
    [
        ("rsna-pneumonia", write_rsna, {"train": 28, "val": 6, "test": 6}),
        # 51 CSV rows, 35 / 8 / 8 by row; the 2 images whose masks straddle splits stay in val or test
        ("siim-pneumothorax", write_siim, {"train": 24, "val": 8, "test": 8}),
    ],
)
def test_end_to_end(name, writer, sizes, tmp_path, tiny_checkpoint):
    root = writer(tmp_path / "data")
    code, results = run_bench(name, root, tiny_checkpoint, tmp_path / "a")
    assert code == 0
    head, protocol = results["headline"], results["protocol"]
    assert head["metric"] == "linear probe macro AUROC"
    assert set(head["value"]) == {"1%", "10%", "100%"}
    assert head["value"]["100%"] is not None and 0 <= head["value"]["100%"] <= 1
    assert head["zero_shot"] is not None
    finding = protocol["findings"][0]
    zs = results["zero_shot"]["per_finding"][finding]
    assert zs["auroc"] is not None and "f1" in zs and results["zero_shot"]["threshold_split"] == "val"
    assert protocol["n_images"] == sizes
    assert protocol["decisions"]["random_state"] == 0 and protocol["prompt_set"] in (
        "rsna_pneumonia",
        "siim_pneumothorax",
    )

    code, again = run_bench(name, root, tiny_checkpoint, tmp_path / "b")
    assert code == 0 and again["protocol"]["subset_hash"] == protocol["subset_hash"]

    changed = writer(tmp_path / "fewer", n=N_IMAGES - 1)
    assert subset_hash(_load(name, changed).table, changed) != protocol["subset_hash"]


# ---- a folder that is not the release -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "writer", "remove", "named"),
    [
        ("rsna-pneumonia", write_rsna, "stage_2_train_images", "stage_2_train_images"),
        ("rsna-pneumonia", write_rsna, "stage_2_train_labels.csv", "stage_2_train_labels.csv"),
        ("siim-pneumothorax", write_siim, "dicom-images-train", "dicom-images-train"),
        ("siim-pneumothorax", write_siim, "train-rle.csv", "train-rle.csv"),
    ],
)
def test_missing_part_is_exit_2(name, writer, remove, named, tmp_path, tiny_checkpoint, capsys):
    root = writer(tmp_path / "data", n=12)
    target = root / remove
    if target.is_dir():
        for f in sorted(target.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        target.rmdir()
    else:
        target.unlink()
    code, _ = run_bench(name, root, tiny_checkpoint, tmp_path / "out")
    assert code == 2
    assert named in capsys.readouterr().err


def test_rsna_partial_download_and_wrong_columns(rsna, tmp_path, tiny_checkpoint, capsys):
    gone = sorted((rsna / "stage_2_train_images").glob("*.dcm"))[3]
    gone.unlink()
    assert run_bench("rsna-pneumonia", rsna, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert gone.name in capsys.readouterr().err

    csv = rsna / "stage_2_train_labels.csv"
    pd.read_csv(csv).rename(columns={"Target": "Label"}).to_csv(csv, index=False)
    assert run_bench("rsna-pneumonia", rsna, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert "Target" in capsys.readouterr().err


def test_siim_listed_image_without_dicom_and_wrong_columns(siim, tmp_path, tiny_checkpoint, capsys):
    gone = next((siim / "dicom-images-train").rglob(f"{_siim_id(7)}.dcm"))
    gone.unlink()
    assert run_bench("siim-pneumothorax", siim, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert _siim_id(7) in capsys.readouterr().err

    csv = siim / "train-rle.csv"
    csv.write_text(csv.read_text().replace("ImageId, EncodedPixels", "ImageId,Mask", 1))
    assert run_bench("siim-pneumothorax", siim, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert "EncodedPixels" in capsys.readouterr().err


@pytest.mark.parametrize("cell", ["", " "])
def test_siim_blank_mask_cell_is_refused(siim, cell):
    csv = siim / "train-rle.csv"
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].split(",")[0] + "," + cell
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="no EncodedPixels"):
        _load("siim-pneumothorax", siim)


def test_rsna_bad_target_is_refused(rsna):
    csv = rsna / "stage_2_train_labels.csv"
    df = pd.read_csv(csv)
    df.loc[4, "Target"] = 2
    df.to_csv(csv, index=False)
    with pytest.raises(InputError, match="Target must be 0 or 1; row 6"):
        _load("rsna-pneumonia", rsna)


def test_header_read_failure_blanks_subgroups_only(rsna):
    victim = sorted((rsna / "stage_2_train_images").glob("*.dcm"))[0]
    victim.write_bytes(b"not a dicom at all")
    rows = _load("rsna-pneumonia", rsna).table.rows
    row = rows[rows["image_path"] == str(victim)].iloc[0]
    assert (row["sex"], row["age_band"], row["view"]) == ("", "", "")
    assert np.count_nonzero(rows["sex"] == "") == 1
