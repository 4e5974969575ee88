"""Subgroup columns (sex, age band, view, manufacturer, site): from DICOM headers, CSV tables and the synthetic
archives into the manifest and the evaluation tables; birth dates and exact ages never reach a file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medclip.ingest.manifest import COLUMNS, MANIFEST_NAME, META_NAME, build_manifest, read_manifest, write_manifest
from medclip.ingest.tables import label_columns, manifest_table, read_csv_table
from medclip.io.demographics import SUBGROUP_COLUMNS, age_band, age_from_dates, normalise_sex
from medclip.io.dicom import read_header
from tests.ingest.test_layouts import REPORT, write_dicom, write_png

BIRTH = "19580923"  # planted: must appear in no file medclip writes


@pytest.mark.parametrize(
    ("value", "band"),
    [
        ("065Y", "60-79"),
        ("006M", "0-17"),
        ("017Y", "0-17"),
        ("018Y", "18-39"),
        ("080Y", "80+"),
        (42, "40-59"),
        ("59.9", "40-59"),
        ("60-79", "60-79"),  # already a band
        ("", ""),
        (None, ""),
        (float("nan"), ""),
        ("unknown", ""),
        ("-3", ""),
        ("200Y", ""),  # implausible: unknown, not "80+"
    ],
)
def test_age_band(value, band):
    assert age_band(value) == band


@pytest.mark.parametrize(
    ("birth", "on", "years"),
    [
        ("19580923", "20240922", 65),  # the day before the birthday
        ("19580923", "20240923", 66),
        ("1958.09.23", "20240923", 66),  # legacy DA with dots
        ("", "20240923", None),
        ("19580923", None, None),
        ("20250101", "20240101", None),  # born after the study: a date error
        ("19581340", "20240101", None),  # not a date
    ],
)
def test_age_from_dates(birth, on, years):
    assert age_from_dates(birth, on) == years


@pytest.mark.parametrize(("value", "sex"), [("M", "M"), ("female", "F"), (" o ", "O"), ("U", ""), (None, "")])
def test_normalise_sex(value, sex):
    assert normalise_sex(value) == sex


def test_manifest_columns_include_the_subgroups():
    assert set(SUBGROUP_COLUMNS) <= set(COLUMNS)


# ---------------------------------------------------------------------------------------------- DICOM headers


def _archive(tmp_path):
    """Two studies: one with PatientAge, one with only a birth date (the age must come from it and StudyDate)."""
    root = tmp_path / "a"
    common = dict(Manufacturer=" ACME   IMAGING ", InstitutionName="Example Site North")
    write_dicom(
        root / "s1" / "1.dcm", acc="A1", patient="P1", study="1.2.3.1", PatientSex="F", PatientAge="072Y", **common
    )
    write_dicom(
        root / "s2" / "1.dcm",
        acc="A2",
        patient="P2",
        study="1.2.3.2",
        PatientSex="M",
        PatientBirthDate=BIRTH,
        StudyDate="20240922",
        ViewPosition="AP",
        **common,
    )
    for acc in ("A1", "A2"):
        (root / f"{acc}.txt").write_text(REPORT)
    return root


def test_header_subgroups_and_age_from_the_birth_date(tmp_path):
    root = _archive(tmp_path)
    facts = read_header(root / "s2" / "1.dcm")
    assert facts["age_band"] == "60-79" and facts["sex"] == "M" and facts["view"] == "AP"
    assert facts["manufacturer"] == "ACME IMAGING" and facts["site"] == "Example Site North"
    assert BIRTH not in json.dumps(facts, default=str) and "birth" not in json.dumps(sorted(facts)).lower()


@pytest.mark.parametrize("deid", [False, True])
def test_birth_date_and_exact_age_are_stored_nowhere(tmp_path, deid):
    result = build_manifest(_archive(tmp_path), salt="s", show_progress=False, deid=deid)
    df = result.manifest
    assert sorted(df["age_band"]) == ["60-79", "60-79"] and sorted(df["sex"]) == ["F", "M"]
    assert set(df["manufacturer"]) == {"ACME IMAGING"}
    (site,) = set(df["site"])  # one site, stored as is or as its salted key
    assert site == "Example Site North" if not deid else (site.startswith("site-") and len(site) == 13)
    out = write_manifest(result, tmp_path / "m")
    files = [f for f in out.rglob("*") if f.is_file()]  # manifest.parquet/ is a folder of parts
    assert {f.relative_to(out).parts[0] for f in files} >= {MANIFEST_NAME, META_NAME, "rejects.parquet"}
    for name in files:
        data = name.read_bytes()
        for planted in (BIRTH, "1958-09-23", "072Y", "065Y"):  # (random UIDs may hold "1958": no shorter pieces)
            assert planted.encode() not in data, (name, planted)
    strings = pd.read_parquet(out / MANIFEST_NAME).astype(str).to_csv(index=False)
    assert BIRTH not in strings and "1958-09-23" not in strings
    meta = (out / META_NAME).read_text()
    assert BIRTH not in meta and "1958-09-23" not in meta
    assert json.loads(meta)["counts"]["subgroups"]["age_band"] == {"60-79": 2}
    if deid:
        assert "Example Site North" not in meta and not any(
            b"Example Site North" in f.read_bytes() for f in (out / MANIFEST_NAME).rglob("*.parquet")
        )


def test_missing_header_fields_are_empty_strings_and_view_stays_none(tmp_path):
    root = tmp_path / "a"
    write_dicom(root / "s" / "1.dcm", acc="A1", patient="P1", study="1.2.3.1", ViewPosition="")
    (root / "A1.txt").write_text(REPORT)
    row = build_manifest(root, salt="s", show_progress=False).manifest.iloc[0]
    assert [row[c] for c in ("sex", "age_band", "manufacturer", "site")] == ["", "", "", ""]
    assert row["view"] is None  # unchanged: an unknown view is None, as before


# ---------------------------------------------------------------------------------------------- synthetic archive


def test_synthetic_archive_varies_every_subgroup(tiny_manifest):
    df, meta = read_manifest(tiny_manifest)
    assert meta["schema_version"] >= 2
    assert set(df["sex"]) == {"F", "M"}
    assert len(set(df["age_band"]) - {""}) >= 3
    assert {"PA", "AP"} <= set(df["view"])
    assert len(set(df["manufacturer"])) >= 2 and all(m.startswith("MEDCLIP SYNTHETIC") for m in df["manufacturer"])
    assert len(set(df["site"])) >= 2 and all(s.startswith("MEDCLIP SYNTHETIC SITE") for s in df["site"])
    groups = manifest_table(tiny_manifest, text_policy="findings_impression").groups()
    assert list(groups) == list(SUBGROUP_COLUMNS)
    assert all(v.dtype.kind == "U" or v.dtype == object for v in groups.values())
    assert all(len(v) == len(df) for v in groups.values())


def test_synthetic_ct_series_carry_subgroups_from_the_first_slice(tmp_path):
    from medclip.synth.ct.archive import synth_ct

    synth_ct(tmp_path / "ct", studies=6, seed=4, nifti_fraction=0.34)
    df = build_manifest(tmp_path / "ct", layout="dicom-ct", salt="s", show_progress=False).manifest
    assert df["view"].isna().all() and (df["sex"] != "").all() and (df["age_band"] != "").all()
    assert (df["manufacturer"] != "").all() and (df["site"] != "").all()  # NIfTI volumes too, from index.csv


# ---------------------------------------------------------------------------------------------- old manifests


def test_an_old_manifest_without_subgroup_columns_still_loads(tiny_manifest, tmp_path):
    df, meta = read_manifest(tiny_manifest)
    old = tmp_path / "old"
    old.mkdir()
    df.drop(columns=["sex", "age_band", "manufacturer", "site"]).to_parquet(old / MANIFEST_NAME, index=False)
    (old / META_NAME).write_text(json.dumps({**meta, "schema_version": 1}))
    again, _ = read_manifest(old)
    assert all((again[c] == "").all() for c in ("sex", "age_band", "manufacturer", "site"))
    table = manifest_table(old, text_policy="findings_impression")
    assert list(table.groups()) == ["view"]  # the only subgroup the old manifest knew


# ---------------------------------------------------------------------------------------------- CSV


def test_csv_layout_reads_sex_age_manufacturer_and_site(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"img{i}.png")
    pd.DataFrame(
        {
            "image_path": [f"img{i}.png" for i in range(3)],
            "patient_id": ["p1", "p2", "p3"],
            "report": [REPORT] * 3,
            "Gender": ["Female", "M", ""],
            "PatientAge": ["34", "071Y", ""],
            "Manufacturer": ["Vendor X", "Vendor Y", ""],
            "Institution": ["North", "South", ""],
        }
    ).to_csv(tmp_path / "t.csv", index=False)
    df = build_manifest(tmp_path / "t.csv", layout="csv", salt="s", show_progress=False).manifest
    df = df.sort_values("image_path")
    assert list(df["sex"]) == ["F", "M", ""] and list(df["age_band"]) == ["18-39", "60-79", ""]
    assert list(df["manufacturer"]) == ["Vendor X", "Vendor Y", ""] and list(df["site"]) == ["North", "South", ""]
    assert not (df.astype(str) == "34").any().any() and not {"age", "PatientAge"} & set(df.columns)  # band only


def _eval_csv(tmp_path, n: int = 12):
    for i in range(n):
        write_png(tmp_path / "img" / f"{i}.png")
    frame = pd.DataFrame(
        {
            "Path": [f"img/{i}.png" for i in range(n)],
            "report": ["No acute disease."] * n,
            "Effusion": [float(i % 2) for i in range(n)],
            "Sex": ["Male" if i % 2 else "Female" for i in range(n)],
            "Age": [i % 2 for i in range(n)],  # toy data: 0 / 1 ages must not become a label
            "AP/PA": ["AP" if i % 3 else "PA" for i in range(n)],
            "Frontal/Lateral": ["Frontal"] * n,
            "site": [""] * n,  # every value unknown: not a group
        }
    )
    frame.to_csv(tmp_path / "eval.csv", index=False)
    return tmp_path / "eval.csv"


def test_eval_table_groups_from_a_csv(tmp_path):
    table = read_csv_table(_eval_csv(tmp_path))
    assert list(table.labels.columns) == ["effusion"]
    groups = table.groups()
    assert list(groups) == ["sex", "age_band", "view"]
    assert list(groups["sex"][:2]) == ["F", "M"] and set(groups["age_band"]) == {"0-17"}
    assert set(groups["view"]) == {"AP", "PA"}
    assert list(table.groups(["view", "modality"])) == ["view"]
    val = table.subset("val")
    assert all(len(v) == len(val.rows) for v in val.groups().values())


def test_subgroup_columns_are_never_labels():
    df = pd.DataFrame({"Age": [0, 1, 1], "gender": [1, 0, 1], "Effusion": [1, 0, np.nan], "Patient Age": [1, 0, 0]})
    assert label_columns(df) == ["Effusion"]


def test_a_pacs_sink_stores_the_site_as_its_key(tmp_path):
    import pydicom

    from medclip.ingest.sources.sink import StudySink
    from medclip.ingest.splits import site_key
    from tests.pacs.studies import make_cxr_study

    study = make_cxr_study(tmp_path / "src", "MRN27", "DOE^JANE", "ACC27", n_images=1, seed=5)
    sink = StudySink(study="k", folder=tmp_path / "partial", salt="s", label="pacs", verify_pixels=False)
    sink.add(pydicom.dcmread(study.files[0]))
    (record,) = sink.records
    assert record["site"] == site_key("St. Example General Hospital", "s") and record["manufacturer"] == "MEDCLIP"
    assert record["sex"] in ("F", "M") and record["age_band"] and "BirthDate" not in json.dumps(record)
