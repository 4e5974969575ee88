"""MIMIC-CXR 5x200 preset: 5-class zero-shot accuracy and image -> report retrieval on the official test split.

MIMIC-CXR-JPG 2.0.0 (Johnson et al., PhysioNet 2019) ships ``mimic-cxr-2.0.0-chexpert.csv.gz`` (``subject_id,
study_id`` and the 14 CheXpert observations per study, 1 / 0 / -1 uncertain / blank), ``mimic-cxr-2.0.0-split.csv.gz``
(``dicom_id, study_id, subject_id, split``: train / validate / test), ``mimic-cxr-2.0.0-metadata.csv.gz`` (``dicom_id,
subject_id, study_id, PerformedProcedureStepDescription, ViewPosition, Rows, Columns, StudyDate, ...``) and the JPGs
at ``files/pNN/p<subject>/s<study>/<dicom_id>.jpg``. The free-text reports come from the MIMIC-CXR database
(``mimic-cxr-reports.zip``: ``files/pNN/p<subject>/s<study>.txt``).

The 5x200 rules are GLoRIA's CheXpert 5x200 (as BenchX applies them to MIMIC-CXR): frontal (PA / AP) images with
exactly one of the five competition findings positive and every other observation but No Finding negative (blank
read as negative, uncertain excluding the image), images with neither a findings nor an impression section left out,
200 per finding drawn with a fixed seed. Unlike the published MIMIC 5x200 subsets (MedCLIP, BenchX, DLILP draw from
the whole dataset and have no public seed) the draw is from the official test split, so a checkpoint trained on the
official train split never saw an evaluated image; the test split is small, and a finding with fewer than 200
qualifying images contributes all it has.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medclip.bench.base import (
    BenchData,
    Preset,
    first_existing,
    make_table,
    missing_images,
    read_official_csv,
    register,
)
from medclip.bench.presets.chexpert import COMPETITION, OBSERVATIONS
from medclip.errors import InputError
from medclip.ingest.layouts.public import MIMIC_METADATA
from medclip.ingest.tables import finding_key
from medclip.io.text import read_text
from medclip.reports.sections import parse_sections, report_text

logger = logging.getLogger(__name__)

NAME = "mimic-5x200"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv.gz|mimic-cxr-2.0.0-chexpert.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz|mimic-cxr-2.0.0-split.csv"
METADATA_CSV = "|".join(reversed(MIMIC_METADATA))  # the release's .csv.gz first, an unpacked .csv also accepted
REPORT_DIRS = ("", "mimic-cxr-reports")  # reports beside the JPG folders, or unpacked to mimic-cxr-reports/files/
FRONTAL = ("PA", "AP")
PER_CLASS = 200
SEED = 0
OTHERS = tuple(o for o in OBSERVATIONS if o != "No Finding")  # No Finding is not a finding: ignored, as GLoRIA does
LAYOUT = (
    "point --data at the MIMIC-CXR-JPG 2.0.0 folder (files/ and mimic-cxr-2.0.0-{chexpert,split,metadata}.csv.gz) "
    "with the MIMIC-CXR reports unpacked into it (files/pNN/p<subject>/s<study>.txt beside the JPG folders) or into "
    "mimic-cxr-reports/files/ (https://physionet.org/content/mimic-cxr-jpg/2.0.0/ and "
    "https://physionet.org/content/mimic-cxr/2.0.0/, credentialed access, PhysioNet Credentialed Health Data License)"
)


def _ids(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """The id columns as text ("10000032", not 10000032.0): the CSVs are read with pandas' number inference."""
    out = df.copy()
    for col in cols:
        values = out[col]
        if pd.api.types.is_float_dtype(values):
            values = values.astype("Int64")
        out[col] = values.astype(str).str.strip()
    return out


def _read(root: Path, spec: str, columns: list[str]) -> pd.DataFrame:
    return read_official_csv(first_existing(root, spec), columns, what=NAME)


def single_finding(labels: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: the one competition finding that is positive while every other observation (No Finding aside) is
    0 or blank, else "" -> (target, uncertain) where ``uncertain`` marks rows that only an uncertain (-1) label kept
    out (they would qualify were it read as negative)."""
    obs = labels[list(OTHERS)].apply(pd.to_numeric, errors="coerce").fillna(0)
    target = pd.Series("", index=labels.index, dtype=object)
    uncertain = pd.Series(False, index=labels.index)
    for finding in COMPETITION:
        others = [c for c in OTHERS if c != finding]
        positive = obs[finding] == 1
        target[positive & (obs[others] == 0).all(axis=1)] = finding
        uncertain |= positive & (obs[others] == -1).any(axis=1) & obs[others].isin((0, -1)).all(axis=1)
    return target, uncertain


def sample_per_class(pool: pd.DataFrame, *, per_class: int = PER_CLASS, seed: int = SEED) -> pd.DataFrame:
    """``per_class`` rows of each ``target`` (all of them when fewer), drawn from the pool sorted by dicom_id with
    ``RandomState([seed, i])`` for the i-th competition finding: the same subset on any machine, whatever the row
    order of the CSVs."""
    parts = []
    for i, finding in enumerate(COMPETITION):
        rows = pool[pool["target"] == finding].sort_values("dicom_id", kind="stable")
        parts.append(rows.sample(n=min(per_class, len(rows)), random_state=np.random.RandomState([seed, i])))
    return pd.concat(parts, ignore_index=True)


def _folder(subject: str) -> Path:
    return Path("files", f"p{subject[:2]}", f"p{subject}")


def report_file(root: Path, subject: str, study: str) -> Path | None:
    """The study's report (``files/pNN/p<subject>/s<study>.txt``) beside the JPGs or under mimic-cxr-reports/."""
    rel = _folder(subject) / f"s{study}.txt"
    return next((root / d / rel for d in REPORT_DIRS if (root / d / rel).is_file()), None)


def _reports(root: Path, studies: pd.DataFrame) -> dict[str, str]:
    """study_id -> findings + impression text of every listed study; InputError when report files are missing."""
    texts, absent = {}, []
    for subject, study in zip(studies["subject_id"], studies["study_id"], strict=True):
        path = report_file(root, subject, study)
        if path is None:
            absent.append(str(_folder(subject) / f"s{study}.txt"))
            continue
        text, _ = read_text(path)
        texts[study] = report_text(parse_sections(text), "findings_impression")
    if absent:
        raise InputError(
            f"{NAME}: {len(absent)} of {len(studies)} reports of the selected studies are missing under {root} or "
            f"{root / REPORT_DIRS[1]}, e.g. {', '.join(absent[:3])}; unpack mimic-cxr-reports.zip (MIMIC-CXR 2.0.0) "
            "into the MIMIC-CXR-JPG folder and run again"
        )
    return texts


def candidates(root: Path) -> tuple[pd.DataFrame, dict]:
    """Frontal images of the official test split with a single-finding label row -> (pool with ``target``,
    the counts of what each rule left out)."""
    split = _ids(_read(root, SPLIT_CSV, ["dicom_id", "study_id", "subject_id", "split"]), "study_id", "subject_id")
    meta = _read(root, METADATA_CSV, ["dicom_id", "subject_id", "study_id", "ViewPosition"])
    labels = _ids(_read(root, CHEXPERT_CSV, ["subject_id", "study_id", *OBSERVATIONS]), "subject_id", "study_id")
    test = split[split["split"].astype(str).str.strip() == "test"]
    test = test.merge(meta[["dicom_id", "ViewPosition"]].drop_duplicates("dicom_id"), on="dicom_id", how="left")
    view = test["ViewPosition"].fillna("").astype(str).str.strip().str.upper()
    frontal = test[view.isin(FRONTAL)].assign(view=view[view.isin(FRONTAL)])
    labelled = frontal.merge(labels.drop_duplicates(["subject_id", "study_id"]), on=["subject_id", "study_id"])
    target, uncertain = single_finding(labelled)
    counts = {
        "test_split_images": int(len(test)),
        "not_frontal": int(len(test) - len(frontal)),
        "no_label_row": int(len(frontal) - len(labelled)),
        "not_single_finding": int((target == "").sum()),
        "uncertain_excluded": int(uncertain.sum()),
    }
    return labelled.assign(target=target)[target != ""].reset_index(drop=True), counts


def _load(root: Path) -> BenchData:
    pool, counts = candidates(root)
    texts = _reports(root, pool.drop_duplicates("study_id"))
    pool = pool.assign(report=pool["study_id"].map(texts))
    empty = pool["report"].fillna("").str.strip() == ""
    counts["no_findings_or_impression"] = int(empty.sum())
    pool = pool[~empty]
    eligible = {f: int((pool["target"] == f).sum()) for f in COMPETITION}
    frame = sample_per_class(pool)
    frame["image_path"] = [
        str(root / _folder(s) / f"s{t}" / f"{d}.jpg")
        for s, t, d in zip(frame["subject_id"], frame["study_id"], frame["dicom_id"], strict=True)
    ]
    missing_images(frame["image_path"], what=NAME)
    frame["split"] = "test"
    for finding in COMPETITION:  # one-hot by the target: the rows are single-finding by selection
        frame[finding_key(finding)] = (frame["target"] == finding).astype(float)
    notes = []
    short = {f: n for f, n in eligible.items() if n < PER_CLASS}
    if short:
        notes.append(f"fewer than {PER_CLASS} qualifying test-split images for {short}: all of them were taken")
    decisions = {
        "subset": f"drawn from the official test split (mimic-cxr-2.0.0-split.csv.gz), seed {SEED}",
        "selection": "frontal (ViewPosition PA or AP); exactly one of the 5 competition findings positive in "
        "mimic-cxr-2.0.0-chexpert.csv.gz and the other 12 observations (No Finding aside) negative after blank -> 0; "
        "an uncertain (-1) label excludes the image; images whose report has neither findings nor impression excluded",
        "sampling": f"per finding: dicom_id order, pandas sample with numpy RandomState([{SEED}, finding index])",
        "per_class": PER_CLASS,
        "eligible": eligible,
        "excluded": counts,
        "report_text": "findings + impression sections (medclip.reports.sections), the retrieval target of each image",
        "metric": "top-1 accuracy of a softmax over the 5 class prompts; image -> report R@1/5/10 (own study's report)",
    }
    table = make_table(frame, findings=COMPETITION, source=NAME, report_col="report")
    return BenchData(table, decisions, notes)


register(
    Preset(
        name=NAME,
        title="MIMIC-CXR 5x200: 5-class zero-shot accuracy and image -> report retrieval",
        dataset="MIMIC-CXR-JPG 2.0.0 and the MIMIC-CXR 2.0.0 reports (Johnson et al. 2019), PhysioNet credentialed "
        "access, PhysioNet Credentialed Health Data License 1.5.0",
        paper="GLoRIA's 5x200 rules on MIMIC-CXR as in MedCLIP (Wang et al., EMNLP 2022) and BenchX (Zhou et al., "
        "NeurIPS 2024), here drawn from the official test split",
        layout=LAYOUT,
        required=(CHEXPERT_CSV, SPLIT_CSV, METADATA_CSV, "files"),
        load=_load,
        tasks=("zeroshot", "retrieval"),
        prompts="chexpert_5x200",  # the class prompts of the CheXpert 5x200 preset: the same five classes
        mode="multiclass",
        findings=tuple(finding_key(f) for f in COMPETITION),
        headline="accuracy",
        label_policy="single-finding images only: blank counts as negative, uncertain (-1) excludes the image",
    )
)
