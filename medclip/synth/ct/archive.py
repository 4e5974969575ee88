"""Embedded synthetic chest CT demo archive: a hospital-style CT export with free-text reports and labels.

``synth_ct(out_dir)`` writes::

    OUT/dicom/<PatientID>/<StudyDate>-<Accession>/<SeriesNumber>/<NNNN>.dcm   one file per axial slice
    OUT/nifti/<Accession>.nii.gz       about ``nifti_fraction`` of the studies, instead of DICOM
    OUT/nifti/index.csv                file, accession, patient_id, study_id, ... of each NIfTI volume
    OUT/reports/<Accession>.txt        one report per study
    OUT/labels.csv                     ground truth keyed by study_id (StudyInstanceUID), for evaluation only
    OUT/README.txt

Geometry. Volumes come from :func:`medclip.synth.ct.phantom.render` as [D, H, W] with D inferior -> superior.
DICOM slices have ImageOrientationPatient [1,0,0, 0,1,0] (rows run to the patient's left, columns posterior) and
ImagePositionPatient z = z0 + k * dz for render slice k; NNNN is the InstanceNumber, which counts from the top
(head-first), from the bottom (feet-first) or is shuffled, so readers must sort by position. A NIfTI volume is
stored as [i, j, k] = [W, H, D] with a RAS+ affine built from the same LPS geometry, either in L-P-S voxel order
(affine diag(-dx, -dy, dz)) or flipped to R-A-S order (diag(dx, dy, dz)); :func:`medclip.io.volumes.load_volume`
returns exactly what :func:`~medclip.io.volumes.load_series` would for the same study. Everything is driven by
one seed, so reruns are byte-identical, and a smaller ``studies`` gives a prefix of a larger archive.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medclip.errors import InputError
from medclip.synth.common import patient_site, prepare_archive, serial_ids, synthetic_uid, write_csv
from medclip.synth.ct import phantom as ct_phantom
from medclip.synth.ct.findings import CT_FINDINGS, SIDED_FINDINGS, CTFinding, sample_finding
from medclip.synth.ct.phantom import CTAnatomy, render_ct
from medclip.synth.ct.reports import ct_report
from medclip.synth.ct.study import Scanner, Study

logger = logging.getLogger(__name__)

__all__ = ["CT_FINDINGS", "SHAPE", "SIDED_FINDINGS", "render_ct", "synth_ct"]

SHAPE = (48, 96, 96)  # slices x rows x columns: small enough to train ~300 studies on a laptop CPU
SLICE_MM = 5.0
_PIXEL_MM = (3.4, 3.6, 3.8)  # field of view 326-365 mm, chosen to fit the patient
_P_NORMAL = 0.3
# Per-finding probability within abnormal studies; tuned so each lands at roughly 10-30 % of all studies.
_P_FINDING = {
    "lung_nodule": 0.2,
    "pleural_effusion": 0.26,
    "pneumothorax": 0.15,
    "consolidation": 0.27,
    "emphysema": 0.11,
    "pericardial_effusion": 0.14,
    "cardiomegaly": 0.16,
}
_CHRONIC = {"emphysema": 0.95, "lung_nodule": 0.75, "cardiomegaly": 0.8}  # chance to persist to the next study
_ORDERS = ("head_first", "shuffled", "feet_first")


_VENDORS = ("MEDCLIP SYNTHETIC A", "MEDCLIP SYNTHETIC B", "MEDCLIP SYNTHETIC C")
_SCANNERS = (
    Scanner("SYNTHCT64", "Helix 64", False, "B31f", ((40.0,), (400.0,)), "Thorax 5.0 B31f", 0.3, _VENDORS[0]),
    Scanner("SYNTHCT128", "Helix 128", True, "STANDARD", ((40.0, -600.0), (400.0, 1500.0)), "AXIAL 5MM STD", 0.3,
            _VENDORS[0]),
    Scanner("CT-ROOM3", "Spiral 16", False, "LUNG", ((-600.0,), (1600.0,)), "LUNG 5mm", 0.2, _VENDORS[1]),
    Scanner("OLDCT16", "Spiral 16", True, "FC08", ((50.0,), (350.0,)), "CHEST 5.0", 0.2, _VENDORS[2]),
)  # fmt: skip


# --------------------------------------------------------------------------------------------- sampling
def _sample_positives(rng: np.random.Generator, prior: dict[str, CTFinding], smoker: bool) -> tuple[dict, set]:
    """Findings of one study and the names carried over from the patient's previous study."""
    pos: dict[str, CTFinding] = {}
    for name, keep in _CHRONIC.items():
        if name in prior and rng.random() < keep:
            pos[name] = prior[name]  # same place, size and severity: the report can call it unchanged
    carried = set(pos)
    if not pos and rng.random() < _P_NORMAL:
        return pos, carried
    for name in CT_FINDINGS:
        p = _P_FINDING[name]
        if name in ("emphysema", "lung_nodule") and smoker:
            p *= 2.0 if name == "emphysema" else 1.4
        if name in ("pleural_effusion", "pericardial_effusion") and "cardiomegaly" in pos:
            p *= 1.8  # heart failure
        if name not in pos and rng.random() < p:
            pos[name] = sample_finding(name, rng)
    if not pos:
        name = str(rng.choice(CT_FINDINGS))
        pos[name] = sample_finding(name, rng)
    return {n: pos[n] for n in CT_FINDINGS if n in pos}, carried


def _jitter(an: CTAnatomy, rng: np.random.Generator, *, low_dose: bool) -> CTAnatomy:
    """Same patient, new positioning, scan range, breath-hold and dose."""
    dz, breath = float(rng.normal(0, 6)), float(rng.normal(0, 5))
    return replace(
        an,
        shift_x=float(np.clip(rng.normal(0, 6), -15, 15)),
        shift_y=float(np.clip(rng.normal(0, 6), -15, 15)),
        apex_z=an.apex_z + dz,
        dome_right=an.dome_right + dz + breath,
        dome_left=an.dome_left + dz + breath,
        stomach_gas=bool(rng.random() < 0.6),
        noise_hu=float(rng.uniform(10, 18)) * (1.5 if low_dose else 1.0),
    )


def _plan(n_studies: int, seed: int, nifti_fraction: float) -> list[Study]:
    """Patients, studies and findings from ``seed``; a smaller ``n_studies`` gives a prefix of a larger plan."""
    rng = np.random.default_rng([seed, 11])
    accessions, pids = (
        serial_ids(seed, 40_000_009, n_studies, stream=(7,)),
        serial_ids(seed, 27_182_819, n_studies, stream=(7,)),
    )
    weights = np.array([s.weight for s in _SCANNERS])
    scanners = [_SCANNERS[i] for i in rng.permutation(len(_SCANNERS))]  # a tiny archive still shows every variant
    studies: list[Study] = []
    patient_no = 0
    while len(studies) < n_studies:
        patient_no += 1
        sex = "M" if rng.random() < 0.5 else "F"
        age0, smoker = int(rng.integers(25, 88)), bool(rng.random() < 0.35)
        anatomy = ct_phantom.sample_anatomy(rng, female=sex == "F")
        first = dt.date(2013, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3600)))
        day, prior = 0, {}
        for k in range(int(rng.choice([1, 2, 3, 4], p=[0.45, 0.3, 0.17, 0.08]))):
            if len(studies) >= n_studies:
                break
            idx = len(studies)
            day += 0 if k == 0 else int(rng.integers(30, 500))
            pos, carried = _sample_positives(rng, prior, smoker)
            screening = smoker and age0 >= 50 and rng.random() < 0.4
            order = _ORDERS[idx] if idx < len(_ORDERS) else str(rng.choice(_ORDERS, p=[0.5, 0.2, 0.3]))
            axcodes = str(rng.choice(["LPS", "RAS"]))
            scanner = scanners[idx] if idx < len(scanners) else _SCANNERS[rng.choice(len(_SCANNERS), p=weights)]
            fov = anatomy.width_mm + 30
            pixel = next((p for p in _PIXEL_MM if p * SHAPE[2] >= fov), _PIXEL_MM[-1])
            description = (
                "CT CHEST LOW DOSE SCREENING"
                if screening
                else str(
                    rng.choice(
                        [
                            "CT CHEST WITHOUT CONTRAST",
                            "CT CHEST W/O CONTRAST",
                            "CT CHEST WO IV CONTRAST",
                            "CT CHEST ROUTINE",
                        ]
                    )
                )
            )
            studies.append(
                Study(
                    idx=idx,
                    patient_no=patient_no,
                    patient_id=pids[patient_no - 1],
                    sex=sex,
                    age=age0 + day // 365,
                    date=first + dt.timedelta(days=day),
                    time=f"{rng.integers(0, 24):02d}{rng.integers(0, 60):02d}{rng.integers(0, 60):02d}",
                    accession=accessions[idx],
                    uid=_uid(seed, "study", idx),
                    anatomy=_jitter(anatomy, rng, low_dose=screening),
                    scanner=scanner,
                    exam="screening" if screening else "routine",
                    description=description,
                    pixel_mm=pixel,
                    z0=-float(rng.integers(200, 500)) - 0.5 * float(rng.integers(0, 2)),
                    series_number=int(rng.choice([2, 2, 3, 3, 4, 5, 201])),
                    order=order,
                    fmt="nifti" if _is_nifti(idx, nifti_fraction) else "dicom",
                    axcodes=axcodes,
                    has_prior=k > 0,
                    pos=pos,
                    carried=frozenset(carried),
                    site=patient_site(seed, patient_no, stream=12),
                )
            )
            prior = pos
    return studies


def _is_nifti(idx: int, fraction: float) -> bool:
    """Exactly round(n * fraction) of the first n studies are NIfTI, spread evenly, independent of the seed."""
    return int((idx + 1) * fraction + 0.5) > int(idx * fraction + 0.5)


def _uid(seed: int, *parts: object) -> str:
    return synthetic_uid("medclip-synth-ct", seed, *parts)


def _volume(st: Study, seed: int) -> np.ndarray:
    """The study's HU volume rounded to integers, [D, H, W] inferior -> superior."""
    render_seed = int(np.random.default_rng([seed, 3, st.idx]).integers(2**63))
    spacing = (SLICE_MM, st.pixel_mm, st.pixel_mm)
    vol, _ = ct_phantom.render(st.anatomy, list(st.pos.values()), shape=SHAPE, spacing=spacing, seed=render_seed)
    return np.clip(np.rint(vol), -1024, 2047).astype(np.int16)  # 12 stored bits hold both encodings


def _corner(st: Study) -> tuple[float, float]:
    """LPS (x, y) of the first voxel's centre; the reconstruction centre sits on the table axis."""
    return -(SHAPE[2] - 1) / 2 * st.pixel_mm, -(SHAPE[1] - 1) / 2 * st.pixel_mm


# ------------------------------------------------------------------------------------------------ DICOM
def _series_dataset(st: Study, seed: int) -> Dataset:
    """Every attribute the slices of one series share; the slice loop fills in position, number and pixels."""
    sc = st.scanner
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"{st.date:%Y%m%d}"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = st.time
    ds.AccessionNumber = st.accession
    ds.Modality = "CT"
    ds.Manufacturer, ds.ManufacturerModelName, ds.StationName = sc.manufacturer, sc.model, sc.name
    ds.InstitutionName = st.site
    ds.ReferringPhysicianName = ""
    ds.StudyDescription, ds.SeriesDescription = st.description, sc.series
    ds.PatientName = f"SYNTH^P{st.patient_no:04d}"
    ds.PatientID, ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = st.patient_id, "", st.sex, f"{st.age:03d}Y"
    ds.BodyPartExamined, ds.PatientPosition = "CHEST", "HFS"
    ds.SliceThickness = ds.SpacingBetweenSlices = f"{SLICE_MM:g}"
    ds.KVP, ds.ConvolutionKernel = "100" if st.exam == "screening" else "120", sc.kernel
    ds.StudyInstanceUID, ds.SeriesInstanceUID = st.uid, _uid(seed, "series", st.idx)
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = _uid(seed, "frame", st.idx), ""
    ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber = st.accession[-6:], st.series_number, 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = SHAPE[1], SHAPE[2]
    ds.PixelSpacing = [f"{st.pixel_mm:g}"] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, int(sc.signed)
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0" if sc.signed else "-1024", "1", "HU"
    centres, widths = sc.window
    ds.WindowCenter = [f"{v:g}" for v in centres] if len(centres) > 1 else f"{centres[0]:g}"
    ds.WindowWidth = [f"{v:g}" for v in widths] if len(widths) > 1 else f"{widths[0]:g}"
    return ds


def _instance_numbers(st: Study, seed: int) -> np.ndarray:
    """InstanceNumber of each render slice k (inferior -> superior)."""
    n = SHAPE[0]
    if st.order == "feet_first":
        return np.arange(1, n + 1)
    if st.order == "head_first":
        return np.arange(n, 0, -1)
    if st.order == "shuffled":
        return np.random.default_rng([seed, 4, st.idx]).permutation(n) + 1
    raise RuntimeError(f"unknown slice order {st.order!r}; expected one of {_ORDERS}")


def _write_dicom(out: Path, st: Study, hu: np.ndarray, seed: int) -> Path:
    folder = out / "dicom" / st.patient_id / f"{st.date:%Y%m%d}-{st.accession}" / str(st.series_number)
    folder.mkdir(parents=True, exist_ok=True)
    stored = hu if st.scanner.signed else (hu.astype(np.int32) + 1024).astype("<u2")
    stored = stored.astype("<i2" if st.scanner.signed else "<u2", copy=False)
    ds = _series_dataset(st, seed)
    x0, y0 = _corner(st)
    for k, number in enumerate(_instance_numbers(st, seed)):
        sop = _uid(seed, "sop", st.idx, int(number))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = sop
        ds.InstanceNumber = int(number)
        z = st.z0 + k * SLICE_MM
        ds.ImagePositionPatient = [f"{x0:.2f}", f"{y0:.2f}", f"{z:.2f}"]
        ds.SliceLocation = f"{z:.2f}"
        ds.PixelData = stored[k].tobytes()
        ds["PixelData"].VR = "OW"
        ds.save_as(folder / f"{int(number):04d}.dcm", enforce_file_format=True)
    return folder


# ------------------------------------------------------------------------------------------------ NIfTI
def _nifti_affine(st: Study) -> tuple[np.ndarray, bool]:
    """(RAS+ affine of the stored [W, H, D] array, whether W and H are flipped to R-A order)."""
    x0, y0 = _corner(st)
    p = st.pixel_mm
    if st.axcodes == "LPS":  # i -> patient left, j -> posterior, k -> superior
        return np.array([[-p, 0, 0, -x0], [0, -p, 0, -y0], [0, 0, SLICE_MM, st.z0], [0, 0, 0, 1]]), False
    if st.axcodes == "RAS":  # i -> patient right, j -> anterior: the first stored voxel is the LPS grid's last
        x1, y1 = x0 + (SHAPE[2] - 1) * p, y0 + (SHAPE[1] - 1) * p
        return np.array([[p, 0, 0, -x1], [0, p, 0, -y1], [0, 0, SLICE_MM, st.z0], [0, 0, 0, 1]]), True
    raise RuntimeError(f"unknown NIfTI orientation {st.axcodes!r}; expected 'LPS' or 'RAS'")


def _write_nifti(out: Path, st: Study, hu: np.ndarray) -> Path:
    affine, flip = _nifti_affine(st)
    data = hu.transpose(2, 1, 0)  # [D, H, W] -> [i, j, k] = [W, H, D]
    if flip:
        data = data[::-1, ::-1, :]
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.set_qform(affine, code=1)  # scanner coordinates
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"medclip synthetic CT (HU)"
    path = out / "nifti" / f"{st.accession}.nii.gz"
    nib.save(img, path)
    return path


# ---------------------------------------------------------------------------------------------- archive
_README_MARK = "SYNTHETIC chest CT demo archive written by medclip.synth.ct.archive"
_INDEX_HEADER = [
    "file",
    "accession",
    "patient_id",
    "study_id",
    "study_date",
    "patient_sex",
    "patient_age",
    "study_description",
    "axcodes",
    "manufacturer",
    "site",
]


def _label_rows(plan: list[Study]) -> tuple[list[str], list[list[object]]]:
    header = [
        "study_id",
        "accession",
        "patient_id",
        *CT_FINDINGS,
        "no_finding",
        *(f"{n}_side" for n in SIDED_FINDINGS),
        "lung_nodule_mm",
        "format",
    ]
    rows = []
    for st in plan:
        flags = [int(n in st.pos) for n in CT_FINDINGS]
        sides = [st.pos[n].side if n in st.pos else "" for n in SIDED_FINDINGS]
        size = f"{st.pos['lung_nodule'].size_mm:g}" if "lung_nodule" in st.pos else ""
        rows.append([st.uid, st.accession, st.patient_id, *flags, int(not any(flags)), *sides, size, st.fmt])
    return header, rows


def synth_ct(out_dir: str | Path, *, studies: int = 300, seed: int = 0, nifti_fraction: float = 0.2) -> dict:
    """Write the synthetic chest CT archive (DICOM + NIfTI volumes, reports, labels) to ``out_dir``.

    Args:
        out_dir: Target directory; created if missing. A previous synthetic archive there is replaced.
        studies: Number of studies; each is one axial series of 48 x 96 x 96 voxels (5 mm x ~3.6 mm).
        seed: Controls everything; the same seed gives byte-identical files.
        nifti_fraction: Share of studies written as ``nifti/<Accession>.nii.gz`` instead of a DICOM series.

    Returns:
        {"patients", "studies", "series" (DICOM series), "nifti" (NIfTI volumes), "prevalence": {finding: fraction
        of studies, incl. "no_finding"}, "out_dir", "seconds"}.
    """
    if isinstance(studies, bool) or not isinstance(studies, int) or studies < 1:
        raise InputError(f"studies must be an integer >= 1, got {studies!r}")
    if not 0.0 <= float(nifti_fraction) <= 1.0:
        raise InputError(f"nifti_fraction must be in [0, 1], got {nifti_fraction!r}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    prepare_archive(out, _README_MARK, ("dicom", "nifti", "reports"))
    plan = _plan(studies, seed, float(nifti_fraction))
    index = []
    for st in plan:
        hu = _volume(st, seed)
        if st.fmt == "nifti":
            path = _write_nifti(out, st, hu)
            index.append(
                [
                    path.relative_to(out).as_posix(),
                    st.accession,
                    st.patient_id,
                    st.uid,
                    f"{st.date:%Y%m%d}",
                    st.sex,
                    f"{st.age:03d}Y",
                    st.description,
                    st.axcodes,
                    st.scanner.manufacturer,
                    st.site,
                ]
            )
        else:
            _write_dicom(out, st, hu, seed)
        (out / "reports" / f"{st.accession}.txt").write_text(ct_report(st, seed), encoding="utf-8", newline="\n")
    write_csv(out / "nifti" / "index.csv", _INDEX_HEADER, index)
    write_csv(out / "labels.csv", *_label_rows(plan))
    (out / "README.txt").write_text(_README_MARK + _README.format(n=studies, seed=seed), encoding="utf-8")
    prevalence = {n: sum(n in st.pos for st in plan) / len(plan) for n in CT_FINDINGS}
    summary = {
        "patients": len({st.patient_id for st in plan}),
        "studies": len(plan),
        "series": len(plan) - len(index),
        "nifti": len(index),
        "prevalence": prevalence | {"no_finding": sum(not st.pos for st in plan) / len(plan)},
        "out_dir": str(out),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    logger.info(
        "synthetic CT archive: %d patients, %d studies (%d DICOM series, %d NIfTI) in %.1fs -> %s",
        summary["patients"],
        len(plan),
        summary["series"],
        len(index),
        summary["seconds"],
        out,
    )
    return summary


_README = """ ({n} studies, seed {seed}).

Nothing here comes from a real patient. Volumes are procedural numpy phantoms (medclip.synth.ct.phantom: body wall,
lungs with bronchovascular trees, heart, great vessels, spine, ribs, upper abdomen, findings, noise) in Hounsfield
units, written as CT DICOM series (uint16 with intercept -1024 or int16 with intercept 0, 12 stored bits, shuffled
or reversed InstanceNumber) or as NIfTI. Reports are generated from the same ground truth with varied wording,
hedging, negations and de-identification placeholders (XXXX, ___).

dicom/<PatientID>/<StudyDate>-<Accession>/<SeriesNumber>/<InstanceNumber>.dcm   sort slices by ImagePositionPatient
nifti/<Accession>.nii.gz        RAS+ affine; voxel order L-P-S or R-A-S (see nifti/index.csv "axcodes")
nifti/index.csv                 accession, patient and StudyInstanceUID of each NIfTI volume
reports/<Accession>.txt         one report per study
labels.csv                      ground truth keyed by study_id = StudyInstanceUID, for evaluation only
"""
