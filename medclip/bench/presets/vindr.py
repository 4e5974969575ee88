"""VinDr-CXR preset: zero-shot multi-label AUROC on the 3,000 consensus-labelled test images (CXR-CLIP's findings).

VinDr-CXR 1.0.0 (Nguyen et al., Sci. Data 2022) is distributed on PhysioNet as ``annotations/image_labels_test.csv``
(``image_id`` and the 22 local + 6 global labels, 0 / 1, the consensus of 5 radiologists), ``annotations/
image_labels_train.csv`` (``image_id, rad_id`` and the same labels: one row per radiologist, 3 per image) and the
images as ``test/<image_id>.dicom`` and ``train/<image_id>.dicom``. The de-identified headers keep PatientSex and
PatientAge (where the hospital recorded them) but no manufacturer, site or view (every image is PA).

CXR-CLIP (You et al., MICCAI 2023) scores the 18 labels with more than 10 positives in the test set and holds out a
validation set of the training images with scikit-learn's ``train_test_split(test_size=0.2, random_state=0)`` on the
per-image table (grouped by image_id, so sorted). The same 20 % are the validation images here (zero-shot thresholds
and calibration); their label is the majority of the image's radiologists (CXR-CLIP takes any radiologist's positive),
the closer match to the test set's consensus. Without ``train/`` there is no validation split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from medclip.bench.base import BenchData, Preset, make_table, missing_images, read_official_csv, register
from medclip.bench.presets.rsna import dicom_subgroups
from medclip.errors import InputError
from medclip.ingest.tables import finding_key

NAME = "vindr-cxr"
TEST_CSV = "annotations/image_labels_test.csv"
TRAIN_CSV = "annotations/image_labels_train.csv"
SUFFIX = ".dicom"  # the release's file names; medclip.io.dicom reads any suffix that is not an image format's
# CXR-CLIP's VINDR_CXR list: the labels with more than 10 positive test images
FINDINGS = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Lung tumor",
    "Pneumonia",
    "Tuberculosis",
)
VAL_FRACTION = 0.2  # CXR-CLIP's test_size
SEED = 0  # CXR-CLIP's random_state
LAYOUT = (
    "point --data at the VinDr-CXR 1.0.0 folder holding annotations/ (image_labels_test.csv, image_labels_train.csv), "
    "test/ and, for the validation split, train/ (https://physionet.org/content/vindr-cxr/1.0.0/, credentialed "
    "access, PhysioNet Credentialed Health Data License 1.5.0)"
)


def _binary(df: pd.DataFrame, *, what: str) -> pd.DataFrame:
    """The finding columns as 0 / 1 floats; InputError naming the first cell that is neither."""
    labels = df[list(FINDINGS)].apply(pd.to_numeric, errors="coerce")
    bad = ~labels.isin((0, 1))
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise InputError(
            f"{what}: labels must be 0 or 1; row {row + 2} (image_id {df['image_id'].iloc[row]}) has "
            f"{df[FINDINGS[col]].iloc[row]!r} for {FINDINGS[col]}; use the release's file unchanged"
        )
    return labels.astype(float)


def majority_labels(train: pd.DataFrame) -> pd.DataFrame:
    """One row per image_id, sorted (CXR-CLIP's groupby order): a finding is 1 when more than half of the image's
    radiologists marked it, plus ``readers``, the number of radiologists."""
    votes = pd.concat([train[["image_id"]], _binary(train, what=TRAIN_CSV)], axis=1).groupby("image_id", sort=True)
    positives, readers = votes.sum(), votes.size()
    return positives.mul(2).gt(readers, axis=0).astype(float).assign(readers=readers).reset_index()


def cxrclip_val(image_ids: list[str]) -> list[str]:
    """The images CXR-CLIP's ``train_test_split(df, test_size=0.2, random_state=0)`` puts in its validation part,
    from the sorted image ids (the split depends on the number of rows only)."""
    _, val = train_test_split(np.arange(len(image_ids)), test_size=VAL_FRACTION, random_state=SEED)
    return [image_ids[i] for i in sorted(val)]


def _test(root: Path) -> pd.DataFrame:
    test = read_official_csv(root / TEST_CSV, ["image_id", *FINDINGS], what=NAME)
    if test["image_id"].duplicated().any():
        dup = test.loc[test["image_id"].duplicated(), "image_id"].iloc[0]
        raise InputError(f"{NAME}: {root / TEST_CSV} lists image {dup} twice; the test set has one consensus row each")
    return pd.concat([test[["image_id"]], _binary(test, what=TEST_CSV)], axis=1).assign(split="test", folder="test")


def _val(root: Path) -> tuple[pd.DataFrame | None, dict]:
    if not (root / TRAIN_CSV).is_file() or not (root / "train").is_dir():
        return None, {"val": f"none: {TRAIN_CSV} or train/ is absent (no thresholds or calibration)"}
    train = read_official_csv(root / TRAIN_CSV, ["image_id", "rad_id", *FINDINGS], what=NAME)
    votes = majority_labels(train)
    keep = set(cxrclip_val(list(votes["image_id"])))
    val = votes[votes["image_id"].isin(keep)].drop(columns="readers").assign(split="val", folder="train")
    decisions = {
        "val": f"CXR-CLIP's validation part of the training images: train_test_split(test_size={VAL_FRACTION}, "
        f"random_state={SEED}) over the image ids in sorted order",
        "val_labels": "majority of the image's radiologists (more than half of its rows in image_labels_train.csv)",
        "readers_per_image": {str(k): int(v) for k, v in votes["readers"].value_counts().sort_index().items()},
    }
    return val, decisions


def _load(root: Path) -> BenchData:
    test = _test(root)
    val, val_decisions = _val(root)
    frame = pd.concat([test, val], ignore_index=True) if val is not None else test
    frame["image_path"] = [
        str(root / f / f"{i}{SUFFIX}") for f, i in zip(frame["folder"], frame["image_id"], strict=True)
    ]
    missing_images(frame["image_path"], what=NAME)
    frame = frame.rename(columns={f: finding_key(f) for f in FINDINGS}).assign(study_id=frame["image_id"])
    groups = dicom_subgroups(list(frame["image_path"]))
    frame = pd.concat([frame, groups[[c for c in groups.columns if groups[c].ne("").any()]]], axis=1)
    keys = [finding_key(f) for f in FINDINGS]
    decisions = {
        "test": f"{TEST_CSV}: all test images, consensus of 5 radiologists",
        "findings": "CXR-CLIP's 18 labels (more than 10 positive test images); Other lesion, Other diseases, COPD, "
        "No finding and the rarer local labels are not scored",
        "test_positives": {k: int(frame.loc[frame["split"] == "test", k].sum()) for k in keys},
        **val_decisions,
        "subgroups": "sex and age band from the DICOM header (PatientSex, PatientAge) where recorded",
        "metric": "AUROC per finding, positive vs negative prompt softmax; macro mean over the 18",
    }
    notes = [] if val is not None else [val_decisions["val"]]
    return BenchData(make_table(frame, findings=FINDINGS, source=NAME), decisions, notes)


register(
    Preset(
        name=NAME,
        title="VinDr-CXR test: zero-shot AUROC on 18 radiologist-labelled findings",
        dataset="VinDr-CXR 1.0.0 (Nguyen et al. 2022), PhysioNet credentialed access, PhysioNet Credentialed Health "
        "Data License 1.5.0",
        paper="CXR-CLIP (You et al., MICCAI 2023)",
        layout=LAYOUT,
        required=(TEST_CSV, "test"),
        load=_load,
        tasks=("zeroshot",),
        prompts="vindr_cxr",
        mode="multilabel",
        findings=tuple(finding_key(f) for f in FINDINGS),
        headline="macro_auroc",
        label_policy="test labels are the 5-radiologist consensus (0/1); validation labels the majority of the "
        "image's 3 radiologists",
    )
)
