"""TextScrubber: planted identifiers are all replaced; clinical text is left exactly as it was."""

from __future__ import annotations

import pytest

from medclip.deid.identifiers import KnownIdentifiers
from medclip.deid.text import PLACEHOLDERS, TextScrubber, scrub_text


@pytest.fixture(scope="module")
def scrubber() -> TextScrubber:
    return TextScrubber()


# (sentence, planted identifier that must vanish, placeholder that must appear)
PLANTED = [
    ("Findings discussed with Dr. Okonkwo at 10:15.", "Okonkwo", "[NAME]"),
    ("Dr Smith-Jones reviewed the study.", "Smith-Jones", "[NAME]"),
    ("DR. BARTHOLOMEW CALLED.", "BARTHOLOMEW", "[NAME]"),
    ("Discussed with John Smith in the ED.", "John Smith", "[NAME]"),
    ("Findings were discussed with the referring physician, Jane Doe, by telephone.", "Jane Doe", "[NAME]"),
    ("Results notified by phone to the covering team, Priya Raman at 14:05.", "Priya Raman", "[NAME]"),
    ("Critical result notified to Marcus Feldman at 4 pm.", "Marcus Feldman", "[NAME]"),
    ("Electronically signed by: Helena Q. Virtanen, MD", "Virtanen", "[NAME]"),
    ("Electronically signed by: Helena Q. Virtanen, MD", "Helena", "[NAME]"),
    ("Dictated by: OYELARAN, ADEBAYO", "OYELARAN", "[NAME]"),
    ("Reported by Thandiwe Mokoena", "Mokoena", "[NAME]"),
    ("Attending: Rasmussen", "Rasmussen", "[NAME]"),
    ("Radiologist: Castellanos, Beatriz", "Castellanos", "[NAME]"),
    ("Referring physician: Dr. Abernathy", "Abernathy", "[NAME]"),
    ("MRN: 1234567", "1234567", "[MRN]"),
    ("medical record number 7654321 on file", "7654321", "[MRN]"),
    ("MR# 00442211", "00442211", "[MRN]"),
    ("Acc#: A99812", "A99812", "[ACCESSION]"),
    ("Accession No. 20418873", "20418873", "[ACCESSION]"),
    ("accession number RAD-55123", "RAD-55123", "[ACCESSION]"),
    ("Patient ID: PX-88123", "PX-88123", "[ID]"),
    ("SSN 123-45-6789", "123-45-6789", "[ID]"),
    ("Call (614) 555-0123 with questions.", "555-0123", "[PHONE]"),
    ("Call (614) 555-0123 with questions.", "614", "[PHONE]"),
    ("Reading room 614-555-0188 x4421.", "4421", "[PHONE]"),
    ("Please page 555.0142 or pager 4431.", "4431", "[PHONE]"),
    ("+1 212 555 0175 is the callback.", "555 0175", "[PHONE]"),
    ("Lives at 1428 Elm Street, Apt 4B.", "1428 Elm Street", "[ADDRESS]"),
    ("Sent to 22 W Maple Ave., Columbus, OH 43215", "Columbus", "[ADDRESS]"),
    ("Sent to 22 W Maple Ave., Columbus, OH 43215", "43215", "[ADDRESS]"),
    ("Mail: P.O. Box 1123", "1123", "[ADDRESS]"),
    ("zip code 90210", "90210", "[ADDRESS]"),
    ("Contact j.doe@hospital.example.org for images.", "j.doe@hospital.example.org", "[EMAIL]"),
    ("Compared with 01/02/2020.", "01/02/2020", "[DATE]"),
    ("Compared with 1/2/20.", "1/2/20", "[DATE]"),
    ("Exam of 2020-01-02 10:14:55 reviewed.", "10:14", "[DATE]"),
    ("Prior from Jan 2, 2020 at 3:15 PM.", "3:15", "[DATE]"),
    ("Prior from January 2nd, 2020.", "January", "[DATE]"),
    ("Prior dated 2 January 2020.", "January", "[DATE]"),
    ("Vorbefund 02.01.2020 unverändert.", "02.01.2020", "[DATE]"),
    ("Seen on 14-MAR-2019.", "14-MAR-2019", "[DATE]"),
    ("Acquired 20200102T101500.", "20200102", "[DATE]"),
    ("Since March 3 the effusion grew.", "March 3", "[DATE]"),
    ("Unchanged since 3/12.", "3/12", "[DATE]"),
    ("Unchanged since June 2019.", "June 2019", "[DATE]"),
]


@pytest.mark.parametrize(("text", "planted", "placeholder"), PLANTED)
def test_planted_identifier_is_replaced(scrubber, text, planted, placeholder):
    out = scrubber.scrub(text)
    assert planted not in out.text, out.text
    assert placeholder in out.text, out.text
    assert out.replacements >= 1


def test_recall_on_planted_report(scrubber):
    """One report holding every planted value: all gone, and each kind counted."""
    report = "\n".join(t for t, _, _ in PLANTED)
    out = scrubber.scrub(report)
    assert [p for _, p, _ in PLANTED if p in out.text] == []
    assert set(out.by_kind) == {k for k, p in PLACEHOLDERS.items() if p in {ph for _, _, ph in PLANTED}}
    assert out.replacements == sum(out.by_kind.values())


CLEAN = [
    "There is a 4 mm nodule in the right upper lobe.",
    "A 1.5 x 2.0 cm mass and a 22 x 14 mm calcified granuloma.",
    "Compression deformity of T12 and L1-L2 disc space narrowing.",
    "PA and lateral views of the chest. AP portable upright view.",
    "Kerley B lines and peribronchial cuffing.",
    "1. No acute cardiopulmonary disease.\n2. Stable cardiomegaly.",
    "65-year-old male with cough. 3-year-old with fever.",
    "Compared to prior study. Comparison: None.",
    "FINDINGS: Lungs are clear. IMPRESSION: Normal chest.",
    "Cardiothoracic ratio 0.55, ratio 1:2, grade 2/4, BI-RADS 3, 3/4 of the lung.",
    "White matter changes. May represent atelectasis. Clear lungs. Mass effect.",
    "Findings discussed with the patient. Discussed with the Emergency Department.",
    "Dr. XXXX was notified of the findings on XXXX at XXXX.",
    "The ET tube tip is 4 cm above the carina; NG tube in the stomach.",
    "Heart size normal, mediastinum 8 cm. Pleural effusion measuring 300 mL.",
    "Blood pressure 120/80. Temperature 38.5 C. Series 3 image 45.",
    "Chest, PA and lateral: no change. MR brain and CT abdomen recommended.",
    "Status post CABG with 7 sternal wires. Right IJ catheter at the cavoatrial junction.",
    "Left lower lobe (LLL) opacity; follow-up CT in 3 months.",
    "Electronically signed by: XXXX",
]


@pytest.mark.parametrize("text", CLEAN)
def test_clinical_text_is_untouched(scrubber, text):
    out = scrubber.scrub(text)
    assert out.text == text
    assert (out.replacements, out.by_kind) == (0, {})


def test_known_identifiers_are_matched_in_any_rendering(scrubber):
    known = KnownIdentifiers.from_pairs(
        [("name", "ZIELINSKA^MARTA"), ("id", "H-0049921"), ("date", "19530612"), ("phone", "6145550100")]
    )
    text = "marta zielinska (hosp H0049921, born 6/12/1953) seen; ph 614 555 0100. Zielinska stable."
    out = scrubber.scrub(text, known)
    for planted in ("marta", "zielinska", "Zielinska", "0049921", "1953", "0100"):
        assert planted not in out.text, out.text
    assert "seen" in out.text and "stable" in out.text


def test_touching_parts_of_a_name_become_one_placeholder(scrubber):
    known = KnownIdentifiers.from_pairs([("name", "DOE^JOHN")])
    assert scrubber.scrub("Patient DOE, JOHN arrived.", known).text == "Patient [NAME] arrived."


def test_common_word_names_need_a_full_name(scrubber):
    known = KnownIdentifiers.from_pairs([("name", "WHITE^MAY")])
    out = scrubber.scrub("May White has white matter disease. May represent edema. Dr. White agreed.", known)
    assert out.text == "[NAME] has white matter disease. May represent edema. Dr. [NAME] agreed."


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01", "é" * 50, "Dr. " * 200, "1" * 5000, "MRN:" * 100])
def test_odd_text_never_raises(scrubber, text):
    out = scrubber.scrub(text)
    assert isinstance(out.text, str)


def test_rejects_non_text(scrubber):
    with pytest.raises(TypeError, match="str"):
        scrubber.scrub(b"bytes")  # type: ignore[arg-type]


def test_module_level_helper_uses_a_shared_scrubber():
    assert scrub_text("Call 555-0123.").text == "Call [PHONE]."


def test_one_scrubber_is_shared_by_threads(scrubber):
    from concurrent.futures import ThreadPoolExecutor

    texts = [t for t, _, _ in PLANTED] * 4
    expected = [scrubber.scrub(t).text for t in texts]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda t: scrubber.scrub(t).text, texts)) == expected


def test_internal_failure_fails_closed_without_the_text(scrubber, monkeypatch):
    from medclip.deid.text import DeidError

    def boom(*args, **kwargs):
        raise RuntimeError("Kowalczyk")

    monkeypatch.setattr(scrubber._analyzer, "analyze", boom)
    with pytest.raises(DeidError) as info:
        scrubber.scrub("Dr. Kowalczyk saw it.")
    assert "Kowalczyk" not in str(info.value) and info.value.__cause__ is None and info.value.reason == "deid_failed"
