"""KnownIdentifiers: a study's own identifiers found in text however written; hashed form matches alike."""

from __future__ import annotations

import pytest
import regex
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medclip.deid.identifiers import KnownIdentifiers, dataset_identifiers
from medclip.errors import InputError


def found(known: KnownIdentifiers, text: str) -> list[str]:
    return sorted({text[s.start : s.end] for s in known.find(text)})


@pytest.mark.parametrize(
    "text", ["John Q. Doe", "Doe, John", "DOE JOHN", "Mr. Doe", "doe^john", "John Doe's film"]
)  # fmt: skip
def test_person_name_matches_display_forms(text):
    known = KnownIdentifiers.from_pairs([("name", "DOE^JOHN^Q^^")])
    assert "Doe" in " ".join(found(known, text)).title()


def test_short_name_components_and_affixes_are_not_matched():
    known = KnownIdentifiers.from_pairs([("name", "DOE^JOHN^Q^DR^MD")])
    assert found(known, "Q wave; MD review; Dr. on call") == []


def test_ordinary_word_names_need_capitals_and_a_neighbour():
    known = KnownIdentifiers.from_pairs([("name", "WHITE^MAY"), ("name", "Mass^Hope")])
    assert found(known, "white matter; may represent; mass effect; Hope is lost; Mass lesion") == []
    assert found(known, "Seen by Dr. White") == ["White"]
    assert found(known, "May White and Hope Mass") == ["Hope", "Mass", "May", "White"]


def test_ids_match_whole_tokens_with_or_without_punctuation():
    known = KnownIdentifiers.from_pairs([("id", "MRN-0012345")])
    assert found(known, "id MRN-0012345") == ["0012345", "MRN-0012345"]
    assert found(known, "ref mrn0012345") == ["mrn0012345"]
    assert found(known, "ref 12345 here") == ["12345"]
    assert found(known, "values 1123456 and 00123456") == []


def test_too_short_ids_are_ignored():
    known = KnownIdentifiers.from_pairs([("id", "12"), ("id", "T12")])
    assert not known
    assert found(known, "T12 fracture, 12 ribs") == []


@pytest.mark.parametrize(
    "text", ["01/02/2020", "1/2/2020", "2020-01-02", "Jan 2, 2020", "2 January 2020", "20200102", "02-JAN-2020"]
)  # fmt: skip
def test_dicom_date_matches_common_renderings(text):
    known = KnownIdentifiers.from_pairs([("date", "20200102")])
    assert found(known, f"seen {text} here") == [text]


def test_other_dates_do_not_match():
    known = KnownIdentifiers.from_pairs([("date", "20200102")])
    assert found(known, "seen 03/04/2020 and 2021-01-02") == []


def test_phone_matches_any_formatting():
    known = KnownIdentifiers.from_pairs([("phone", "+1 (614) 555-0100")])
    assert found(known, "call 614.555.0100 or (614) 555 0100") == ["(614) 555 0100", "614.555.0100"]


def test_address_parts_match_as_phrases():
    known = KnownIdentifiers.from_pairs([("address", "12 Elm Street^^Springfield^IL^62704")])
    assert found(known, "lives 12 elm street, Springfield IL 62704; IL-6 level") == [
        "12 elm street",
        "62704",
        "Springfield",
    ]


def test_hashed_form_matches_like_the_raw_one_and_holds_no_raw_value():
    pairs = [("name", "ZIELINSKA^MARTA"), ("id", "H-0049921"), ("date", "19530612"), ("phone", "6145550100"),
             ("address", "7 Birch Road"), ("email", "m.z@example.org"), ("uid", "1.2.3.4.5")]  # fmt: skip
    raw = KnownIdentifiers.from_pairs(pairs)
    hashes = raw.hashed("salt-1")
    assert all(regex.fullmatch(r"[a-z]+:\d+:[0-9a-f]{32}", h) for h in hashes)
    words = {w.casefold() for _, v in pairs for w in regex.split(r"[\W_]+", v) if w.isalpha() and len(w) > 3}
    assert not any(w in h for h in hashes for w in words)
    text = "Marta Zielinska H0049921 6/12/1953 614-555-0100 7 Birch Road m.z@example.org 1.2.3.4.5 normal"
    rebuilt = KnownIdentifiers.from_hashes(hashes, "salt-1")
    assert sorted(rebuilt.find(text)) == sorted(raw.find(text))
    assert len(found(raw, text)) >= 7
    assert KnownIdentifiers.from_hashes(hashes, "salt-2").find(text) == []
    assert rebuilt.hashed("salt-1") == hashes


def test_merge_and_bool():
    a = KnownIdentifiers.from_pairs([("name", "Doe^John")])
    b = KnownIdentifiers.from_pairs([("id", "ABC12345")])
    assert not KnownIdentifiers()
    merged = KnownIdentifiers().merge(a).merge(b)
    assert found(merged, "John ABC12345") == ["ABC12345", "John"]
    hashed = KnownIdentifiers.from_hashes(a.hashed("s"), "s").merge(b)
    assert found(hashed, "John ABC12345") == ["ABC12345", "John"]
    with pytest.raises(InputError):
        a.merge(KnownIdentifiers.from_hashes(b.hashed("s"), "s"))


def test_bad_kind_and_bad_hash_are_refused_with_the_allowed_values():
    with pytest.raises(InputError, match="name, id"):
        KnownIdentifiers().add("ssn", "123")
    with pytest.raises(InputError, match="kind:n:digest"):
        KnownIdentifiers.from_hashes(["not-a-hash"], "s")


def test_repr_never_shows_values():
    known = KnownIdentifiers.from_pairs([("name", "Zielinska^Marta")])
    assert "ielinska" not in repr(known) and "arta" not in repr(known)


def test_dataset_identifiers_walks_sequences():
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JOHN", "MRN1", "19500101"
    ds.PatientAddress, ds.PatientTelephoneNumbers = "1 Main St", "555-0100"
    ds.AccessionNumber, ds.Modality, ds.Rows = "ACC1", "DX", 10
    other = Dataset()
    other.PatientID = "ALT2"
    ds.OtherPatientIDsSequence = Sequence([other])
    item = Dataset()
    item.RequestingPhysician = "ROE^JANE"
    deeper = Dataset()
    deeper.ContentCreatorName = "POE^EDGAR"
    item.ReferencedStudySequence = Sequence([deeper])
    ds.RequestAttributesSequence = Sequence([item])
    ds.OtherPatientNames = ["ALIAS^ONE", "ALIAS^TWO"]
    got = dataset_identifiers(ds)
    assert {("name", "DOE^JOHN"), ("name", "ROE^JANE"), ("name", "POE^EDGAR"), ("name", "ALIAS^TWO")} <= got
    assert {("id", "MRN1"), ("id", "ALT2"), ("id", "ACC1"), ("date", "19500101")} <= got
    assert {("address", "1 Main St"), ("phone", "555-0100")} <= got
    assert not any(v in ("DX", "10") for _, v in got)
