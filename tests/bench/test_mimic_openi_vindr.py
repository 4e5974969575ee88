"""mimic-5x200, openi and vindr-cxr: tiny folders in the official layouts run end to end; the selection rules checked."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from medclip.bench.base import PRESETS, subset_hash
from medclip.bench.presets.mimic import COMPETITION, sample_per_class
from medclip.bench.presets.openi import labels_from_terms, mesh_major_terms
from medclip.bench.presets.vindr import majority_labels
from tests.bench.conftest import run_bench, write_dicom, write_image

SIZE = (64, 64)


def _load(name: str, root: Path):
    return PRESETS.get(name).load(root)


def _gone(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


# ---- MIMIC-CXR-JPG + reports --------------------------------------------------------------------------------------

MIMIC_OBS = [  # mimic-cxr-2.0.0-chexpert.csv column order
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
]  # fmt: skip
META_COLUMNS = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]  # fmt: skip
PER_FINDING = {"Atelectasis": 3, "Cardiomegaly": 3, "Consolidation": 2, "Edema": 2, "Pleural Effusion": 3}
# studies each selection rule must leave out: (labels, views, split, report)
EXCLUDED = {
    "uncertain": ({"Edema": 1, "Atelectasis": -1}, ("PA",), "test", True),
    "two_findings": ({"Cardiomegaly": 1, "Edema": 1}, ("AP",), "test", True),
    "support_device": ({"Pleural Effusion": 1, "Support Devices": 1}, ("AP",), "test", True),
    "no_finding": ({"No Finding": 1}, ("PA",), "test", True),
    "train_split": ({"Atelectasis": 1}, ("PA",), "train", True),
    "validate_split": ({"Cardiomegaly": 1}, ("PA",), "validate", True),
    "blank_view": ({"Consolidation": 1}, ("",), "test", True),
    "no_sections": ({"Edema": 1}, ("PA",), "test", False),
}


def _mimic_studies(per_finding: dict[str, int]) -> list[tuple]:
    studies = []
    for finding, k in per_finding.items():
        for j in range(k):  # the first study of a finding also has a lateral view
            labels = {finding: 1, "No Finding": None, MIMIC_OBS[5 + j]: 0}  # one other observation 0, the rest blank
            studies.append((labels, ("PA" if j % 2 else "AP",) + (("LATERAL",) if j == 0 else ()), "test", True))
    return studies + list(EXCLUDED.values())


def write_mimic(root: Path, per_finding: dict[str, int] = PER_FINDING, *, unlabelled: bool = True) -> Path:
    """The three MIMIC-CXR-JPG CSVs (.csv.gz, the release's headers), a JPG per image and a report per study, half of
    them beside the JPGs and half under mimic-cxr-reports/files/."""
    split_rows, meta_rows, label_rows = [], [], []
    for n, (labels, views, split, sections) in enumerate(_mimic_studies(per_finding)):
        subject, study = f"1{n:07d}", f"5{n:07d}"
        folder = Path("files", f"p{subject[:2]}", f"p{subject}")
        for k, view in enumerate(views):
            dicom = hashlib.md5(f"{n}-{k}".encode()).hexdigest()[:20]
            write_image(root / folder / f"s{study}" / f"{dicom}.jpg", 10 * n + k, size=SIZE)
            split_rows.append((dicom, study, subject, split))
            meta_rows.append((dicom, subject, study, "CHEST (PA AND LAT)", view or None, 64, 64, 21800101, 101010.5,
                              "CHEST (PA AND LAT)", "postero-anterior", "Erect"))  # fmt: skip
        label_rows.append({"subject_id": subject, "study_id": study, **labels})
        body = f"FINDINGS: Finding {n} of the {split} study.\n\n IMPRESSION: Impression {n}.\n" if sections else ""
        report = root / ("mimic-cxr-reports" if n % 2 else "") / folder / f"s{study}.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            f"                                 FINAL REPORT\n EXAMINATION:  CHEST\n\n INDICATION: ___\n\n {body}"
        )
    if unlabelled:  # a frontal test image of a study the labeller has no row for
        write_image(root / "files/p19/p19999999/s59999999/ffff.jpg", 999, size=SIZE)
        split_rows.append(("ffff", "59999999", "19999999", "test"))
        meta_rows.append(("ffff", "19999999", "59999999", "CHEST", "PA", 64, 64, 21800101, 0.0, "", "", ""))
    pd.DataFrame(split_rows, columns=["dicom_id", "study_id", "subject_id", "split"]).to_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz", index=False
    )
    pd.DataFrame(meta_rows, columns=META_COLUMNS).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    pd.DataFrame(label_rows, columns=["subject_id", "study_id", *MIMIC_OBS]).to_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False
    )
    return root


@pytest.fixture
def mimic(tmp_path) -> Path:
    return write_mimic(tmp_path / "mimic")


def test_mimic_selection_rules(mimic):
    data = _load("mimic-5x200", mimic)
    rows, labels = data.table.rows, data.table.labels
    assert data.decisions["eligible"] == PER_FINDING
    assert dict(zip(*np.unique(labels.to_numpy().argmax(1), return_counts=True), strict=True)) == {
        i: PER_FINDING[f] for i, f in enumerate(COMPETITION)
    }
    assert (labels.sum(axis=1) == 1).all() and set(rows["split"]) == {"test"}
    assert data.decisions["excluded"] == {
        "test_split_images": sum(PER_FINDING.values()) + len(PER_FINDING) + 7,  # + laterals, 6 test exclusions, 1
        "not_frontal": len(PER_FINDING) + 1,  # the laterals and the blank ViewPosition
        "no_label_row": 1,
        "not_single_finding": 4,  # uncertain, two findings, support device, no finding
        "uncertain_excluded": 1,
        "no_findings_or_impression": 1,
    }
    assert set(rows["view"]) == {"PA", "AP"}
    assert all(r.startswith("Finding ") and "test study" in r for r in rows["report"])
    assert len(set(rows["report"])) == len(rows) and any("fewer than 200" in n for n in data.notes)


def test_mimic_sampling_is_seeded_and_order_free():
    pool = pd.DataFrame(
        {"dicom_id": [f"d{i:03d}" for i in range(30)], "target": [COMPETITION[i % 5] for i in range(30)]}
    )
    first = sample_per_class(pool, per_class=4)
    again = sample_per_class(pool.iloc[::-1], per_class=4)
    assert list(first["dicom_id"]) == list(again["dicom_id"]) and len(first) == 20
    assert first["target"].value_counts().to_dict() == dict.fromkeys(COMPETITION, 4)
    assert set(sample_per_class(pool, per_class=4, seed=1)["dicom_id"]) != set(first["dicom_id"])
    assert len(sample_per_class(pool, per_class=10)) == 30  # fewer than asked: all of them


def test_mimic_end_to_end(mimic, tmp_path, tiny_checkpoint):
    code, results = run_bench("mimic-5x200", mimic, tiny_checkpoint, tmp_path / "a")
    assert code == 0
    head, protocol = results["headline"], results["protocol"]
    assert head["metric"] == "zero-shot top-1 accuracy" and 0 <= head["value"] <= 1
    assert results["zero_shot"]["multiclass"]["n"] == sum(PER_FINDING.values()) == protocol["n_images"]["test"]
    assert results["retrieval"]["image_to_text"]["R@1"] is not None
    assert protocol["decisions"]["per_class"] == 200 and protocol["prompt_set"] == "chexpert_5x200"

    assert subset_hash(_load("mimic-5x200", mimic).table, mimic) == protocol["subset_hash"]  # a second read: the same
    fewer = write_mimic(tmp_path / "fewer", {**PER_FINDING, "Edema": 1})
    assert subset_hash(_load("mimic-5x200", fewer).table, fewer) != protocol["subset_hash"]


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-chexpert.csv.gz"),
        ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv.gz"),
        ("files", "files"),
        ("mimic-cxr-reports", "mimic-cxr-reports.zip"),  # half the reports: a partial unpack
    ],
)
def test_mimic_missing_part_is_exit_2(mimic, remove, named, tmp_path, tiny_checkpoint, capsys):
    _gone(mimic / remove)
    assert run_bench("mimic-5x200", mimic, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert named in capsys.readouterr().err


def test_mimic_missing_image_and_renamed_column(mimic, tmp_path, tiny_checkpoint, capsys):
    image = next((mimic / "files/p10/p10000001").rglob("*.jpg"))
    image.unlink()
    assert run_bench("mimic-5x200", mimic, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert image.name in capsys.readouterr().err
    meta = mimic / "mimic-cxr-2.0.0-metadata.csv.gz"
    pd.read_csv(meta).rename(columns={"ViewPosition": "View"}).to_csv(meta, index=False)
    assert run_bench("mimic-5x200", mimic, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert "ViewPosition" in capsys.readouterr().err


# ---- Open-i -------------------------------------------------------------------------------------------------------

# (MeSH major terms, number of images); report 1 also has an <automatic> term that must not count
OPENI_REPORTS = [
    (["normal"], 2),
    (["Cardiomegaly/mild", "Pulmonary Atelectasis/base/left"], 2),
    (["Calcified Granuloma/lung/upper lobe/right"], 1),
    (["No Indexing"], 2),
    (["Opacity/lung/base/left/mild", "Pleural Effusion/right/small"], 2),
    (["normal"], 0),
    (["Granulomatous Disease", "Infiltrate/lung/bilateral"], 1),
    (["normal"], 2),
    (["Cardiomegaly/moderate", "Pleural Effusion/bilateral"], 1),
    (["Fractures, Bone/ribs/left/healed"], 1),
]


def _openi_image(n: int, k: int) -> str:
    return f"CXR{n}_1_IM-{n:04d}-{k + 3}001"


def _openi_xml(n: int, majors: list[str], n_images: int) -> str:
    mesh = "".join(f"<major>{m}</major>" for m in majors) + ("<automatic>cardiomegaly</automatic>" if n == 1 else "")
    images = "".join(
        f'<parentImage id="{_openi_image(n, k)}"><figureId>F{k + 1}</figureId><caption>Xray Chest PA and Lateral'
        f'</caption><panel type="single"><url>/hadoop/storage/radiology/extract/{_openi_image(n, k)}.jpg</url>'
        "</panel></parentImage>"
        for k in range(n_images)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<eCitation><meta type="rr"/><uId id="CXR{n}"/><pmcId id="{n}"/>'
        f'<docSource>CXR</docSource><IUXRId id="{n}"/><licenseType>open-access</licenseType>'
        '<MedlineCitation Owner="Indiana University" Status="supplied by publisher"><Article PubModel="Electronic">'
        "<ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle><Abstract>"
        '<AbstractText Label="COMPARISON">None.</AbstractText><AbstractText Label="INDICATION">XXXX-year-old with '
        f'cough.</AbstractText><AbstractText Label="FINDINGS">Findings of report {n}.</AbstractText>'
        f'<AbstractText Label="IMPRESSION">Impression {n}.</AbstractText></Abstract></Article></MedlineCitation>'
        f"<MeSH>{mesh}</MeSH>{images}</eCitation>"
    )


def write_openi(root: Path, reports=OPENI_REPORTS) -> Path:
    """ecgen-radiology/<n>.xml as NLMCXR_reports.tgz unpacks, the PNGs as NLMCXR_png.tgz (in a subfolder)."""
    (root / "ecgen-radiology").mkdir(parents=True)
    for n, (majors, n_images) in enumerate(reports, start=1):
        (root / "ecgen-radiology" / f"{n}.xml").write_text(_openi_xml(n, majors, n_images))
        for k in range(n_images):
            write_image(root / "NLMCXR_png" / f"{_openi_image(n, k)}.png", 100 * n + k, size=SIZE)
    write_image(root / "NLMCXR_png" / "CXR999_1_IM-0999-1001.png", 1, size=SIZE)  # listed by no report
    return root


@pytest.fixture
def openi(tmp_path) -> Path:
    return write_openi(tmp_path / "openi")


@pytest.mark.parametrize(
    ("terms", "positive"),
    [
        (["normal"], set()),
        (["pulmonary atelectasis/base/left"], {"atelectasis"}),
        (["calcified granuloma/lung"], {"calcified_granuloma", "granuloma"}),
        (["granulomatous disease"], {"granuloma"}),  # torchxrayvision's substring rule, not calcified
        (["infiltrate/lung/bilateral"], {"infiltration"}),
        (["fractures, bone/ribs"], {"fracture"}),
        (["opacity/lung/base", "pleural effusion/right"], {"lung_opacity", "effusion"}),
        (
            ["thickening/pleura/right"],
            {"pleural_thickening"},
        ),  # how the release codes it (no term says "pleural thickening")
    ],
)
def test_openi_label_table(terms, positive):
    labels = labels_from_terms(terms)
    assert len(labels) == 18 and {k for k, v in labels.items() if v == 1} == positive
    assert set(labels.values()) <= {0.0, 1.0}


@pytest.mark.parametrize("terms", [[], ["no indexing"]])
def test_openi_unindexed_report_has_no_labels(terms):
    assert all(np.isnan(v) for v in labels_from_terms(terms).values())


def test_openi_major_terms_only():
    assert mesh_major_terms(_openi_xml(1, ["normal"], 1)) == ["normal"]  # not its <automatic> cardiomegaly
    assert mesh_major_terms("<eCitation><MeSH><major>  Lung/ hypoinflation </major></MeSH></eCitation>") == [
        "lung/ hypoinflation"
    ]


def test_openi_selection(openi):
    data = _load("openi", openi)
    rows, labels = data.table.rows, data.table.labels
    assert len(rows) == 12 and set(rows["split"]) == {"test"}  # 14 listed, the 2 of the unindexed report left out
    assert data.decisions["counts"] == {
        "reports": 10, "reports_without_images": 1, "not_indexed_reports": 1, "not_indexed_images": 2,
        "duplicate_image_ids": 0, "pngs_not_listed": 1,
    }  # fmt: skip
    assert _openi_image(4, 0) not in " ".join(rows["image_path"]) and "CXR999" not in " ".join(rows["image_path"])
    normal = rows["study_id"] == "CXR1"
    assert normal.sum() == 2 and (labels[normal.to_numpy()] == 0).all().all()  # <automatic> ignored
    assert data.decisions["test_positives"]["cardiomegaly"] == 3 and data.decisions["test_positives"]["granuloma"] == 2


def test_openi_end_to_end(openi, tmp_path, tiny_checkpoint):
    code, results = run_bench("openi", openi, tiny_checkpoint, tmp_path / "a")
    assert code == 0
    assert results["headline"]["metric"] == "zero-shot macro AUROC" and results["headline"]["value"] is not None
    assert results["zero_shot"]["per_finding"]["cardiomegaly"]["auroc"] is not None
    protocol = results["protocol"]
    assert protocol["n_images"] == {"train": 0, "val": 0, "test": 12} and protocol["prompt_set"] == "openi"
    assert subset_hash(_load("openi", openi).table, openi) == protocol["subset_hash"]  # a second read: the same
    relabelled = write_openi(tmp_path / "relabelled", [*OPENI_REPORTS[:-1], (["normal"], 1)])
    assert subset_hash(_load("openi", relabelled).table, relabelled) != protocol["subset_hash"]


def test_openi_missing_parts_are_exit_2(openi, tmp_path, tiny_checkpoint, capsys):
    png = openi / "NLMCXR_png" / f"{_openi_image(2, 1)}.png"
    png.unlink()
    assert run_bench("openi", openi, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert _openi_image(2, 1) in capsys.readouterr().err
    (openi / "ecgen-radiology" / "3.xml").write_text("<eCitation><uId id='CXR3'/>")  # cut short
    assert run_bench("openi", openi, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert "3.xml" in capsys.readouterr().err
    _gone(openi / "ecgen-radiology")
    assert run_bench("openi", openi, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert "ecgen-radiology" in capsys.readouterr().err


# ---- VinDr-CXR ----------------------------------------------------------------------------------------------------

VINDR_LABELS = [  # image_labels_*.csv column order after image_id (and rad_id): 22 local, then 6 global labels
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
    "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding",
]  # fmt: skip
N_TEST, N_TRAIN = 12, 20


def _vindr_id(kind: str, i: int) -> str:
    return hashlib.md5(f"{kind}{i}".encode()).hexdigest()


def _vindr_dicom(path: Path, i: int) -> None:
    attrs = {"PatientSex": "MF"[i % 2]} | ({"PatientAge": f"{25 + 5 * i:03d}Y"} if i % 4 != 3 else {})
    write_dicom(path, i, size=SIZE, **attrs)


def write_vindr(root: Path, n_test: int = N_TEST, *, train: bool = True) -> Path:
    """annotations/image_labels_{test,train}.csv with the release's header; DICOMs named <image_id>.dicom. Training
    votes: two of the three radiologists mark finding j of image i when (i + j) % 3 == 0, one when it is 1."""
    rows = []
    for i in range(n_test):
        marks = [int((i + j) % 4 == 0) for j in range(len(VINDR_LABELS) - 1)]
        rows.append([_vindr_id("t", i), *marks, int(not any(marks))])
        _vindr_dicom(root / "test" / f"{_vindr_id('t', i)}.dicom", i)
    (root / "annotations").mkdir(parents=True)
    pd.DataFrame(rows, columns=["image_id", *VINDR_LABELS]).to_csv(
        root / "annotations/image_labels_test.csv", index=False
    )
    if train:
        votes = []
        for i in range(N_TRAIN):
            for r in range(3):
                marks = [int(((i + j) % 3 == 0 and r < 2) or ((i + j) % 3 == 1 and r == 0)) for j in range(27)]
                votes.append([_vindr_id("r", i), f"R{r + 8}", *marks, int(not any(marks))])
            _vindr_dicom(root / "train" / f"{_vindr_id('r', i)}.dicom", 50 + i)
        pd.DataFrame(votes, columns=["image_id", "rad_id", *VINDR_LABELS]).iloc[::-1].to_csv(
            root / "annotations/image_labels_train.csv", index=False
        )
    return root


@pytest.fixture
def vindr(tmp_path) -> Path:
    return write_vindr(tmp_path / "vindr")


def test_vindr_val_is_cxrclips_split_with_majority_labels(vindr):
    train = pd.read_csv(vindr / "annotations/image_labels_train.csv")
    grouped = train.groupby("image_id")[VINDR_LABELS].sum().reset_index()  # CXR-CLIP's per-image table
    _, reference = train_test_split(grouped, test_size=0.2, random_state=0)
    data = _load("vindr-cxr", vindr)
    rows, labels = data.table.rows, data.table.labels
    assert set(rows.loc[rows["split"] == "val", "study_id"]) == set(reference["image_id"])
    assert (rows["split"] == "test").sum() == N_TEST and list(labels.columns)[9] == "nodule_mass"
    votes = majority_labels(train).set_index("image_id")
    i = next(i for i in range(N_TRAIN) if (i + 1) % 3 == 0)  # two of three mark Atelectasis (j = 1)
    assert votes.loc[_vindr_id("r", i), "Atelectasis"] == 1 and votes.loc[_vindr_id("r", i + 1), "Atelectasis"] == 0
    assert data.decisions["readers_per_image"] == {"3": N_TRAIN}


def test_vindr_header_subgroups_and_dicom_suffix(vindr):
    rows = _load("vindr-cxr", vindr).table.rows
    test = rows[rows["split"] == "test"].set_index("study_id")
    assert test.loc[_vindr_id("t", 1), ["sex", "age_band"]].tolist() == ["F", "18-39"]  # PatientAge 030Y
    assert test.loc[_vindr_id("t", 3), "age_band"] == ""  # no PatientAge in the header
    assert "view" not in rows.columns and all(p.endswith(".dicom") for p in rows["image_path"])


def test_vindr_end_to_end(vindr, tmp_path, tiny_checkpoint):
    code, results = run_bench("vindr-cxr", vindr, tiny_checkpoint, tmp_path / "a")
    assert code == 0
    assert results["headline"]["metric"] == "zero-shot macro AUROC" and results["headline"]["value"] is not None
    assert results["zero_shot"]["threshold_split"] == "val"
    protocol = results["protocol"]
    assert protocol["n_images"] == {"train": 0, "val": 4, "test": N_TEST} and len(protocol["findings"]) == 18
    assert subset_hash(_load("vindr-cxr", vindr).table, vindr) == protocol["subset_hash"]  # a second read: the same
    fewer = write_vindr(tmp_path / "fewer", N_TEST - 1)
    assert subset_hash(_load("vindr-cxr", fewer).table, fewer) != protocol["subset_hash"]


def test_vindr_without_train_has_no_val(tmp_path):
    data = _load("vindr-cxr", write_vindr(tmp_path / "v", train=False))
    assert set(data.table.rows["split"]) == {"test"} and data.decisions["val"].startswith("none")
    assert any("train/" in n for n in data.notes)


@pytest.mark.parametrize(("remove", "named"), [("test", "test"), ("annotations", "image_labels_test.csv")])
def test_vindr_missing_part_is_exit_2(vindr, remove, named, tmp_path, tiny_checkpoint, capsys):
    _gone(vindr / remove)
    assert run_bench("vindr-cxr", vindr, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert named in capsys.readouterr().err


def test_vindr_partial_train_download_and_bad_label(vindr, tmp_path, tiny_checkpoint, capsys):
    val_image = _load("vindr-cxr", vindr).table.rows.query("split == 'val'")["image_path"].iloc[0]
    Path(val_image).unlink()
    assert run_bench("vindr-cxr", vindr, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert Path(val_image).name in capsys.readouterr().err
    csv = vindr / "annotations/image_labels_test.csv"
    pd.read_csv(csv).assign(Pneumothorax=lambda d: d["Pneumothorax"].where(d.index != 2, 0.5)).to_csv(csv, index=False)
    assert run_bench("vindr-cxr", vindr, tiny_checkpoint, tmp_path / "out")[0] == 2
    assert "row 4" in capsys.readouterr().err
