"""CheXpert presets: the 5x200 multi-class zero-shot subset (GLoRIA) and the radiologist-labelled test set (CheXzero).

CheXpert (Irvin et al., AAAI 2019) is distributed by the Stanford AIMI Center as ``CheXpert-v1.0`` (or the
downsampled ``CheXpert-v1.0-small``): ``train.csv`` and ``valid.csv`` (columns ``Path, Sex, Age, Frontal/Lateral,
AP/PA`` and the 14 observations, 1 / 0 / -1 uncertain / blank), images under ``train/`` and ``valid/``. The test set
(500 studies, labelled by a consensus of 5 radiologists) comes with CheXlocalize as ``test_labels.csv`` and ``test/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medclip.bench.base import BenchData, Preset, make_table, missing_images, read_official_csv, register
from medclip.errors import InputError
from medclip.ingest.tables import finding_key
from medclip.io.demographics import age_band, normalise_sex

OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
PER_CLASS = 200
SEED = 0
RELEASE_FILE = "chexpert_5x200.csv"  # the subset file GLoRIA released; used as is when the user puts it in --data
LAYOUT = (
    "point --data at the unpacked CheXpert-v1.0 (or CheXpert-v1.0-small) folder, the one holding train.csv, "
    "valid.csv, train/ and valid/ (https://stanfordaimi.azurewebsites.net/datasets, Stanford CheXpert licence)"
)
TEST_LAYOUT = (
    "point --data at a CheXpert folder holding the CheXlocalize test release (test_labels.csv and test/) and, for "
    "thresholds and calibration, the original valid.csv and valid/"
)


def image_file(root: Path, path: str) -> Path:
    """A ``Path`` cell ("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg") as a file under root.

    The release's paths start with the release folder's own name; the file is looked up under --data with and
    without that first part, so --data may be the release folder or the folder above it.
    """
    rel = Path(str(path))
    candidates = [root / rel, root.parent / rel]
    if len(rel.parts) > 1:
        candidates.insert(0, root / Path(*rel.parts[1:]))
    return next((c for c in candidates if c.exists()), candidates[0])


def _observations(df: pd.DataFrame, what: str) -> pd.DataFrame:
    missing = [c for c in OBSERVATIONS if c not in df.columns]
    if missing:
        raise InputError(f"{what}: lacks the CheXpert observation columns {missing}")
    return df


def _subgroups(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    if "Sex" in df.columns:
        out["sex"] = [normalise_sex(v) for v in df["Sex"]]
    if "Age" in df.columns:
        out["age_band"] = [age_band(v) for v in df["Age"]]
    if "AP/PA" in df.columns:
        views = df["AP/PA"].fillna("").astype(str).str.upper()
        lateral = df.get("Frontal/Lateral", pd.Series("", index=df.index)).astype(str).eq("Lateral")
        out["view"] = np.where(lateral, "LATERAL", views)
    return out


def _study(path: str) -> str:
    parts = Path(str(path)).parts
    return "/".join(parts[-3:-1]) if len(parts) >= 3 else str(path)


def select_5x200(train: pd.DataFrame, *, per_class: int = PER_CLASS, seed: int = SEED) -> tuple[pd.DataFrame, dict]:
    """GLoRIA's 5x200: frontal training images with exactly one competition finding positive and every other
    observation but No Finding negative (blank read as negative, uncertain -1 excluded); ``per_class`` per finding,
    sampled with ``seed``. -> (rows with a ``target`` column, counts of eligible images per finding)."""
    df = train[train["Frontal/Lateral"] == "Frontal"].copy()
    obs = df[list(OBSERVATIONS[1:])].fillna(0)
    picked, eligible = [], {}
    for i, finding in enumerate(COMPETITION):
        others = [c for c in OBSERVATIONS[1:] if c != finding]
        mask = (obs[finding] == 1) & (obs[others] == 0).all(axis=1)
        pool = df[mask]
        eligible[finding] = int(len(pool))
        take = pool.sample(n=min(per_class, len(pool)), random_state=np.random.RandomState([seed, i]))
        picked.append(take.assign(target=finding))
    return pd.concat(picked), eligible


def _load_5x200(root: Path) -> BenchData:
    release = root / RELEASE_FILE
    notes = []
    if release.is_file():
        subset = read_official_csv(release, ["Path", *COMPETITION], what="chexpert-5x200")
        labels = subset[list(COMPETITION)].fillna(0)
        if not ((labels == 1).sum(axis=1) == 1).all():
            raise InputError(f"{release}: every row of the 5x200 subset must have exactly one of {list(COMPETITION)}")
        subset = subset.assign(target=[COMPETITION[int(i)] for i in np.argmax(labels.to_numpy(), axis=1)])
        source, eligible = f"{RELEASE_FILE} (the released subset)", None
    else:
        train = _observations(
            read_official_csv(root / "train.csv", ["Path", "Frontal/Lateral"], what="chexpert-5x200"), "train.csv"
        )
        subset, eligible = select_5x200(train)
        source = f"selected from train.csv (seed {SEED})"
        short = {f: n for f, n in eligible.items() if n < PER_CLASS}
        if short:
            notes.append(f"fewer than {PER_CLASS} eligible images for {short}: all of them were taken")
    frame = subset.reset_index(drop=True)
    frame["image_path"] = [str(image_file(root, p)) for p in frame["Path"]]
    missing_images(frame["image_path"], what="chexpert-5x200")
    frame["study_id"] = [_study(p) for p in frame["Path"]]
    frame["split"] = "test"
    for finding in COMPETITION:  # one-hot by the target class: the subset's rows are single-finding by selection
        frame[finding_key(finding)] = (frame["target"] == finding).astype(float)
    frame = pd.concat([frame, _subgroups(frame)], axis=1)
    decisions = {
        "subset": source,
        "selection": "frontal; exactly one of the 5 competition findings positive, the other 12 observations "
        "(No Finding aside) negative after blank -> 0; uncertain (-1) rows excluded",
        "per_class": PER_CLASS,
        "metric": "top-1 accuracy of a softmax over the 5 class prompts",
    }
    if eligible:
        decisions["eligible"] = eligible
    return BenchData(make_table(frame, findings=COMPETITION, source="chexpert-5x200"), decisions, notes)


def _load_test(root: Path) -> BenchData:
    test = read_official_csv(root / "test_labels.csv", list(COMPETITION), what="chexpert-test")
    if "Path" in test.columns:
        paths = list(test["Path"])
    elif "Study" in test.columns:  # one row per study: its frontal view(s)
        paths, rows = [], []
        for i, study in enumerate(test["Study"]):
            folder = image_file(root, str(study))
            for view in sorted(folder.glob("view*_frontal.jpg")) or [folder / "view1_frontal.jpg"]:
                paths.append(str(view.relative_to(root)) if view.is_relative_to(root) else str(view))
                rows.append(i)
        test = test.iloc[rows].reset_index(drop=True)
    else:
        raise InputError(f"{root / 'test_labels.csv'}: needs a Path or Study column (the CheXlocalize release)")
    test["Path"] = paths
    frontal = [("lateral" not in Path(p).name) for p in paths]
    n_lateral = len(paths) - sum(frontal)
    test = test[frontal].assign(split="test")
    parts = [test]
    valid_csv = root / "valid.csv"
    if valid_csv.is_file():
        valid = read_official_csv(valid_csv, ["Path", "Frontal/Lateral", *COMPETITION], what="chexpert-test")
        parts.append(valid[valid["Frontal/Lateral"] == "Frontal"].assign(split="val"))
    frame = pd.concat(parts, ignore_index=True)
    frame["image_path"] = [str(image_file(root, p)) for p in frame["Path"]]
    missing_images(frame["image_path"], what="chexpert-test")
    frame["study_id"] = [_study(p) for p in frame["Path"]]
    for finding in COMPETITION:
        frame[finding_key(finding)] = pd.to_numeric(frame[finding], errors="coerce")
    frame = pd.concat([frame, _subgroups(frame)], axis=1)
    decisions = {
        "test": "test_labels.csv (radiologist consensus), frontal views only",
        "val": "valid.csv frontal views (thresholds, calibration)" if valid_csv.is_file() else "none (no valid.csv)",
        "lateral_excluded": n_lateral,
        "metric": "AUROC per competition finding, positive vs negative prompt softmax",
    }
    notes = [] if valid_csv.is_file() else ["no valid.csv: no operating points or calibration (nothing to fit on)"]
    return BenchData(make_table(frame, findings=COMPETITION, source="chexpert-test"), decisions, notes)


register(
    Preset(
        name="chexpert-5x200",
        title="CheXpert 5x200: 5-class zero-shot accuracy",
        dataset="CheXpert v1.0 (Irvin et al. 2019), Stanford AIMI; research-use licence",
        paper="GLoRIA (Huang et al., ICCV 2021), also MedCLIP and CXR-CLIP",
        layout=LAYOUT,
        required=("train.csv|chexpert_5x200.csv",),
        load=_load_5x200,
        tasks=("zeroshot",),
        prompts="chexpert_5x200",
        mode="multiclass",
        findings=tuple(finding_key(f) for f in COMPETITION),
        headline="accuracy",
        label_policy="single-finding images only: blank counts as negative, uncertain (-1) excludes the image",
    )
)

register(
    Preset(
        name="chexpert-test",
        title="CheXpert test: AUROC on the 5 competition findings",
        dataset="CheXpert test set (500 studies, 5-radiologist consensus) from CheXlocalize, Stanford AIMI",
        paper="CheXzero (Tiu et al., Nat. Biomed. Eng. 2022)",
        layout=TEST_LAYOUT,
        required=("test_labels.csv", "test"),
        load=_load_test,
        tasks=("zeroshot",),
        prompts="chexzero",
        mode="multilabel",
        findings=tuple(finding_key(f) for f in COMPETITION),
        headline="macro_auroc",
        label_policy="test labels are radiologist consensus (0/1); in valid.csv uncertain (-1) and blank rows are "
        "left out of a finding's thresholds",
    )
)
