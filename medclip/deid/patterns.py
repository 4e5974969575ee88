"""Regular-expression building blocks shared by the text scrubber and the exact-match identifiers.

Dates are the one identifier whose written forms vary too much for token matching, so both users find date-like
spans with :data:`DATE_RE` and compare the canonical ``YYYYMMDD`` readings of a span (:func:`date_readings`).
"""

from __future__ import annotations

import datetime as dt

import regex

__all__ = ["DATE_RE", "MONTHS", "TIME", "date_readings"]

MONTHS: dict[str, int] = {}
for _number, _name in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
     "december"),
    start=1,
):  # fmt: skip
    MONTHS[_name] = _number
    MONTHS[_name[:3]] = _number
MONTHS["sept"] = 9


def _month_alternation(*, allow_may: bool) -> str:
    # Month names only in Title or UPPER case: "may", "mar", "jan" in lower case are ordinary words in reports.
    names = sorted((n for n in MONTHS if allow_may or n != "may"), key=len, reverse=True)
    return "(?:" + "|".join(f"{n.title()}|{n.upper()}" for n in names) + r")\.?"


MON = _month_alternation(allow_may=True)
MON_NO_MAY = _month_alternation(allow_may=False)
DAY = r"(?:0?[1-9]|[12]\d|3[01])"
MONTH_NUM = r"(?:0?[1-9]|1[0-2])"
YEAR4 = r"(?:19|20)\d{2}"
YEAR = r"(?:(?:19|20)?\d{2})"
ORD = r"(?:st|nd|rd|th)"
# A time attached to a date: "01/02/2020 10:15", "Jan 2, 2020 at 3:15 PM", "2020-01-02T10:15:00Z", "... 1015 hrs".
TIME = (
    r"(?:(?:T|,?\s+(?:at\s+)?)(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?:\s*[AaPp]\.?[Mm]\.?)?"
    r"(?:Z|[+-][0-2]\d:?[0-5]\d)?"
    r"|T(?:[01]\d|2[0-3])[0-5]\d(?:[0-5]\d(?:\.\d+)?)?"
    r"|,?\s+(?:at\s+)?(?:1[0-2]|0?[1-9])\s*[AaPp]\.?[Mm]\b\.?"
    r"|,?\s+(?:at\s+)?(?:[01]\d|2[0-3])[0-5]\d\s*(?:hrs|hours|h)\b)"
)

_DATE_FORMS = [
    # 01/02/2020, 1/2/20, 01-02-2020 (month or day first: both readings are kept)
    rf"{DAY}/{DAY}/{YEAR}(?!/)",
    rf"{DAY}-{DAY}-{YEAR4}",
    # 02.01.2020, 02.01.20 (two-digit day and month, so that "1.5.20" is not read as a date)
    rf"(?:{DAY}\.{MONTH_NUM}\.{YEAR4}|(?:0[1-9]|[12]\d|3[01])\.(?:0[1-9]|1[0-2])\.\d{{2}})(?![.\d])",
    # 2020-01-02, 2020/01/02, 2020.01.02, 20200102
    rf"{YEAR4}[-/.]{MONTH_NUM}[-/.]{DAY}",
    rf"{YEAR4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])",
    # Jan 2, 2020 / January 2nd 2020 / JAN 2 / Jan. 2 (May needs a year or an ordinal: "May 2" is too ambiguous)
    rf"{MON}\s+{DAY}{ORD}?,?\s+{YEAR4}",
    rf"{MON_NO_MAY}\s+{DAY}{ORD}?",
    rf"{MON}\s+{DAY}{ORD}",
    # 2 January 2020 / 2nd of Jan, 2020 / 02-JAN-2020 / 2 Jan
    rf"{DAY}{ORD}?(?:\s+of)?\s+{MON},?\s+{YEAR4}",
    rf"{DAY}-{MON}-{YEAR}",
    rf"{DAY}{ORD}?(?:\s+of)?\s+{MON_NO_MAY}",
    # January 2020 / Jan-2020
    rf"{MON}[\s,-]+{YEAR4}",
]
DATE_RE = regex.compile(rf"(?<![\w/.-])(?:{'|'.join(_DATE_FORMS)})(?:{TIME})?(?![\w/-])")

_NUMS = regex.compile(r"\d+|[A-Za-z]+")


def _valid(year: int, month: int, day: int) -> str | None:
    if year < 100:
        year += 2000 if year < 50 else 1900
    try:
        return dt.date(year, month, day).strftime("%Y%m%d")
    except ValueError:
        return None


def date_readings(span: str) -> set[str]:
    """Every ``YYYYMMDD`` a date-like span can stand for ("01/02/2020" -> Jan 2 and Feb 1); month-only forms give
    ``YYYYMM`` and day-month forms without a year give ``MMDD`` (compared as such).
    """
    span = regex.split(r"T\d|\s+at\s+|\s\d{1,2}:\d|,?\s\d{1,2}\s*[AaPp]\.?[Mm]|\s\d{4}\s*h", span, maxsplit=1)[0]
    parts = _NUMS.findall(span)
    nums = [p for p in parts if p.isdigit()]
    month_word = next((MONTHS[p.casefold()] for p in parts if p.casefold() in MONTHS), None)
    out: set[str] = set()
    if month_word is not None:
        days = [int(n) for n in nums if len(n) <= 2]
        years = [int(n) for n in nums if len(n) == 4]
        if years and days:
            out.add(_valid(years[0], month_word, days[0]) or "")
        elif years:
            out.add(f"{years[0]:04d}{month_word:02d}")
        elif days:
            out.add(f"{month_word:02d}{days[0]:02d}")
    elif len(nums) == 1 and len(nums[0]) == 8:
        n = nums[0]
        out.add(_valid(int(n[:4]), int(n[4:6]), int(n[6:])) or "")
    elif len(nums) >= 3:
        a, b, c = (int(x) for x in nums[:3])
        if len(nums[0]) == 4:
            out.add(_valid(a, b, c) or "")
        else:
            out.add(_valid(c, a, b) or "")
            out.add(_valid(c, b, a) or "")
    out.discard("")
    return out
