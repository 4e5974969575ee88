"""Synthetic chest X-ray studies for the PACS tests and scripts/bench_dicomweb.py: small valid DX/CR files whose
headers carry every identifier a real study has (names, ids, dates, institution), so de-identification has
something to remove. Deterministic in `seed`."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

SOP_CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
}
VIEWS = ("PA", "LL", "AP", "LATERAL")
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs


@dataclass(frozen=True)
class SyntheticStudy:
    study_uid: str
    patient_id: str
    accession: str
    study_date: str
    modality: str
    files: tuple[Path, ...]


def synthetic_uid(*parts: object) -> str:
    """A valid, deterministic UID (<= 64 chars) from `parts`."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return (UID_ROOT + str(int(digest, 16)))[:64].rstrip(".")


def make_cxr_study(
    directory: str | Path,
    patient_id: str,
    patient_name: str,
    accession: str,
    n_images: int = 2,
    seed: int = 0,
    *,
    modality: str | None = None,
    study_date: str | None = None,
    size: int | None = None,
) -> SyntheticStudy:
    """Write one chest X-ray study (one series per view) as `n_images` DICOM files under `directory`.

    Args:
        directory: output folder (created); files are `<directory>/<accession>/<k>.dcm`.
        patient_id, patient_name, accession: header identifiers (`patient_name` in DICOM PN form, "DOE^JOHN").
        n_images: number of images (views cycle PA, LL, AP, LATERAL).
        seed: drives UIDs, pixel content, image size and dates unless given.
        modality: "DX" or "CR" (default: picked by seed).
        study_date: YYYYMMDD (default: a date in 2015-2022 picked by seed).
        size: square image side in pixels, 16..4096 (default: 64..256, picked by seed; the bench asks for more).
    """
    rng = np.random.default_rng(seed)
    modality = modality or ("DX", "CR")[int(rng.integers(2))]
    if modality not in SOP_CLASS:
        raise ValueError(f"modality {modality!r} is not one of {sorted(SOP_CLASS)}")
    size = size or int(rng.choice([64, 96, 128, 192, 256]))
    if not 16 <= size <= 4096:
        raise ValueError(f"size {size} is outside 16..4096")
    if study_date is None:
        day = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 8 * 365)))
        study_date = day.strftime("%Y%m%d")
    study_uid = synthetic_uid("study", seed, accession)
    out = Path(directory) / accession
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(n_images):
        ds = _dataset(
            rng,
            k=k,
            seed=seed,
            patient_id=patient_id,
            patient_name=patient_name,
            accession=accession,
            modality=modality,
            study_uid=study_uid,
            study_date=study_date,
            size=size,
        )
        path = out / f"{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return SyntheticStudy(study_uid, patient_id, accession, study_date, modality, tuple(files))


def make_cxr_archive(
    directory: str | Path, n_studies: int, *, seed: int = 0, images: int = 2, size: int | None = None
) -> list[SyntheticStudy]:
    """`n_studies` studies from about 2/3 as many patients: patients alternate between two studies and one."""
    studies = []
    for i in range(n_studies):
        p = (2 * i) // 3  # 0, 0, 1, 2, 2, 3, 4, 4, ...
        studies.append(
            make_cxr_study(
                directory,
                patient_id=f"MRN{seed:02d}{p:06d}",
                patient_name=f"PATIENT{p}^TEST^Q",
                accession=f"ACC{seed:02d}{i:07d}",
                n_images=images,
                seed=seed * 1_000_003 + i,
                size=size,
            )
        )
    return studies


def _pixels(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth 12-bit chest-like image: bright mediastinum, two darker lung fields, some noise."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    lungs = np.exp(-(((np.abs(x) - 0.45) / 0.28) ** 2 + (y / 0.6) ** 2))
    img = 2600 - 1500 * lungs + 300 * np.exp(-((x / 0.15) ** 2)) + rng.normal(0, 40, (size, size))
    return np.clip(img, 0, 4095).astype(np.uint16)


def _dataset(
    rng: np.random.Generator,
    *,
    k: int,
    seed: int,
    patient_id: str,
    patient_name: str,
    accession: str,
    modality: str,
    study_uid: str,
    study_date: str,
    size: int,
) -> Dataset:
    view = VIEWS[k % len(VIEWS)]
    series_uid = synthetic_uid("series", seed, accession, k)
    sop_uid = synthetic_uid("sop", seed, accession, k)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "MEDCLIP-TEST-HOSPITAL"
    ds.PatientBirthDate = (
        f"{1930 + int(rng.integers(0, 70))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    )
    ds.PatientSex = ("F", "M")[int(rng.integers(2))]
    ds.PatientAge = f"{int(rng.integers(18, 95)):03d}Y"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = (
        f"{8 + int(rng.integers(0, 10)):02d}{int(rng.integers(0, 60)):02d}00"
    )
    ds.AccessionNumber = accession
    ds.StudyID = accession[-8:]
    ds.ReferringPhysicianName = "REFERRER^ALICE^B^DR"
    ds.PerformingPhysicianName = "TECH^BOB"
    ds.OperatorsName = "OPERATOR^CAROL"
    ds.InstitutionName = "St. Example General Hospital"
    ds.InstitutionAddress = "12 Example Street, Springfield, ST 12345"
    ds.StationName = "XR-ROOM-3"
    ds.Manufacturer = "MEDCLIP"
    ds.StudyDescription = "XR CHEST 2 VIEWS"
    ds.SeriesDescription = f"CHEST {view}"
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.PatientOrientation = ["P", "F"] if view in ("PA", "AP") else ["A", "F"]
    ds.SeriesNumber = k + 1
    ds.InstanceNumber = 1
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = [0.5 * 256 / size] * 2
    ds.PixelSpacing = [0.5 * 256 / size] * 2
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = _pixels(rng, size).tobytes()
    return ds
