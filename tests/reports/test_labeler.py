"""Rule-based report labeler: one short test per rule, label sets, user rules, file labelling and scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medclip.reports.label_io import (
    iter_openi_reports,
    label_dataframe,
    label_reports_file,
    openi_archive,
    read_report_texts,
)
from medclip.reports.labeler import LABEL_SETS, Mention, label_report, label_text, load_rules

ROOT = Path(__file__).resolve().parents[2]
REAL_REPORTS = ROOT.parent / "shared" / "data" / "reports"
CHEXPERT = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CXR14 = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
    "No Finding",
)


def _value(sentence: str, label: str, label_set: str = "chexpert") -> int | None:
    return label_report(sentence, label_set)[label]


# One sentence per rule; (sentence, label, expected value). Sentences written for these tests.
RULES = [
    pytest.param("No pleural effusion.", "Pleural Effusion", 0, id="pre-negation"),
    pytest.param("Pneumothorax is not seen.", "Pneumothorax", 0, id="post-negation"),
    pytest.param("There is no evidence of pneumonia.", "Pneumonia", 0, id="no-evidence-of"),
    pytest.param("The lungs are clear without focal consolidation.", "Consolidation", 0, id="without"),
    pytest.param("The lungs are free of consolidation.", "Consolidation", 0, id="free-of"),
    pytest.param("The previously noted left pneumothorax has resolved.", "Pneumothorax", 0, id="resolved-post"),
    pytest.param("Resolved right pleural effusion.", "Pleural Effusion", 0, id="resolved-near"),
    pytest.param("Interval resolution of the basilar atelectasis.", "Atelectasis", 0, id="resolution-of"),
    pytest.param("Right lower lobe pneumonia, resolving.", "Pneumonia", 1, id="resolving-is-present"),
    pytest.param("Early pneumonia cannot be excluded.", "Pneumonia", -1, id="cannot-be-excluded"),
    pytest.param("Left basilar opacity may represent atelectasis.", "Atelectasis", -1, id="may-represent"),
    pytest.param("Left basilar opacity may represent atelectasis.", "Lung Opacity", 1, id="before-may-represent"),
    pytest.param("Atelectasis versus consolidation at the right base.", "Atelectasis", -1, id="versus-before"),
    pytest.param("Atelectasis versus consolidation at the right base.", "Consolidation", -1, id="versus-after"),
    pytest.param("Borderline cardiomegaly.", "Cardiomegaly", -1, id="borderline-pre"),
    pytest.param("The heart size is borderline.", "Cardiomegaly", -1, id="borderline-post"),
    pytest.param("Heart size is at the upper limits of normal.", "Cardiomegaly", 0, id="upper-limits-normal"),
    pytest.param("Cardiomegaly is not significantly changed.", "Cardiomegaly", 1, id="not-significantly-changed"),
    pytest.param("Stable cardiomegaly, unchanged from prior.", "Cardiomegaly", 1, id="unchanged"),
    pytest.param("No change in the small left pleural effusion.", "Pleural Effusion", 1, id="no-change-in"),
    pytest.param("Cannot rule out a small pneumothorax.", "Pneumothorax", -1, id="double-negation-cannot-rule-out"),
    pytest.param("A small apical pneumothorax is not excluded.", "Pneumothorax", -1, id="double-negation-not-excluded"),
    pytest.param("No effusion, but there is a small pneumothorax.", "Pleural Effusion", 0, id="scope-but-before"),
    pytest.param("No effusion, but there is a small pneumothorax.", "Pneumothorax", 1, id="scope-but-after"),
    pytest.param("No edema; however, a right effusion is present.", "Pleural Effusion", 1, id="scope-however"),
    pytest.param("No pneumothorax. Small effusion.", "Pleural Effusion", 1, id="scope-sentence-end"),
    pytest.param("No pleural effusion, pneumothorax, or focal consolidation.", "Consolidation", 0, id="negated-list"),
    pytest.param("Effusion, pneumothorax and edema are not seen.", "Pleural Effusion", 0, id="post-negated-list"),
    pytest.param("The effusion is stable, the pneumothorax has resolved.", "Pleural Effusion", 1, id="post-clause"),
    pytest.param("No focal consolidation to suggest pneumonia.", "Pneumonia", 0, id="to-suggest-keeps-negation"),
    pytest.param("Findings suggest early pulmonary edema.", "Edema", -1, id="suggest"),
    pytest.param("The heart is not enlarged.", "Cardiomegaly", 0, id="negation-inside-phrase"),
    pytest.param("Heart size is normal.", "Cardiomegaly", 0, id="normal-phrase"),
    pytest.param("Small pericardial effusion.", "Pleural Effusion", None, id="excluded-look-alike"),
    pytest.param("If there is concern for rib fracture, consider rib films.", "Fracture", None, id="hypothetical"),
    pytest.param("Widened mediastinum.", "Enlarged Cardiomediastinum", 1, id="mediastinum"),
    pytest.param("Right PICC with tip in the SVC.", "Support Devices", 1, id="device"),
    pytest.param("Old healed right rib fractures.", "Fracture", 1, id="fracture"),
]


@pytest.mark.parametrize(("sentence", "label", "expected"), RULES)
def test_rule(sentence, label, expected):
    assert _value(sentence, label) == expected


@pytest.mark.parametrize(
    ("sentence", "label", "attributes"),
    [
        pytest.param(
            "Small left pleural effusion.",
            "Pleural Effusion",
            {"side": "left", "severity": "small"},
            id="side-severity",
        ),
        pytest.param(
            "Moderate to large right pleural effusion.",
            "Pleural Effusion",
            {"side": "right", "severity": "moderate to large"},
            id="severity-range",
        ),
        pytest.param(
            "Left effusion. Right effusion is also present.",
            "Pleural Effusion",
            {"side": "bilateral"},
            id="sides-merge",
        ),
        pytest.param("Heart size is mildly enlarged.", "Cardiomegaly", {"severity": "mild"}, id="adverb"),
    ],
)
def test_attributes(sentence, label, attributes):
    assert label_text(sentence)[label].attributes == attributes


def test_mention_records_evidence():
    m = label_text("FINDINGS: Heart size is normal. Small left pleural effusion.\n\nIMPRESSION: Small effusion.")[
        "Pleural Effusion"
    ]
    assert isinstance(m, Mention) and (m.value, m.section, m.sentence) == (1, "impression", 0)
    assert m.phrase == "effusion" and m.evidence == "small effusion."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("No pleural effusion or pneumothorax. Heart size is normal.", 1, id="only-negatives"),
        pytest.param("Right internal jugular catheter. Lungs are clear.", 1, id="devices-do-not-block"),
        pytest.param("Possible small left pleural effusion.", None, id="uncertain-blocks"),
        pytest.param("Mild cardiomegaly.", None, id="positive-blocks"),
        pytest.param("INDICATION: cough.", None, id="no-findings-text"),
    ],
)
def test_no_finding_chexpert(text, expected):
    # CheXpert convention (its labeler's aggregation): No Finding is 1 or blank; Support Devices never block it.
    assert label_report(text)["No Finding"] == expected


def test_no_finding_chestxray14_is_binary():
    assert label_report("Mild cardiomegaly.", "chestxray14")["No Finding"] == 0
    assert label_report("Lungs are clear. No effusion.", "chestxray14")["No Finding"] == 1


@pytest.mark.parametrize(
    "text", ["XXXX left pleural effusion. No XXXX pneumothorax.", "___ left pleural effusion. No ___ pneumothorax."]
)
def test_deid_placeholders(text):
    out = label_report(text)
    assert (out["Pleural Effusion"], out["Pneumothorax"]) == (1, 0)


def test_label_sets_and_columns():
    assert LABEL_SETS == ("chexpert", "chestxray14")
    assert load_rules("chexpert").labels == CHEXPERT
    assert load_rules("chestxray14").labels == CXR14
    out = label_report("Small left effusion. Apical pleural thickening. Small hiatal hernia.", "chestxray14")
    assert (out["Effusion"], out["Pleural_Thickening"], out["Hernia"], out["Mass"]) == (1, 1, 1, None)


def test_sections_are_configurable():
    text = "FINDINGS: Small left pleural effusion.\n\nIMPRESSION: No acute disease."
    assert label_report(text, sections=("impression",))["Pleural Effusion"] is None
    assert label_report(text, sections="findings")["Pleural Effusion"] == 1
    with pytest.raises(ValueError, match="impresion.*Did you mean 'impression'"):
        label_report(text, sections=("impresion",))


def test_parsed_sections_input():
    assert label_report({"findings": None, "impression": "Mild pulmonary edema."})["Edema"] == 1


# ----------------------------------------------------------------------------------------------- user rules
USER_YAML = """
triggers:
  negation:
    pre: ["nil"]
label_sets:
  chexpert:
    labels:
      Pleural Effusion:
        mention: ["fluid in the costophrenic angle"]
  covid:
    no_finding: {ignore: [], otherwise: 0}
    labels:
      Ground Glass:
        mention: ["ground-glass opacit*"]
      No Finding: {derived: no_finding}
"""


@pytest.fixture
def user_yaml(tmp_path) -> Path:
    path = tmp_path / "hospital.yaml"
    path.write_text(USER_YAML)
    return path


def test_user_rules_add_phrase_and_trigger(user_yaml):
    rules = load_rules("chexpert", user_rules=user_yaml)
    assert label_report("Fluid in the costophrenic angle.", rules=rules)["Pleural Effusion"] == 1
    assert label_report("Nil pneumothorax.", rules=rules)["Pneumothorax"] == 0
    assert label_report("Fluid in the costophrenic angle.")["Pleural Effusion"] is None  # built-in untouched


def test_user_rules_new_label_set(user_yaml):
    rules = load_rules("covid", user_rules=user_yaml)
    assert rules.labels == ("Ground Glass", "No Finding")
    assert label_report("Bilateral ground glass opacities.", rules=rules) == {"Ground Glass": 1, "No Finding": 0}


def test_user_rules_extend_and_remove():
    rules = load_rules(
        "mine", {"label_sets": {"mine": {"extends": "chexpert", "labels": {"Pneumonia": {"remove": ["infection"]}}}}}
    )
    assert rules.labels == CHEXPERT
    assert label_report("Infection.", rules=rules)["Pneumonia"] is None


@pytest.mark.parametrize(
    ("user", "message"),
    [
        pytest.param({"trigers": {}}, "unknown top-level key 'trigers'.*Did you mean 'triggers'", id="typo"),
        pytest.param({"triggers": {"negation": {"pre": [False]}}}, "quote it", id="yaml-boolean"),
        pytest.param(
            {"label_sets": {"chexpert": {"labels": {"Edema": {"mention": ["re:(edema)"]}}}}},
            "non-capturing",
            id="capturing-group",
        ),
    ],
)
def test_user_rules_errors(user, message):
    with pytest.raises(ValueError, match=message):
        load_rules("chexpert", user)


def test_unknown_label_set_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'chexpert'"):
        load_rules("chexpertt")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_rules("chexpert", tmp_path / "nope.yaml")


# ----------------------------------------------------------------------------------------------- files
def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_label_csv_with_rejects(tmp_path):
    src = tmp_path / "reports.csv"
    # r3 holds a Windows-1252 byte (0xB0, "°") in an otherwise UTF-8 file: decoded, not rejected.
    src.write_bytes(b"id,text\nr1,Small left pleural effusion.\nr2,\nr3,No pneumothorax at 38\xb0C.\nr1,Edema.\n")
    summary = label_reports_file(src, tmp_path / "out" / "labels.csv", show_progress=False)
    assert (summary["inputs"], summary["labelled"], summary["rejected"]) == (4, 2, 2)
    assert summary["reject_reasons"] == {"empty_report": 1, "duplicate_id": 1}
    assert summary["positives"]["Pleural Effusion"] == 1
    out = _read(tmp_path / "out" / "labels.csv")
    assert list(out.columns) == ["id", *CHEXPERT]
    assert out[["id", "Pleural Effusion", "Pneumothorax"]].values.tolist() == [["r1", "1", ""], ["r3", "", "0"]]
    assert set(_read(tmp_path / "out" / "labels.rejects.csv")["reason"]) == {"empty_report", "duplicate_id"}


def test_label_cp1252_and_utf16_tables(tmp_path):
    text = "FINDINGS: Dr. Jos\xe9 M\xfcller \u2013 38.5\xb0C. Small left pleural effusion."
    for name, data in (
        ("a.csv", f"id,text\nr1,{text}\n".encode("cp1252")),
        ("b.csv", f"id,text\nr1,{text}\n".encode("utf-16")),
    ):
        (tmp_path / name).write_bytes(data)
        assert read_report_texts(tmp_path / name) == {"r1": text}, name
        summary = label_reports_file(tmp_path / name, tmp_path / f"{name}.labels.csv", show_progress=False)
        assert (summary["labelled"], summary["positives"]["Pleural Effusion"]) == (1, 1), name
    (tmp_path / "c.jsonl").write_bytes(json.dumps({"id": "r1", "text": text}, ensure_ascii=False).encode("cp1252"))
    assert read_report_texts(tmp_path / "c.jsonl") == {"r1": text}


def test_label_jsonl(tmp_path):
    src = tmp_path / "reports.jsonl"
    src.write_bytes(b'{"report_id": 7, "report": "Possible pneumonia."}\n{broken\n\n{"report_id": 8, "report": ""}\n')
    summary = label_reports_file(src, tmp_path / "labels.csv", label_set="chestxray14", show_progress=False)
    assert summary["reject_reasons"] == {"bad_json": 1, "empty_report": 1}
    out = _read(tmp_path / "labels.csv")
    # ChestX-ray14's labels are binary: the hedged pneumonia is reported as 0, not -1
    assert out.loc[0, "report_id"] == "7" and out.loc[0, "Pneumonia"] == "0" and list(out.columns)[1:] == list(CXR14)


def test_label_txt_folder(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "a.txt").write_text("FINDINGS: No acute disease.\n\nIMPRESSION: Normal chest.")
    (folder / "b.txt").write_bytes(b"IMPRESSION: caf\xe9 effusion")  # Latin-1 / cp1252: kept
    (folder / "c.txt").write_text("   \n")
    (folder / "d.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(32))  # an image saved as .txt
    summary = label_reports_file(folder, tmp_path / "labels.csv", show_progress=False)
    assert summary["reject_reasons"] == {"binary": 1, "empty_report": 1}
    assert _read(tmp_path / "labels.csv")[["id", "Pleural Effusion"]].values.tolist() == [["a", ""], ["b", "1"]]


def test_label_path_column_and_headerless(tmp_path):
    (tmp_path / "one.txt").write_text("Mild cardiomegaly.")
    table = tmp_path / "index.csv"
    table.write_text("study_id,report_path\ns1,one.txt\ns2,missing.txt\n")
    summary = label_reports_file(table, tmp_path / "labels.csv", show_progress=False)
    assert summary["labelled"] == 1 and summary["reject_reasons"] == {"unreadable": 1}
    plain = tmp_path / "plain.csv"  # the chexpert-labeler input format: one report per row, no header
    plain.write_text('No effusion.\n"Mild cardiomegaly.\n\nNo edema."\n')
    summary = label_reports_file(plain, tmp_path / "plain_labels.csv", show_progress=False)
    assert summary["labelled"] == 2 and _read(tmp_path / "plain_labels.csv")["row"].tolist() == ["0", "1"]


def test_label_file_usage_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv does not exist"):
        label_reports_file(tmp_path / "nothing.csv", tmp_path / "o.csv", show_progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,notes\np1,x\n")
    with pytest.raises(ValueError, match="columns are: patient, notes"):
        label_reports_file(bad, tmp_path / "o.csv", show_progress=False)
    other = tmp_path / "reports.xlsx"
    other.write_text("")
    with pytest.raises(ValueError, match="unsupported report file type"):
        label_reports_file(other, tmp_path / "x.csv", show_progress=False)


def test_label_dataframe_manifest_rows():
    df = pd.DataFrame(
        {"findings": ["Small right effusion.", None, None], "impression": [None, "Normal.", None]}, index=[10, 11, 12]
    )
    out = label_dataframe(df)
    assert list(out.columns) == list(CHEXPERT) and out.index.tolist() == [10, 11, 12]
    assert out.dtypes.unique().tolist() == ["float64"]
    assert out.loc[10, "Pleural Effusion"] == 1.0 and out.loc[11, "No Finding"] == 1.0
    assert out.loc[12].isna().all()
    raw = label_dataframe(pd.DataFrame({"text": ["IMPRESSION: Mass."]}), text_columns="text", label_set="chestxray14")
    assert raw.loc[0, "Mass"] == 1.0
    with pytest.raises(ValueError, match="no column 'report'"):
        label_dataframe(df, text_columns=("report",))


# ----------------------------------------------------------------------------------------------- gold + scripts
# A small gold standard written for these tests: Open-i-like sentences and their CheXpert labels.
GOLD = [
    ("The heart is normal in size. The lungs are clear.", {"Cardiomegaly": 0, "No Finding": 1}),
    ("No focal airspace disease, pleural effusion or pneumothorax.", {"Lung Opacity": 0, "Pleural Effusion": 0,
                                                                      "Pneumothorax": 0, "No Finding": 1}),
    ("Mild cardiomegaly with pulmonary vascular congestion.", {"Cardiomegaly": 1, "Edema": -1}),  # CheXpert: hedged
    ("Bibasilar opacities likely atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1}),
    ("Streaky left basilar atelectasis.", {"Atelectasis": 1}),
    ("No pneumothorax following chest tube removal.", {"Pneumothorax": 0, "Support Devices": 0, "No Finding": 1}),
    ("Right upper lobe consolidation concerning for pneumonia.", {"Consolidation": 1, "Pneumonia": -1}),
    ("Calcified granuloma in the left lower lobe. No acute disease.", {"No Finding": 1}),
    ("Stable 1 cm nodule in the right upper lobe.", {"Lung Lesion": 1}),
    ("Interval removal of the endotracheal tube.", {"Support Devices": 0, "No Finding": 1}),
    ("Moderate right pleural effusion has increased.", {"Pleural Effusion": 1}),
    ("Small bilateral pleural effusions, not significantly changed.", {"Pleural Effusion": 1}),
    ("Heart size is borderline. No edema.", {"Cardiomegaly": -1, "Edema": 0}),
    ("Left lower lobe infiltrate versus atelectasis.", {"Lung Opacity": -1, "Atelectasis": -1}),
    ("Possible small left apical pneumothorax.", {"Pneumothorax": -1}),
    ("Acute displaced fracture of the left 6th rib.", {"Fracture": 1}),
    ("No acute bony abnormality.", {"No Finding": 1}),
    ("Pacemaker leads terminate in the right ventricle.", {"Support Devices": 1, "No Finding": 1}),
    ("Interstitial edema has resolved.", {"Edema": 0, "No Finding": 1}),
    ("Pulmonary edema is not excluded.", {"Edema": -1}),
    ("Left upper lobe mass is again seen.", {"Lung Lesion": 1}),
    ("Widened mediastinum, cannot exclude aortic injury.", {"Enlarged Cardiomediastinum": 1}),
    ("Normal cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": 0, "No Finding": 1}),
    ("Apical pleural thickening on the right.", {"Pleural Other": 1}),
    ("Hyperinflated lungs without focal consolidation.", {"Consolidation": 0, "No Finding": 1}),
    ("XXXX opacity at the right base may represent pneumonia.", {"Lung Opacity": 1, "Pneumonia": -1}),
    ("No evidence of pneumothorax or effusion; mild cardiomegaly.", {"Pneumothorax": 0, "Pleural Effusion": 0,
                                                                     "Cardiomegaly": 1}),
    ("Lungs are free of focal consolidation and effusion.", {"Consolidation": 0, "Pleural Effusion": 0,
                                                             "No Finding": 1}),
    ("Unchanged small left pleural effusion and adjacent atelectasis.", {"Pleural Effusion": 1, "Atelectasis": 1}),
    ("Enlarged heart without edema.", {"Cardiomegaly": 1, "Edema": 0}),
]  # fmt: skip


def _gold_frame() -> pd.DataFrame:
    """GOLD as a labels CSV would hold it: id + one column per CheXpert label, "1" / "0" / "-1" / "" (blank)."""
    return pd.DataFrame(
        [
            {"id": f"g{i}", **{lab: str(labels[lab]) if lab in labels else "" for lab in CHEXPERT}}
            for i, (_, labels) in enumerate(GOLD)
        ]
    )


def _write_gold(tmp_path: Path) -> tuple[Path, Path]:
    reports = pd.DataFrame({"id": [f"g{i}" for i in range(len(GOLD))], "text": [t for t, _ in GOLD]})
    reports.to_csv(tmp_path / "gold_reports.csv", index=False)
    _gold_frame().to_csv(tmp_path / "gold.csv", index=False)
    label_reports_file(tmp_path / "gold_reports.csv", tmp_path / "pred.csv", show_progress=False)
    return tmp_path / "pred.csv", tmp_path / "gold.csv"


@pytest.mark.parametrize(("text", "labels"), GOLD)
def test_gold_sentence(text, labels):
    out = label_report(text)
    assert {k: v for k, v in out.items() if v is not None} == labels


def _eval_script(pred: Path, gold: Path, uncertain: str) -> dict:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval_labeler.py"), str(pred), str(gold), "--uncertain", uncertain],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout)


def _prf(tp: int, fp: int, fn: int) -> dict:
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
    }


def _close(got: dict, want: dict) -> bool:
    return all((got[k] is None) == (v is None) and (v is None or abs(got[k] - v) < 1e-4) for k, v in want.items())


@pytest.mark.parametrize("uncertain", ["negative", "positive"])
def test_eval_script_scores_injected_errors(tmp_path, uncertain):
    """The metrics script on predictions that are the gold with known errors put in: its counts, precision, recall,
    F1, mention scores and macro averages are the ones those errors imply."""
    gold = _gold_frame()
    pred = gold.iloc[:-1].copy()  # the last report is missing from the predictions ...
    extra = pd.DataFrame([{"id": "extra", **dict.fromkeys(CHEXPERT, "1")}])  # ... and one is not in the gold
    pred = pd.concat([pred, extra], ignore_index=True)
    scored = gold.iloc[:-1]

    def first(label: str, value: str) -> int:
        return int(pred.index[(pred["id"].isin(scored["id"])) & (pred[label] == value)][0])

    def n(label: str, values: set[str]) -> int:
        return int(scored[label].isin(values).sum())

    pred.loc[first("Pleural Effusion", "1"), "Pleural Effusion"] = "0"  # a missed effusion (FN)
    pred.loc[first("Pleural Effusion", ""), "Pleural Effusion"] = "1"  # an effusion not in the gold (FP, extra mention)
    pred.loc[first("Atelectasis", "-1"), "Atelectasis"] = "1"  # uncertain called positive
    pred.loc[first("Cardiomegaly", "0"), "Cardiomegaly"] = ""  # a mention dropped
    # CheXpert-style float cells ("1.0", "-1.0") must read as the same values
    pred[list(CHEXPERT)] = pred[list(CHEXPERT)].map(lambda v: f"{float(v):.1f}" if v else v)
    pred.to_csv(tmp_path / "pred.csv", index=False)
    gold.to_csv(tmp_path / "gold.csv", index=False)

    report = _eval_script(tmp_path / "pred.csv", tmp_path / "gold.csv", uncertain)
    assert report["reports"] == {
        "pred": len(gold),
        "gold": len(gold),
        "scored": len(gold) - 1,
        "missing_in_pred": 1,
        "missing_in_gold": 1,
    }
    positive = {"1", "-1"} if uncertain == "positive" else {"1"}
    labels = report["labels"]
    want = {lab: _prf(n(lab, positive), 0, 0) for lab in CHEXPERT}  # untouched labels: every positive found
    want["Pleural Effusion"] = _prf(n("Pleural Effusion", positive) - 1, 1, 1)
    want["Atelectasis"] = _prf(n("Atelectasis", positive), 0 if uncertain == "positive" else 1, 0)
    for lab in CHEXPERT:
        assert _close(labels[lab], want[lab]), (lab, labels[lab], want[lab])
        assert labels[lab]["support"] == n(lab, positive)
    if uncertain == "negative":  # Pneumonia is only ever uncertain: no positives, F1 undefined, left out of the macro
        assert labels["Pneumonia"]["f1"] is None and labels["Pneumonia"]["support"] == 0
    f1s = [w["f1"] for w in want.values() if w["f1"] is not None]
    assert report["macro_f1"] == pytest.approx(sum(f1s) / len(f1s), abs=1e-4) and report["macro_f1"] < 1.0
    no_nf = [w["f1"] for lab, w in want.items() if w["f1"] is not None and lab != "No Finding"]
    assert report["macro_f1_without_no_finding"] == pytest.approx(sum(no_nf) / len(no_nf), abs=1e-4)

    mentioned = {"1", "0", "-1"}
    m_want = {lab: {**_prf(n(lab, mentioned), 0, 0), "value_agreement": 1.0} for lab in CHEXPERT}
    m_want["Pleural Effusion"] = {
        **_prf(n("Pleural Effusion", mentioned), 1, 0),
        "value_agreement": 1 - 1 / n("Pleural Effusion", mentioned),
    }
    m_want["Atelectasis"]["value_agreement"] = 1 - 1 / n("Atelectasis", mentioned)
    m_want["Cardiomegaly"] = {**_prf(n("Cardiomegaly", mentioned) - 1, 0, 1), "value_agreement": 1.0}
    for lab in CHEXPERT:
        assert _close(labels[lab]["mention"], m_want[lab]), (lab, labels[lab]["mention"], m_want[lab])
    m_f1s = [w["f1"] for w in m_want.values() if w["f1"] is not None]
    assert report["macro_mention_f1"] == pytest.approx(sum(m_f1s) / len(m_f1s), abs=1e-4)

    confusion = labels["Atelectasis"]["confusion"]
    assert confusion["gold=-1"]["pred=1"] == 1 and confusion["gold=-1"]["pred=-1"] == n("Atelectasis", {"-1"}) - 1
    assert labels["Cardiomegaly"]["confusion"]["gold=0"]["pred=blank"] == 1
    assert sum(sum(row.values()) for row in confusion.values()) == len(scored)


def test_eval_script_on_the_labelers_output(tmp_path):
    """The labeler's file output, scored by the script: the script's confusion matrices are the labeler's values
    (label_report) against GOLD, counted here report by report; agreement is reported, not assumed."""
    pred, gold = _write_gold(tmp_path)
    report = _eval_script(pred, gold, "negative")
    assert report["reports"]["scored"] == len(GOLD) and report["uncertain_as"] == "negative"
    assert "blank (not mentioned)" in report["notes"][0]
    for lab in CHEXPERT:
        counts = {
            f"gold={g}": dict.fromkeys(("pred=1", "pred=0", "pred=-1", "pred=blank"), 0)
            for g in ("1", "0", "-1", "blank")
        }
        for text, labels in GOLD:
            got = label_report(text)[lab]
            counts[f"gold={labels.get(lab, 'blank')}"][f"pred={'blank' if got is None else got}"] += 1
        assert report["labels"][lab]["confusion"] == counts, lab
    assert 0.0 <= report["macro_f1"] <= 1.0 and 0.0 <= report["macro_mention_f1"] <= 1.0


def test_bench_script(tmp_path):
    pred, _ = _write_gold(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_labeler.py"),
            str(tmp_path / "gold_reports.csv"),
            "--no-openi",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout)["results"][0]
    assert result["reports"] == len(GOLD) and result["reports_per_s"] > 0


# ----------------------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_chexpert_sample_impressions():
    # Expected values are those the CheXpert labeler publishes for its own sample impressions.
    expected = [
        {"No Finding": 1, "Cardiomegaly": 0, "Edema": 0, "Pneumonia": 0, "Pleural Effusion": 0},
        {"Cardiomegaly": 1, "Edema": 0, "Atelectasis": 1, "Pleural Effusion": 1},
        {"Lung Opacity": 1, "Consolidation": -1, "Atelectasis": -1},
        {"Cardiomegaly": 1},
    ]
    texts = pd.read_csv(REAL_REPORTS / "chexpert_sample_impressions.csv", header=None)[0].tolist()
    got = [{k: v for k, v in label_report(t, sections=("impression",)).items() if v is not None} for t in texts]
    assert got == expected


@pytest.mark.realdata
def test_real_raw_reports(tmp_path):
    summary = label_reports_file(REAL_REPORTS, tmp_path / "labels.csv", show_progress=False)
    out = _read(tmp_path / "labels.csv").set_index("id")
    assert summary["rejected"] == 0 and {"raw_report_a", "raw_report_b"} <= set(out.index)
    assert out.loc["raw_report_a", "Pneumothorax"] == "0"
    b = out.loc["raw_report_b"]
    assert (b["Cardiomegaly"], b["Support Devices"], b["Pneumothorax"], b["Pleural Effusion"]) == ("1", "1", "0", "0")


@pytest.mark.slow
@pytest.mark.skipif(openi_archive() is None, reason="torchxrayvision (Open-i reports) is not installed")
@pytest.mark.parametrize("label_set", LABEL_SETS)
def test_openi_all_reports(label_set):
    rules = load_rules(label_set)
    results = [label_report(r["text"], rules=rules) for r in iter_openi_reports()]
    assert len(results) > 3000
    rate = {lab: sum(r[lab] == 1 for r in results) / len(results) for lab in rules.labels}
    assert 0.4 < rate["No Finding"] < 0.9  # Open-i is mostly normal outpatient studies
    assert 0.03 < rate["Cardiomegaly"] < 0.2 and rate["Pneumothorax"] < 0.03
    assert all(r < 0.3 for lab, r in rate.items() if lab != "No Finding")
