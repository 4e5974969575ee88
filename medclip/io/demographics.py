"""Non-identifying subgroup columns (sex, age band, view, manufacturer, site) and how raw values become them.

A manifest, an evaluation CSV and a benchmark preset all carry the same columns, so ``medclip eval`` can report every
metric per subgroup. Ages are kept only as bands: a birth date or an exact age never reaches a table.
"""

from __future__ import annotations

import datetime as dt
import math
import re

SUBGROUP_COLUMNS = ("sex", "age_band", "view", "manufacturer", "site")
AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 60, "40-59"), (60, 80, "60-79"), (80, math.inf, "80+"))
BAND_NAMES = tuple(name for _, _, name in AGE_BANDS)
MAX_AGE = 130  # an older "age" is a date error (a birth date of 1900-01-01 placeholder, a swapped field): unknown
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)  # DICOM AS ("065Y", "006M") or a plain number
_UNIT_YEARS = {"": 1.0, "Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
_SEX = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}


def age_years(value) -> float | None:
    """Years from a DICOM Age String ("065Y", "006M", "010D"), a number, or None when absent / unreadable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    match = _AGE.match(str(value))
    if not match:
        try:  # a table's "65.5" or " 70.0 "
            years = float(str(value).strip())
        except ValueError:
            return None
        return years if 0 <= years < math.inf else None
    return int(match.group(1)) * _UNIT_YEARS[match.group(2).upper()]


def _date(value) -> dt.date | None:
    """A DICOM DA ("19550314", legacy "1955.03.14") -> date; None when absent or not a valid date."""
    digits = re.sub(r"[^0-9]", "", str(value or ""))
    if len(digits) < 8:
        return None
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def age_from_dates(birth_date, on_date) -> int | None:
    """Whole years from a DICOM PatientBirthDate to a StudyDate (both DA); None when either is missing or invalid.

    The result is only ever turned into a band (:func:`age_band`): neither the birth date nor the exact age is stored.
    """
    birth, on = _date(birth_date), _date(on_date)
    if birth is None or on is None:
        return None
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return years if 0 <= years <= MAX_AGE else None


def age_band(value) -> str:
    """The age band ("0-17", "18-39", "40-59", "60-79", "80+") of a DICOM Age String or a number; "" if unknown."""
    if isinstance(value, str) and value.strip() in BAND_NAMES:  # already a band (a table written by medclip)
        return value.strip()
    years = age_years(value)
    if years is None or years > MAX_AGE:
        return ""
    return next(name for lo, hi, name in AGE_BANDS if lo <= years < hi)


def normalise_sex(value) -> str:
    """Sex as "M" / "F" / "O" from DICOM PatientSex or a CSV's "Male" / "Female"; "" when absent or unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _SEX.get(str(value).strip().upper(), "")


def clean_name(value) -> str:
    """A free-text header value (Manufacturer, InstitutionName) with its whitespace collapsed; "" when absent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).split())
