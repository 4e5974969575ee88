"""De-identify retrieved DICOM instances: PS3.15 Basic Application Level Confidentiality Profile.

Built on dicognito (replaces every UID deterministically from a seed, every PN, the patient/visit/order ids,
addresses, equipment and institution names; shifts dates and times by one seed-derived offset), plus what the
profile asks and dicognito leaves: private elements removed, comment/history/free-text attributes removed,
descriptions kept but scrubbed (Clean Descriptors Option), and a final sweep that blanks any text element still
holding one of the instance's own identifiers. Pixel data and the attributes image readers need are not touched.
"""

from __future__ import annotations

import copy
import logging
import re
from importlib.metadata import version

from dicognito.anonymizer import Anonymizer
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from medclip.deid.identifiers import KnownIdentifiers, dataset_identifiers
from medclip.deid.text import DeidError, TextScrubber
from medclip.deid.words import wordlist

logger = logging.getLogger(__name__)

__all__ = ["DEID_METHOD", "REMOVED_KEYWORDS", "deidentify_dataset", "has_burned_in_text"]

# Table E.1-1 attributes with action X (remove) whose content is free text, history or a person's detail, and
# which dicognito does not replace. Sequences named here go whole (they may hold reports or photos).
REMOVED_KEYWORDS = frozenset(
    wordlist(
        """
    PatientComments AdditionalPatientHistory StudyComments ImageComments FrameComments VisitComments
    RequestedProcedureComments ImagingServiceRequestComments InterpretationText TextComments TextString
    AcquisitionComments ContrastBolusAgent DerivationDescription PerformedProcedureStepDescription
    ScheduledProcedureStepDescription RequestedProcedureDescription ReasonForTheRequestedProcedure ReasonForStudy
    ReasonForVisit AdmittingDiagnosesDescription AdmittingDiagnosesCodeSequence MedicalAlerts Allergies
    PatientState PregnancyStatus SmokingStatus SpecialNeeds EthnicGroup PatientSexNeutered PatientBirthTime
    PatientBirthName PatientMotherBirthName PatientAge PatientSize PatientWeight PatientSizeCodeSequence
    OtherPatientNames OtherPatientIDs OtherPatientIDsSequence IssuerOfPatientID IssuerOfPatientIDQualifiersSequence
    PatientIdentityRemoved DeidentificationMethod DeidentificationMethodCodeSequence PersonIdentificationCodeSequence
    ReferencedPatientSequence ReferencedPatientAliasSequence ReferencedPatientPhotoSequence RequestAttributesSequence
    ContentSequence OriginalAttributesSequence ModifiedAttributesSequence IconImageSequence DigitalSignaturesSequence
    MACParametersSequence DeviceSerialNumber InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence
    CountryOfResidence RegionOfResidence PatientInsurancePlanCodeSequence InsurancePlanIdentification
    ResponsiblePerson ResponsiblePersonRole ResponsibleOrganization PatientTelecomInformation
    PersonTelecomInformation PersonTelephoneNumbers PersonAddress ReferringPhysicianTelephoneNumbers
    ReferringPhysicianAddress ConsultingPhysicianIdentificationSequence PhysiciansOfRecordIdentificationSequence
    PerformingPhysicianIdentificationSequence PhysiciansReadingStudyIdentificationSequence
    ReferringPhysicianIdentificationSequence OperatorIdentificationSequence ProtocolName ClinicalTrialSponsorName
    ClinicalTrialSiteName ClinicalTrialSubjectID ClinicalTrialSubjectReadingID AdmissionID IssuerOfAdmissionID
    ServiceEpisodeID ServiceEpisodeDescription CurrentPatientLocation PatientInstitutionResidence
    AssignedLocation ScheduledPatientInstitutionResidence
    """
    )
)
# Descriptions that help users find series ("CHEST PA") are kept, scrubbed like report text (option 113105).
CLEANED_KEYWORDS = ("StudyDescription", "SeriesDescription", "BodyPartExamined", "ViewName")
# Never blanked by the final sweep: what the image readers and the manifest read.
_READER_KEYWORDS = frozenset(
    wordlist(
        """
    Modality ViewPosition PhotometricInterpretation ImageType BodyPartExamined PatientOrientation
    PresentationIntentType RescaleType WindowCenterWidthExplanation VOILUTFunction LossyImageCompression
    LossyImageCompressionMethod PixelPaddingValue TransferSyntaxUID SOPClassUID MediaStorageSOPClassUID
    """
    )
)
_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE"})
_PROFILE_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113105", "Clean Descriptors Option"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
DEID_METHOD = "medclip.deid: PS3.15 Basic Profile (dicognito {v}), private tags removed, descriptors cleaned"

_SCRUBBER: TextScrubber | None = None


def has_burned_in_text(ds: Dataset) -> bool:
    """True when the header says identifiers may be burned into the pixels (they are not removed here)."""
    return str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES"


def deidentify_dataset(ds: Dataset, salt: str, *, in_place: bool = False) -> Dataset:
    """A de-identified copy of ``ds`` (or ``ds`` itself with ``in_place``) for storing retrieved PACS instances.

    UIDs map deterministically from ``salt`` (one input UID -> one output UID, so series, studies and references
    stay consistent across instances and runs with the same salt); ids and names map likewise. Dates move by one
    salt-derived offset (intervals are kept). PixelData, geometry, LUT and transfer syntax are left bit-exact.
    Pixels are not inspected: see :func:`has_burned_in_text`.
    """
    if not salt:
        raise ValueError("deidentify_dataset needs a non-empty salt (the same one for every instance of a run)")
    out = ds if in_place else copy.deepcopy(ds)
    known = KnownIdentifiers.from_pairs(
        (k, v) for k, v in dataset_identifiers(out) if k in ("name", "id", "address", "phone", "email")
    )
    out.remove_private_tags()
    _remove(out, REMOVED_KEYWORDS)
    global _SCRUBBER
    if _SCRUBBER is None:
        _SCRUBBER = TextScrubber()
    for elem in out.iterall():
        if elem.keyword in CLEANED_KEYWORDS and isinstance(elem.value, str) and elem.value:
            elem.value = _SCRUBBER.scrub(elem.value, known).text
    _blank_malformed_times(out)
    had_meta = "file_meta" in out.__dict__  # a DIMSE C-STORE/C-GET dataset often has no file meta
    if not had_meta:
        out.file_meta = FileMetaDataset()
    try:
        Anonymizer(seed=salt).anonymize(out)
    except Exception as exc:  # fail closed, and without the value (dicognito's messages quote it)
        raise DeidError(f"DICOM de-identification failed ({type(exc).__name__}); reject this instance") from None
    if not had_meta:
        del out.file_meta
    _sweep(out, known)
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEID_METHOD.format(v=version("dicognito"))[:64]
    out.DeidentificationMethodCodeSequence = Sequence([_code(v, m) for v, m in _PROFILE_CODES])
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    return out


_TIME_FORMS = {
    "DA": re.compile(r"\d{8}"),
    "DT": re.compile(r"\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?(?:[+-]\d{4})?"),
    "TM": re.compile(r"\d{2}(?:\d{2}){0,2}(?:\.\d{1,6})?|\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?"),
}


def _blank_malformed_times(ds: Dataset) -> None:
    """Empty DA/DT/TM values that are not DICOM dates/times: they cannot be shifted, so they must not stay."""
    for elem in ds.iterall():
        form = _TIME_FORMS.get(elem.VR)
        if form is None or not elem.value:
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        if not all(form.fullmatch(str(v).strip()) for v in values):
            elem.value = ""


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _remove(ds: Dataset, keywords: frozenset[str]) -> None:
    for elem in list(ds):
        if elem.keyword in keywords:
            del ds[elem.tag]
        elif elem.VR == "SQ":
            for item in elem.value:
                _remove(item, keywords)


def _sweep(ds: Dataset, known: KnownIdentifiers) -> None:
    """Blank any text element that still holds one of the instance's own identifiers (e.g. a name in a label)."""
    if not known:
        return
    for elem in ds.iterall():
        if elem.VR not in _TEXT_VRS or elem.keyword in _READER_KEYWORDS or not elem.value:
            continue
        values = elem.value if isinstance(elem.value, list | tuple) or elem.VM > 1 else [elem.value]
        if any(known.find(str(v)) for v in values):
            logger.debug("blanked %s: it still held an identifier of the instance", elem.keyword or elem.tag)
            elem.value = ""
