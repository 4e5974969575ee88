"""De-identification in `build_manifest` (any layout): keyed ids, scrubbed report text, the replacement count,
and a scrubber failure that rejects the report ("deid_failed") rather than keeping its text."""

from __future__ import annotations

import pandas as pd

from medclip.deid.text import DeidError, TextScrubber
from medclip.ingest.manifest import build_manifest
from tests.pacs.studies import make_cxr_study

SALT = "deid-manifest-test-salt-0123456789"


def _archive(tmp_path):
    study = make_cxr_study(tmp_path / "a", "MRN31415926", "GRIMSDOTTIR^ULRIKA", "ACCP2718281", n_images=1, seed=3)
    text = "FINDINGS: Ulrika Grimsdottir, MRN 31415926, clear lungs.\nIMPRESSION: Normal. Call Dr. Okonkwo-Batt."
    (tmp_path / "a" / "ACCP2718281.txt").write_text(text)
    return tmp_path / "a", study


def test_deid_keys_ids_and_scrubs_the_header_names_from_the_report(tmp_path):
    root, study = _archive(tmp_path)
    plain = build_manifest(root, salt=SALT, show_progress=False)
    assert plain.manifest["accession"].iloc[0] == "ACCP2718281" and "Grimsdottir" in plain.manifest["text"].iloc[0]
    result = build_manifest(root, salt=SALT, show_progress=False, deid=True)
    row = result.manifest.iloc[0]
    assert (
        row["accession"] != "ACCP2718281" and row["study_id"] != study.study_uid and row["study_id"] == row["study_key"]
    )
    for planted in ("Ulrika", "Grimsdottir", "31415926", "Okonkwo"):
        assert planted not in row["text"], planted
    assert "clear lungs" in row["text"] and row["deid_replacements"] >= 3
    assert result.meta["deid"]["enabled"] and result.meta["deid"]["replacements"] == row["deid_replacements"]
    assert plain.manifest["patient_key"].iloc[0] == row["patient_key"]  # the same salted key either way


def test_a_scrubber_failure_rejects_the_report_and_keeps_no_text(tmp_path, monkeypatch):
    root, _ = _archive(tmp_path)

    def broken(self, text, known=None):
        raise DeidError("the engine failed")

    monkeypatch.setattr(TextScrubber, "scrub", broken)
    result = build_manifest(root, salt=SALT, show_progress=False, deid=True)
    assert result.manifest.empty
    reasons = dict(zip(result.rejects["reason"], result.rejects["kind"], strict=True))
    assert reasons == {"deid_failed": "report", "report_rejected": "image"}
    assert not pd.concat([result.rejects["detail"], result.rejects["path"]]).str.contains("Grimsdottir").any()
