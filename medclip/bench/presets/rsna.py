"""RSNA Pneumonia preset: the GLoRIA 70 / 15 / 15 split of the stage-2 training labels, zero-shot and linear probe.

The RSNA Pneumonia Detection Challenge (Shih et al., Radiology: AI 2019) is distributed on Kaggle as
``stage_2_train_labels.csv`` (``patientId, x, y, width, height, Target``; one row per box, a single row with blank box
and ``Target`` 0 for an image without one), ``stage_2_detailed_class_info.csv`` (``patientId, class``) and
``stage_2_train_images/<patientId>.dcm``. GLoRIA (Huang et al., ICCV 2021; its ``preprocess_datasets.py``, reused by
MGCA) groups the label rows per image, sorted by patientId, labels an image positive when it has a box, and splits the
images with scikit-learn: ``train_test_split(test_size=0.3, random_state=0)``, then the held-out 30 % in halves with
``train_test_split(test_size=0.5, random_state=0)``, whose first part is the test set and whose second the validation
set. The split helpers and the DICOM header subgroups here are shared with the SIIM preset.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from sklearn.model_selection import train_test_split

from medclip.bench.base import BenchData, Preset, make_table, missing_images, read_official_csv, register
from medclip.errors import InputError
from medclip.io.demographics import age_band, normalise_sex
from medclip.io.dicom import VIEW_ALIASES

logger = logging.getLogger(__name__)

NAME = "rsna-pneumonia"
LABELS_CSV = "stage_2_train_labels.csv"
CLASS_CSV = "stage_2_detailed_class_info.csv"
IMAGE_DIR = "stage_2_train_images"
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
TEST_FRACTION = 0.15  # GLoRIA's test_fac: 2 x 0.15 held out, then halved into test and validation
SEED = 0  # GLoRIA's random_state for both train_test_split calls
HEADER_TAGS = ("PatientSex", "PatientAge", "ViewPosition")
LAYOUT = (
    "point --data at the unpacked Kaggle download of the RSNA Pneumonia Detection Challenge (stage 2), the folder "
    f"holding {LABELS_CSV} and {IMAGE_DIR}/ (and {CLASS_CSV}, read for a note on the negatives) "
    "(https://www.kaggle.com/c/rsna-pneumonia-detection-challenge, competition data-use rules)"
)
GLORIA_SPLIT = {
    "split": "GLoRIA preprocess_datasets.py: sklearn train_test_split(test_size=0.3, random_state=0) -> train / "
    "held-out; train_test_split(held-out, test_size=0.5, random_state=0) -> test / val",
    "split_fractions": {"train": 0.7, "val": 0.15, "test": 0.15},
    "random_state": SEED,
}


def gloria_split(n: int, *, what: str) -> np.ndarray:
    """GLoRIA's split of ``n`` rows (in the order GLoRIA held them) -> "train" / "val" / "test" per row.

    ``train_test_split`` draws its permutation from the number of rows alone, so splitting positions gives the rows
    GLoRIA's script wrote to train.csv / val.csv / test.csv. The second call's first part is the test set.
    """
    if n < 4:
        raise InputError(f"{what}: {n} labelled images; the 70/15/15 split needs at least 4")
    positions = np.arange(n)
    train, held_out = train_test_split(positions, test_size=TEST_FRACTION * 2, random_state=SEED)
    test, val = train_test_split(held_out, test_size=0.5, random_state=SEED)
    split = np.empty(n, dtype=object)
    split[train], split[val], split[test] = "train", "val", "test"
    return split


def _raw_text(ds: pydicom.Dataset, keyword: str) -> str:
    """A header value as text, read raw: no VR validation, so RSNA's PatientAge "51" (not the AS form "051Y") is
    taken as it is, without one pydicom warning per distinct age."""
    elem = ds.get_item(keyword)
    value = getattr(elem, "value", None)
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).strip(" \x00") if value is not None else ""


def _header(path: str) -> dict[str, str]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        sex, age, view = (_raw_text(ds, tag) for tag in HEADER_TAGS)
    except Exception as exc:  # an unreadable header costs the subgroups, not the image (decoding reports it)
        logger.warning("%s: cannot read the DICOM header (%s); its subgroups are left blank", path, exc)
        return {"sex": "", "age_band": "", "view": ""}
    view = view.upper()
    return {
        "sex": normalise_sex(sex),
        "age_band": age_band(age),  # only the band is kept, never the age
        "view": VIEW_ALIASES.get(view, view),
    }


def dicom_subgroups(paths: list[str], *, workers: int = 8) -> pd.DataFrame:
    """``sex``, ``age_band`` and ``view`` from the headers (PatientSex, PatientAge, ViewPosition) of DICOM files.

    Only those three tags are parsed and pixels are never read. A few threads overlap the file accesses, which is
    what costs on a network drive (on a local disk ~0.3 ms a file either way).
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(_header, paths, chunksize=64))
    return pd.DataFrame(rows, columns=["sex", "age_band", "view"])


def per_image_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per patientId (sorted, as GLoRIA's groupby left them): ``pneumonia`` 1 when any row has Target 1,
    and ``boxes``, the number of boxes."""
    target = pd.to_numeric(labels["Target"], errors="coerce")
    bad = ~target.isin((0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{LABELS_CSV}: Target must be 0 or 1; row {i + 2} (patientId {labels['patientId'].iloc[i]}) has "
            f"{labels['Target'].iloc[i]!r}; use the release's file unchanged"
        )
    grouped = labels.assign(Target=target).groupby("patientId", sort=True)["Target"]
    return pd.DataFrame({"pneumonia": grouped.max().astype(float), "boxes": grouped.sum().astype(int)}).reset_index()


def _class_notes(root: Path, images: pd.DataFrame) -> list[str]:
    """What stage_2_detailed_class_info.csv says about the negatives (when the file is there)."""
    path = root / CLASS_CSV
    if not path.is_file():
        return [f"{CLASS_CSV} not found: the label composition of the negatives is not reported"]
    info = read_official_csv(path, ["patientId", "class"], what=NAME).drop_duplicates("patientId")
    merged = images.merge(info, on="patientId", how="left")
    negatives = merged[merged["pneumonia"] == 0]["class"].value_counts().to_dict()
    notes = [f"negatives by {CLASS_CSV} class: {negatives} (GLoRIA's Target 0 takes both)"]
    odd = int(((merged["pneumonia"] == 1) & (merged["class"] != "Lung Opacity")).sum())
    if odd:
        notes.append(f"{odd} images with a box are not 'Lung Opacity' in {CLASS_CSV}; the boxes decide")
    return notes


def _load(root: Path) -> BenchData:
    labels = read_official_csv(root / LABELS_CSV, LABEL_COLUMNS, what=NAME)
    images = per_image_labels(labels)
    frame = images.assign(
        image_path=[str(root / IMAGE_DIR / f"{pid}.dcm") for pid in images["patientId"]],
        study_id=images["patientId"],
        split=gloria_split(len(images), what=NAME),
    )
    missing_images(frame["image_path"], what=NAME)
    frame = pd.concat([frame, dicom_subgroups(list(frame["image_path"]))], axis=1)
    decisions = {
        "source": f"{LABELS_CSV} (all stage-2 training images; the stage-2 test images have no labels)",
        "unit": "one row per image (patientId); rows of the CSV are boxes",
        "order": "patientIds sorted (GLoRIA's groupby), then split",
        **GLORIA_SPLIT,
        "label": "pneumonia = 1 when the image has a box (Target 1), else 0",
        "boxes": int(images["boxes"].sum()),
        "subgroups": "sex, age_band, view from the DICOM header (PatientSex, PatientAge, ViewPosition)",
    }
    notes = _class_notes(root, images)
    return BenchData(make_table(frame, findings=("pneumonia",), source=NAME), decisions, notes)


register(
    Preset(
        name=NAME,
        title="RSNA Pneumonia: zero-shot AUROC and linear probe (1 / 10 / 100 %) on the GLoRIA split",
        dataset="RSNA Pneumonia Detection Challenge stage 2 (Shih et al., Radiol. AI 2019; images from NIH "
        "ChestX-ray14), Kaggle; under the competition's data-use rules",
        paper="GLoRIA (Huang et al., ICCV 2021) splits, also used by MGCA (Wang et al., NeurIPS 2022)",
        layout=LAYOUT,
        required=(LABELS_CSV, IMAGE_DIR),
        load=_load,
        tasks=("zeroshot", "probe"),
        prompts="rsna_pneumonia",
        mode="multilabel",
        findings=("pneumonia",),
        headline="probe",
        label_policy="binary per image: pneumonia when it has at least one box (Target 1); every other image "
        "(Normal and No Lung Opacity / Not Normal) is negative; no uncertain labels",
    )
)
