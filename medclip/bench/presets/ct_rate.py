"""CT-RATE preset: CT-CLIP's zero-shot 18-abnormality AUROC and report -> volume retrieval on the validation set.

CT-RATE (Hamamci et al., "Developing Generalist Foundation Models from a Multimodal Dataset for 3D Computed
Tomography", arXiv 2403.17834) is distributed on Hugging Face as ``ibrahimhamamci/CT-RATE`` (CC BY-NC-SA 4.0). Its
``dataset/`` folder holds the volumes, one NIfTI per reconstruction, as
``valid_fixed/valid_<patient>/valid_<patient>_<scan>/valid_<patient>_<scan>_<recon>.nii.gz``, and three CSVs keyed by
``VolumeName`` (the file name): ``multi_abnormality_labels/valid_predicted_labels.csv`` (18 abnormalities, 0 / 1,
predicted from the reports by the release's text classifier), ``radiology_text_reports/validation_reports.csv``
(``ClinicalInformation_EN, Technique_EN, Findings_EN, Impressions_EN``) and ``metadata/validation_metadata.csv``
(DICOM header facts: ``Manufacturer, PatientSex, PatientAge, XYSpacing, ZSpacing, RescaleSlope, RescaleIntercept``...).

CT-CLIP evaluates on this validation set (its internal test set): every reconstruction that has labels and a report,
a softmax over "<finding> is present." / "<finding> is not present." per abnormality (``zero_shot.py``), and report ->
volume recall at 5, 10, 50 and 100 (``report_to_volume.py``), the report being Findings + Impressions.

Intensities. The first release (``dataset/valid/``) stored raw scanner values in NIfTI files with blank headers (1 mm
identity geometry, no scaling): they become HU and millimetres only with the metadata's RescaleSlope / Intercept and
spacings, which CT-CLIP's loader applies itself. medclip's volume pipeline reads HU and geometry from the NIfTI header
alone and has no per-volume rescale, so this preset checks every volume's header and first slice and refuses files of
the first kind, pointing at the re-released ``dataset/valid_fixed/`` (headers carrying spacing, orientation and
scaling).
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medclip.bench.base import BenchData, Preset, make_table, missing_images, read_official_csv, register
from medclip.errors import InputError
from medclip.ingest.tables import finding_key
from medclip.io.demographics import age_band, clean_name, normalise_sex

logger = logging.getLogger(__name__)

NAME = "ct-rate"
ABNORMALITIES = (  # the header of valid_predicted_labels.csv, in its order
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)
FIXED_DIR, FIRST_DIR = "dataset/valid_fixed", "dataset/valid"  # the re-release with corrected headers; the first one
LABELS_CSV = "dataset/multi_abnormality_labels/valid_predicted_labels.csv"
REPORTS_CSV = "dataset/radiology_text_reports/validation_reports.csv"
METADATA_CSV = "dataset/metadata/validation_metadata.csv"
REPORT_COLUMNS = ("VolumeName", "Findings_EN", "Impressions_EN")
METADATA_COLUMNS = ("VolumeName", "PatientSex", "PatientAge", "Manufacturer", "XYSpacing", "ZSpacing")
METADATA_COLUMNS += ("RescaleSlope", "RescaleIntercept")
NOT_GIVEN = "Not given."  # the reports' placeholder for an empty section, which CT-CLIP drops
_STRIPPED = re.compile(r"[\"'()]")  # characters CT-CLIP's loader removes from the report text
HU_AIR = -500.0  # any chest CT slice in HU holds air or padding below this (air -1000, outside the FOV -1024..-3024)
SPACING_RTOL = 0.1  # a header spacing further than this from the metadata's is reported (the header is used)
LAYOUT = (
    "point --data at the CT-RATE download (https://huggingface.co/datasets/ibrahimhamamci/CT-RATE, CC BY-NC-SA 4.0), "
    f"the folder holding dataset/, with {FIXED_DIR}/ (valid_<patient>/valid_<patient>_<scan>/"
    f"valid_<patient>_<scan>_<recon>.nii.gz), {LABELS_CSV}, {REPORTS_CSV} and {METADATA_CSV}"
)


def volume_file(folder: Path, volume_name: str) -> Path:
    """``valid_12_a_2.nii.gz`` (with or without the suffix) -> folder/valid_12/valid_12_a/valid_12_a_2.nii.gz."""
    stem = volume_stem(volume_name)
    parts = stem.split("_")
    if len(parts) != 4:
        raise InputError(
            f"ct-rate: VolumeName '{volume_name}' is not valid_<patient>_<scan>_<recon>.nii.gz like the release's"
        )
    split, patient, scan, _ = parts
    return folder / f"{split}_{patient}" / f"{split}_{patient}_{scan}" / f"{stem}.nii.gz"


def volume_stem(volume_name: str) -> str:
    """The CSVs' key without the ``.nii.gz`` suffix (the release writes it in some files and not in others)."""
    name = str(volume_name).strip()
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name


def report_text(findings, impressions) -> str:
    """CT-CLIP's report: Findings then Impressions, "Not given." and blanks dropped, quotes and parentheses removed."""
    parts = []
    for value in (findings, impressions):
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        if text and text != NOT_GIVEN:
            parts.append(_STRIPPED.sub("", text))
    return " ".join(parts)


def parse_spacing(xy, z) -> tuple[float, float, float] | None:
    """(dx, dy, dz) mm from the metadata's ``XYSpacing`` ("[0.75, 0.75]") and ``ZSpacing``; None when unreadable."""
    values = [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", str(xy))]
    try:
        dz = float(z)
    except (TypeError, ValueError):
        return None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(v > 0 for v in (*values, dz)):
        return None
    return values[0], values[1], dz


@dataclass(frozen=True)
class VolumeHeader:
    """What a volume's NIfTI says about itself: geometry codes, the affine's 3x3, voxel sizes and the first slice's
    minimum after the header's scaling (the value medclip's loader will see)."""

    qform_code: int
    sform_code: int
    rotation: np.ndarray  # [3, 3] affine columns (voxel steps in mm)
    zooms: tuple[float, float, float]
    first_min: float


def read_header(path: str | Path) -> VolumeHeader:
    """The header and the first stored slice (the start of the gzip stream only, not the whole volume)."""
    try:
        img = nib.load(str(path))
        first = np.asanyarray(img.dataobj[:, :, 0]) if len(img.shape) >= 3 else np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel / gzip raise many types on a bad file
        raise InputError(
            f"ct-rate: {path} is not a readable NIfTI ({type(exc).__name__}: {exc}); re-download it"
        ) from exc
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return VolumeHeader(
        qform_code=int(img.header["qform_code"]),
        sform_code=int(img.header["sform_code"]),
        rotation=np.asarray(img.affine, dtype=float)[:3, :3],
        zooms=zooms,  # type: ignore[arg-type]
        first_min=float(np.min(first)),
    )


def header_problem(
    header: VolumeHeader, *, spacing: tuple[float, float, float] | None, slope: float, intercept: float
) -> str | None:
    """Why medclip would read this volume wrongly from its header alone, or None.

    ``blank_geometry``: no qform / sform, or the 1 mm identity geometry of the first release where the metadata says
    otherwise. ``raw_values``: the first slice has no air in HU, but would have after the metadata's rescale.
    """
    identity = np.allclose(header.rotation, np.eye(3))
    metadata_is_1mm = spacing is not None and np.allclose(spacing, 1.0, rtol=0.02)
    if (header.qform_code == 0 and header.sform_code == 0) or (identity and not metadata_is_1mm):
        return "blank_geometry"
    if header.first_min >= HU_AIR and header.first_min * slope + intercept < HU_AIR:
        return "raw_values"
    return None


def spacing_differs(header: VolumeHeader, spacing: tuple[float, float, float] | None) -> bool:
    """The header's voxel sizes are not the metadata's (compared sorted, so the storage axis order does not matter)."""
    if spacing is None:
        return False
    return not np.allclose(sorted(header.zooms), sorted(spacing), rtol=SPACING_RTOL)


def _number(value, default: float) -> float:
    """A metadata cell as a float; ``default`` when blank or unreadable (no rescale is then assumed)."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return default if pd.isna(number) else float(number)


def _check_volumes(frame: pd.DataFrame, root: Path, *, workers: int | None = None) -> int:
    """InputError when a volume needs the metadata to become HU / millimetres; -> count of spacing disagreements."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        headers = list(pool.map(read_header, frame["image_path"]))
    problems: dict[str, list[str]] = {"blank_geometry": [], "raw_values": []}
    differs = 0
    for header, row in zip(headers, frame.itertuples(index=False), strict=True):
        spacing = parse_spacing(row.XYSpacing, row.ZSpacing)
        slope, intercept = _number(row.RescaleSlope, 1.0), _number(row.RescaleIntercept, 0.0)
        reason = header_problem(header, spacing=spacing, slope=slope, intercept=intercept)
        if reason:
            problems[reason].append(str(Path(row.image_path).relative_to(root)))
        elif spacing_differs(header, spacing):
            differs += 1
    bad = {k: v for k, v in problems.items() if v}
    if bad:
        what = {
            "blank_geometry": "have no geometry in their NIfTI header (1 mm identity affine)",
            "raw_values": "store raw scanner values that become HU only with the metadata's RescaleSlope/Intercept",
        }
        detail = "; ".join(
            f"{len(v)} of {len(frame)} volumes {what[k]}, e.g. {', '.join(v[:3])}" for k, v in bad.items()
        )
        raise InputError(
            f"bench {NAME}: {detail}. These are CT-RATE's first-release volumes, which CT-CLIP converts with "
            f"{METADATA_CSV}; medclip reads HU and spacing from the NIfTI header only. Download the re-released "
            f"volumes with corrected headers ({FIXED_DIR}/) and run again"
        )
    return differs


def _read_tables(root: Path) -> pd.DataFrame:
    """labels ⋈ reports ⋈ metadata on the volume name (labels drive the selection; reports are left-joined)."""
    labels = read_official_csv(root / LABELS_CSV, ["VolumeName", *ABNORMALITIES], what=NAME)
    reports = read_official_csv(root / REPORTS_CSV, REPORT_COLUMNS, what=NAME)
    meta = read_official_csv(root / METADATA_CSV, METADATA_COLUMNS, what=NAME)
    reports, meta = reports.drop_duplicates(), meta.drop_duplicates()  # a repeated identical row is harmless
    for df in (labels, reports, meta):
        df["stem"] = [volume_stem(v) for v in df["VolumeName"]]
    for df, path in ((labels, LABELS_CSV), (reports, REPORTS_CSV), (meta, METADATA_CSV)):
        dup = df["stem"][df["stem"].duplicated()]
        if len(dup):
            raise InputError(f"bench {NAME}: {root / path} lists {dup.iloc[0]} more than once; use the release's file")
    no_meta = sorted(set(labels["stem"]) - set(meta["stem"]))
    if no_meta:
        raise InputError(
            f"bench {NAME}: {len(no_meta)} volumes of {LABELS_CSV} have no row in {METADATA_CSV}, e.g. "
            f"{', '.join(no_meta[:3])}; the CSVs must come from the same CT-RATE release"
        )
    reports = reports[["stem", "Findings_EN", "Impressions_EN"]]
    meta = meta[["stem", *METADATA_COLUMNS[1:]]]
    return (
        labels.drop(columns="VolumeName").merge(reports, on="stem", how="left", indicator=True).merge(meta, on="stem")
    )


def _notes(n_no_report: int, differs: int) -> list[str]:
    notes = []
    if n_no_report:
        notes.append(f"{n_no_report} labelled volumes have no report in {REPORTS_CSV} and were left out (as CT-CLIP)")
    if differs:
        notes.append(
            f"{differs} volumes' NIfTI voxel sizes differ from {METADATA_CSV} by more than {SPACING_RTOL:.0%}; "
            "medclip resamples with the header's"
        )
    notes.append("no validation split in this protocol: no operating points or calibration are fitted")
    return notes


def _decisions(frame: pd.DataFrame, folder_name: str, n_no_report: int) -> dict:
    return {
        "split": f"CT-RATE validation set ({folder_name}/), CT-CLIP's internal test set; no val split",
        "volumes": "every reconstruction listed in valid_predicted_labels.csv that has a report (CT-CLIP scores per "
        "volume)",
        "n_volumes": int(len(frame)),
        "n_scans": int(frame["study_id"].nunique()),
        "n_patients": int(frame["stem"].str.rsplit("_", n=2).str[0].nunique()),
        "skipped_no_report": n_no_report,
        "label_source": "valid_predicted_labels.csv (18 abnormalities from the release's report classifier), 0 / 1",
        "prompts": '"<finding> is present." vs "<finding> is not present.", softmax over the pair (CT-CLIP zero_shot.py)',
        "report_text": "Findings_EN + Impressions_EN, 'Not given.' dropped, quotes and parentheses removed (CT-CLIP)",
        "retrieval": "report -> volume R@5/10/50/100; a report's hits are the reconstructions of its scan",
        "intensity": "HU and spacing from each NIfTI header; every volume checked for first-release raw values",
    }


def _load(root: Path) -> BenchData:
    folder_name = FIXED_DIR if (root / FIXED_DIR).is_dir() else FIRST_DIR
    folder = root / folder_name
    table = _read_tables(root)
    has_report = (table.pop("_merge") == "both").to_numpy()
    frame = table[has_report].sort_values("stem").reset_index(drop=True)
    n_no_report = int((~has_report).sum())
    if frame.empty:
        raise InputError(f"bench {NAME}: no volume of {LABELS_CSV} has a report in {REPORTS_CSV}")
    frame["image_path"] = [str(volume_file(folder, s)) for s in frame["stem"]]
    missing_images(frame["image_path"], what=f"{NAME} ({folder_name})")
    differs = _check_volumes(frame, root)
    frame["study_id"] = [s.rsplit("_", 1)[0] for s in frame["stem"]]  # the scan: its reconstructions share a report
    frame["split"] = "test"
    frame["report"] = [report_text(f, i) for f, i in zip(frame["Findings_EN"], frame["Impressions_EN"], strict=True)]
    for finding in ABNORMALITIES:
        frame[finding_key(finding)] = pd.to_numeric(frame[finding], errors="coerce")
    frame["sex"] = [normalise_sex(v) for v in frame["PatientSex"]]
    frame["age_band"] = [age_band(v) for v in frame["PatientAge"]]
    frame["manufacturer"] = [clean_name(v) for v in frame["Manufacturer"]]
    notes = _notes(n_no_report, differs)
    decisions = _decisions(frame, folder_name, n_no_report)
    return BenchData(make_table(frame, findings=ABNORMALITIES, source=NAME, report_col="report"), decisions, notes)


register(
    Preset(
        name=NAME,
        title="CT-RATE: zero-shot 18-abnormality AUROC and report -> volume retrieval (CT-CLIP)",
        dataset="CT-RATE validation set (Hamamci et al.), Hugging Face ibrahimhamamci/CT-RATE, CC BY-NC-SA 4.0",
        paper="CT-CLIP (Hamamci et al., arXiv 2403.17834, 'Developing Generalist Foundation Models from a "
        "Multimodal Dataset for 3D Computed Tomography')",
        layout=LAYOUT,
        required=(f"{FIXED_DIR}|{FIRST_DIR}", LABELS_CSV, REPORTS_CSV, METADATA_CSV),
        load=_load,
        tasks=("zeroshot", "retrieval"),
        prompts="ct_rate",
        mode="multilabel",
        findings=tuple(finding_key(f) for f in ABNORMALITIES),
        headline="macro_auroc",
        label_policy="labels are the release's report-classifier predictions, 0 / 1 for every abnormality (no "
        "uncertain class)",
        modality="ct",
        retrieval_ks=(5, 10, 50, 100),
    )
)
