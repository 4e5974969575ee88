"""deidentify_dataset: no planted header identifier survives in the written bytes; pixels and geometry do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medclip.deid.dicom import deidentify_dataset, has_burned_in_text
from medclip.io.dicom import load_image

SALT = "unit-test-salt"
PLANTED = {
    "PatientName": "KOWALCZYK^ZBIGNIEW^QUENTIN",
    "ReferringPhysicianName": "OYELARAN^ADEBAYO",
    "PerformingPhysicianName": "THISTLEWOOD^MAREN",
    "OperatorsName": "VANTONGEREN^ILSE",
    "NameOfPhysiciansReadingStudy": "BRACKENRIDGE^OSWIN",
    "PatientID": "MRN7788123",
    "AccessionNumber": "ACC99312",
    "StudyID": "STU4471",
    "PatientAddress": "4711 Quillfeather Lane^Zanesborough^OH^43701",
    "PatientTelephoneNumbers": "740-555-0199",
    "PatientBirthDate": "19510304",
    "InstitutionName": "Marrowgate Memorial",
    "InstitutionAddress": "88 Larkspur Court, Pemberdale",
    "StationName": "XRAYROOM9Q",
    "ImageComments": "patient Kowalczyk chart MRN7788123",
    "StudyDescription": "CHEST PA Kowalczyk",
    "PatientComments": "sister Wilhelmina Kowalczyk",
    "MedicalRecordLocator": "SHELF88QX",
}
NESTED = {"RequestingPhysician": "FAIRWEATHER^CORDELIA", "AccessionNumber": "ACC99312", "PatientID": "ALT55512"}
PRIVATE = "Pettigrew private note"
# Every value that must not appear in the output bytes (raw, and the parts a PN or address is made of).
NEEDLES = sorted(
    {p for v in [*PLANTED.values(), *NESTED.values(), PRIVATE] for p in [v, *v.replace(",", "^").split("^")] if len(p) > 3}
    - {"CHEST PA Kowalczyk", "CHEST", "Lane"}  # "CHEST" is kept in the cleaned description, "Lane" too common
)  # fmt: skip


def _plant(ds: Dataset) -> Dataset:
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    item = Dataset()
    for keyword, value in NESTED.items():
        setattr(item, keyword, value)
    deeper = Dataset()
    deeper.ContentCreatorName = "GALLOWAY^PERPETUA"
    item.ReferencedStudySequence = Sequence([deeper])
    ds.RequestAttributesSequence = Sequence([item])
    other = Dataset()
    other.PatientID = "ALT55512"
    ds.OtherPatientIDsSequence = Sequence([other])
    block = ds.private_block(0x0011, "ACME PACS", create=True)
    block.add_new(0x01, "LO", PRIVATE)
    inner = Dataset()
    inner.PatientName = "PETTIGREW^ALOYSIUS"
    block.add_new(0x02, "SQ", Sequence([inner]))
    return ds


def _synthetic_dx() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "DX", "PA", "CHEST"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 64, 48, 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing, ds.RescaleSlope, ds.RescaleIntercept = [0.2, 0.2], 1, 0
    ds.WindowCenter, ds.WindowWidth, ds.StudyDate = 2000, 3000, "20200102"
    ds.PixelData = np.random.default_rng(0).integers(0, 4095, (64, 48), dtype=np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _sources() -> list:
    params = [pytest.param(_synthetic_dx, id="synthetic-dx")]
    for name in ("CT_small.dcm", "RG1_J2KR.dcm", "eCT_Supplemental.dcm"):
        path = get_testdata_file(name)
        mark = pytest.mark.skipif(path is None, reason=f"pydicom test file {name} is not installed (pydicom-data)")
        params.append(pytest.param(lambda path=path: pydicom.dcmread(path), id=name, marks=mark))
    return params


READER_KEYWORDS = [
    "Modality", "ViewPosition", "BodyPartExamined", "Rows", "Columns", "PhotometricInterpretation", "BitsStored",
    "BitsAllocated", "HighBit", "PixelRepresentation", "SamplesPerPixel", "RescaleSlope", "RescaleIntercept",
    "WindowCenter", "WindowWidth", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
    "SliceThickness", "NumberOfFrames", "SOPClassUID",
]  # fmt: skip


def _geometry(seq) -> list:
    """Non-UID, non-date values of a functional-group sequence (what readers take per frame)."""
    return [(e.tag, str(e.value)) for item in seq for e in item.iterall() if e.VR not in ("UI", "DA", "DT", "TM", "SQ")]


@pytest.mark.parametrize("make", _sources())
def test_no_planted_identifier_survives_and_pixels_are_kept(make, tmp_path: Path):
    original = _plant(make())
    src = tmp_path / "in.dcm"
    original.save_as(src, enforce_file_format=True)
    original = pydicom.dcmread(src)
    out = deidentify_dataset(original, SALT)
    dst = tmp_path / "out.dcm"
    out.save_as(dst, enforce_file_format=True)
    raw = dst.read_bytes()
    hits = [n for n in NEEDLES if n.encode() in raw or n.upper().encode() in raw]
    assert hits == []
    assert original.StudyInstanceUID.encode() not in raw and original.SOPInstanceUID.encode() not in raw
    assert out.PixelData == original.PixelData
    assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    for keyword in READER_KEYWORDS:
        assert out.get(keyword) == original.get(keyword), keyword
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if keyword in original:
            assert _geometry(out[keyword].value) == _geometry(original[keyword].value)
    assert out.PatientIdentityRemoved == "YES" and out.DeidentificationMethod
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert not any(e.tag.is_private for e in out.iterall())
    assert "CHEST PA" in out.StudyDescription
    image_in, _ = load_image(src)
    image_out, meta = load_image(dst)
    np.testing.assert_array_equal(image_out, image_in)
    assert meta["patient_id"] != PLANTED["PatientID"]


def test_uids_map_deterministically_from_the_salt():
    a, b = _synthetic_dx(), _synthetic_dx()
    b.StudyInstanceUID, b.SeriesInstanceUID = a.StudyInstanceUID, a.SeriesInstanceUID  # two images of one series
    da, db = deidentify_dataset(a, SALT), deidentify_dataset(b, SALT)
    assert da.SeriesInstanceUID == db.SeriesInstanceUID != a.SeriesInstanceUID
    assert da.StudyInstanceUID == db.StudyInstanceUID
    assert da.SOPInstanceUID != db.SOPInstanceUID
    assert da.file_meta.MediaStorageSOPInstanceUID == da.SOPInstanceUID
    assert deidentify_dataset(a, SALT).SOPInstanceUID == da.SOPInstanceUID  # same salt, same answer
    assert deidentify_dataset(a, "other-salt").SOPInstanceUID != da.SOPInstanceUID
    assert all(len(u) <= 64 and set(u) <= set("0123456789.") for u in (da.SOPInstanceUID, da.StudyInstanceUID))


def test_input_is_not_modified_unless_in_place():
    ds = _plant(_synthetic_dx())
    before = ds.PatientName
    deidentify_dataset(ds, SALT)
    assert ds.PatientName == before
    same = deidentify_dataset(ds, SALT, in_place=True)
    assert same is ds and ds.PatientName != before


def test_empty_salt_is_refused():
    with pytest.raises(ValueError, match="salt"):
        deidentify_dataset(_synthetic_dx(), "")


def test_burned_in_annotation_is_reported():
    ds = _synthetic_dx()
    assert not has_burned_in_text(ds)
    ds.BurnedInAnnotation = "YES"
    assert has_burned_in_text(ds)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("StudyDate", "notadate"), ("PatientBirthDate", "1951"), ("StudyTime", "garbage"), ("AcquisitionDateTime", "x")],
)
def test_malformed_dates_are_blanked_not_fatal(keyword, value):
    ds = _synthetic_dx()
    with pytest.warns(UserWarning):
        setattr(ds, keyword, value)
    out = deidentify_dataset(ds, SALT)
    assert out[keyword].value in ("", None)


def test_dataset_without_file_meta_is_handled():
    ds = _synthetic_dx()
    del ds.file_meta
    out = deidentify_dataset(ds, SALT)
    assert out.PatientIdentityRemoved == "YES" and "file_meta" not in out.__dict__


def test_engine_failure_fails_closed_without_values(monkeypatch):
    from dicognito.anonymizer import Anonymizer

    from medclip.deid.text import DeidError

    def boom(self, ds):
        raise ValueError(f"bad value {ds.PatientName}")

    monkeypatch.setattr(Anonymizer, "anonymize", boom)
    ds = _plant(_synthetic_dx())
    with pytest.raises(DeidError) as info:
        deidentify_dataset(ds, SALT)
    assert "KOWALCZYK" not in str(info.value).upper()
