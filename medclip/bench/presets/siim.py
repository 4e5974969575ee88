"""SIIM-ACR Pneumothorax preset: the GLoRIA 70 / 15 / 15 split of train-rle.csv, zero-shot and linear probe.

The SIIM-ACR Pneumothorax Segmentation challenge (Kaggle, 2019) is distributed as ``train-rle.csv`` (header
``ImageId, EncodedPixels``, so pandas reads the second column as `` EncodedPixels``; ``-1`` for an image without
pneumothorax, otherwise one row per mask in run-length encoding) and
``dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm``. GLoRIA (Huang et al., ICCV 2021; its
``preprocess_datasets.py``, reused by MGCA) labels each CSV row (1 unless its mask is ``-1``) and splits the rows, in
file order, with the same two scikit-learn calls as for RSNA. Its rows are masks, not images: an image with several
masks can land in more than one split. This preset keeps GLoRIA's row split and gives each image the first split among
test, val, train that holds one of its rows, so the test images are exactly GLoRIA's and no image is in two splits.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medclip.bench.base import BenchData, Preset, make_table, missing_images, read_official_csv, register
from medclip.bench.presets.rsna import GLORIA_SPLIT, dicom_subgroups, gloria_split
from medclip.errors import InputError

logger = logging.getLogger(__name__)

NAME = "siim-pneumothorax"
RLE_CSV = "train-rle.csv"
IMAGE_DIR = "dicom-images-train"
MASK_COLUMNS = (" EncodedPixels", "EncodedPixels")  # the release's header has the space; accept a cleaned copy
PRECEDENCE = ("test", "val", "train")  # an image whose mask rows straddle splits goes to the first of these
LAYOUT = (
    f"point --data at the unpacked Kaggle download of SIIM-ACR Pneumothorax Segmentation, the folder holding {RLE_CSV} "
    f"and {IMAGE_DIR}/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm "
    "(https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation, competition data-use rules)"
)


def mask_rows(rle: pd.DataFrame) -> pd.Series:
    """Per CSV row: True when it holds a mask, False for ``-1``; InputError for a blank cell."""
    column = next((c for c in MASK_COLUMNS if c in rle.columns), None)
    if column is None:
        raise InputError(
            f"{RLE_CSV} lacks the column ' EncodedPixels' of the official release (it has {list(rle.columns)})"
        )
    cells = rle[column].astype("string").str.strip()
    blank = cells.isna() | (cells == "")
    if blank.any():
        i = int(np.flatnonzero(blank.to_numpy())[0])
        raise InputError(
            f"{RLE_CSV}: row {i + 2} (ImageId {rle['ImageId'].iloc[i]}) has no EncodedPixels (the release has a "
            "mask or -1 in every row); use the release's file unchanged"
        )
    return cells != "-1"


def per_image(rle: pd.DataFrame, row_split: np.ndarray) -> tuple[pd.DataFrame, int]:
    """One row per ImageId, in the order of first appearance: ``pneumothorax`` (any mask), ``masks`` and ``split``
    (by PRECEDENCE over its rows' splits) -> (images, how many had rows in more than one split)."""
    rows = pd.DataFrame({"ImageId": rle["ImageId"].astype(str), "mask": mask_rows(rle).to_numpy(), "split": row_split})
    rank = rows["split"].map({s: i for i, s in enumerate(PRECEDENCE)})
    grouped = rows.assign(rank=rank).groupby("ImageId", sort=False)
    images = pd.DataFrame(
        {
            "pneumothorax": grouped["mask"].any().astype(float),
            "masks": grouped["mask"].sum().astype(int),
            "split": grouped["rank"].min().map(dict(enumerate(PRECEDENCE))),
        }
    ).reset_index()
    straddling = int((grouped["split"].nunique() > 1).sum())
    return images, straddling


def image_files(root: Path) -> dict[str, Path]:
    """ImageId -> its DICOM under dicom-images-train/ (found at any depth, as GLoRIA's os.walk does)."""
    files: dict[str, Path] = {}
    for path in sorted((root / IMAGE_DIR).rglob("*.dcm")):
        files.setdefault(path.stem, path)
    return files


def _load(root: Path) -> BenchData:
    rle = read_official_csv(root / RLE_CSV, ["ImageId"], what=NAME)
    images, straddling = per_image(rle, gloria_split(len(rle), what=NAME))
    files = image_files(root)
    # an ImageId without a file is named by the pattern it was looked for under (a partial download)
    images["image_path"] = [str(files.get(i, root / IMAGE_DIR / "*" / "*" / f"{i}.dcm")) for i in images["ImageId"]]
    missing_images(images["image_path"], what=NAME)
    images["study_id"] = images["ImageId"]
    frame = pd.concat([images, dicom_subgroups(list(images["image_path"]))], axis=1)
    unlabelled = len(set(files) - set(images["ImageId"]))
    decisions = {
        "source": f"{RLE_CSV} (the stage-1 training release); DICOMs without a row in it are not used",
        "unit": "GLoRIA splits the CSV rows (one per mask) in file order; each image is then one row",
        **GLORIA_SPLIT,
        "image_split": "the first of test, val, train holding one of the image's rows (test images = GLoRIA's)",
        "images_in_several_splits": straddling,
        "label": "pneumothorax = 1 when any of the image's rows has a mask (EncodedPixels not -1), else 0",
        "unlabelled_dicoms_skipped": unlabelled,
        "subgroups": "sex, age_band, view from the DICOM header (PatientSex, PatientAge, ViewPosition)",
    }
    notes = []
    if straddling:
        notes.append(f"{straddling} images had mask rows in more than one of GLoRIA's splits; each is kept once")
    if unlabelled:
        notes.append(f"{unlabelled} DICOMs under {IMAGE_DIR}/ have no row in {RLE_CSV} and are not evaluated")
    return BenchData(make_table(frame, findings=("pneumothorax",), source=NAME), decisions, notes)


register(
    Preset(
        name=NAME,
        title="SIIM-ACR Pneumothorax: zero-shot AUROC and linear probe (1 / 10 / 100 %) on the GLoRIA split",
        dataset="SIIM-ACR Pneumothorax Segmentation (Kaggle 2019; images from NIH ChestX-ray14), Kaggle; "
        "under the competition's data-use rules",
        paper="GLoRIA (Huang et al., ICCV 2021) splits, also used by MGCA (Wang et al., NeurIPS 2022)",
        layout=LAYOUT,
        required=(RLE_CSV, IMAGE_DIR),
        load=_load,
        tasks=("zeroshot", "probe"),
        prompts="siim_pneumothorax",
        mode="multilabel",
        findings=("pneumothorax",),
        headline="probe",
        label_policy="binary per image: pneumothorax when any of its rows in train-rle.csv has a mask, negative "
        "when every row is -1; no uncertain labels",
    )
)
