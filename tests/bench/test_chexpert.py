"""chexpert-5x200 and chexpert-test on tiny trees in the official CheXpert / CheXlocalize layouts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medclip.bench.presets.chexpert import COMPETITION, OBSERVATIONS
from tests.bench.conftest import run_bench, write_image

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]


def _row(path: str, positives: dict, *, sex="Female", age=64, view="Frontal", appa="PA") -> list:
    return [path, sex, age, view, appa if view == "Frontal" else "", *[positives.get(o, "") for o in OBSERVATIONS]]


def write_chexpert(root: Path, *, per_class: int = 3) -> dict:
    """CheXpert-v1.0-small/{train,valid}.csv + images; per class ``per_class`` eligible frontal images, plus images
    the 5x200 selection must skip. -> counts of what was written."""
    base = root / "CheXpert-v1.0-small"
    rows, seed = [], 0

    def add(split: str, positives: dict, **kw) -> None:
        nonlocal seed
        seed += 1
        rel = f"CheXpert-v1.0-small/{split}/patient{seed:05d}/study1/view1_{'lateral' if kw.get('view') == 'Lateral' else 'frontal'}.jpg"
        write_image(root / rel, seed)
        rows.append((split, _row(rel, positives, **kw)))

    for i, finding in enumerate(COMPETITION):
        for j in range(per_class):
            add("train", {finding: 1.0, "No Finding": ""}, sex="Male" if j % 2 else "Female", age=30 + 20 * j)
        add("train", {finding: 1.0}, view="Lateral")  # lateral: skipped
        add("train", {finding: 1.0, "Support Devices": -1.0})  # another observation uncertain: skipped
        add("train", {finding: 1.0, COMPETITION[(i + 1) % 5]: 1.0})  # two findings: skipped
    add("train", {"No Finding": 1.0})  # no competition finding: skipped
    for j in range(8):
        add("valid", {f: float((j + k) % 2) for k, f in enumerate(COMPETITION)}, sex="Male" if j % 2 else "Female")
    for split in ("train", "valid"):
        with open(base / f"{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(HEADER)
            w.writerows(r for s, r in rows if s == split)
    return {"eligible": per_class * len(COMPETITION)}


def write_chexlocalize_test(base: Path, n: int = 10) -> None:
    """CheXlocalize's test_labels.csv (Path + 14 observations, 0/1) and test/ images, with one lateral view."""
    rows = []
    for i in range(n):
        view = "view2_lateral" if i == n - 1 else "view1_frontal"
        rel = f"test/patient{64700 + i}/study1/{view}.jpg"
        write_image(base / rel, 1000 + i)
        rows.append([rel, *[int((i + k) % 3 == 0) for k in range(len(OBSERVATIONS))]])
    with open(base / "test_labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Path", *OBSERVATIONS])
        w.writerows(rows)


def test_5x200_selects_single_finding_frontal_images(tmp_path, tiny_checkpoint, bench_out):
    counts = write_chexpert(tmp_path)
    data = tmp_path / "CheXpert-v1.0-small"
    code, results = run_bench("chexpert-5x200", data, tiny_checkpoint, bench_out)
    assert code == 0
    p = results["protocol"]
    assert p["n_images"]["test"] == counts["eligible"]  # laterals, uncertain and two-finding images left out
    assert p["decisions"]["eligible"] == {f: 3 for f in COMPETITION}
    assert results["headline"]["metric"] == "zero-shot top-1 accuracy"
    assert 0 <= results["headline"]["value"] <= 1 and results["zero_shot"]["multiclass"]["n"] == counts["eligible"]
    assert results["notes"] and "fewer than 200" in results["notes"][0]
    md = (bench_out / "results.md").read_text()
    assert "## Protocol" in md and p["subset_hash"] in md

    # --data one level above the release (where the zip was unpacked) finds it; the same subset, the same hash
    again, second = run_bench("chexpert-5x200", tmp_path, tiny_checkpoint, tmp_path / "again")
    assert again == 0 and second["protocol"]["subset_hash"] == p["subset_hash"]


def test_5x200_released_subset_file_is_used_and_changes_the_hash(tmp_path, tiny_checkpoint, bench_out):
    write_chexpert(tmp_path)
    data = tmp_path / "CheXpert-v1.0-small"
    _, derived = run_bench("chexpert-5x200", data, tiny_checkpoint, bench_out)
    lines = (data / "train.csv").read_text().splitlines()
    frontal_single = [ln for ln in lines[1:] if ",Frontal," in ln][:5]  # first eligible image of class 1
    (data / "chexpert_5x200.csv").write_text("\n".join([lines[0], *frontal_single[:2]]) + "\n")
    code, released = run_bench("chexpert-5x200", data, tiny_checkpoint, tmp_path / "released")
    assert code == 0
    assert released["protocol"]["decisions"]["subset"].startswith("chexpert_5x200.csv")
    assert released["protocol"]["n_images"]["test"] == 2
    assert released["protocol"]["subset_hash"] != derived["protocol"]["subset_hash"]


def test_chexpert_test_uses_frontal_test_images_and_valid_for_thresholds(tmp_path, tiny_checkpoint, bench_out):
    write_chexpert(tmp_path)
    data = tmp_path / "CheXpert-v1.0-small"
    write_chexlocalize_test(data)
    code, results = run_bench("chexpert-test", data, tiny_checkpoint, bench_out)
    assert code == 0
    p = results["protocol"]
    assert p["n_images"]["test"] == 9 and p["decisions"]["lateral_excluded"] == 1 and p["n_images"]["val"] == 8
    assert p["prompt_set"] == "chexzero" and set(p["findings"]) == {"atelectasis", "cardiomegaly", "consolidation",
                                                                     "edema", "pleural_effusion"}  # fmt: skip
    assert results["headline"]["metric"] == "zero-shot macro AUROC"
    assert results["zero_shot"]["threshold_split"] == "val"


@pytest.mark.parametrize(
    ("preset", "make", "missing"),
    [
        ("chexpert-5x200", lambda root: root.mkdir(), "train.csv or chexpert_5x200.csv"),
        ("chexpert-test", lambda root: (root / "test").mkdir(parents=True), "test_labels.csv"),
    ],
)
def test_wrong_folder_exits_2_naming_what_is_missing(tmp_path, tiny_checkpoint, capsys, preset, make, missing):
    root = tmp_path / "data"
    make(root)
    code, _ = run_bench(preset, root, tiny_checkpoint, tmp_path / "out")
    assert code == 2
    assert missing in capsys.readouterr().err


def test_partial_download_exits_2(tmp_path, tiny_checkpoint, capsys):
    write_chexpert(tmp_path)
    data = tmp_path / "CheXpert-v1.0-small"
    next((data / "train").rglob("view1_frontal.jpg")).unlink()
    code, _ = run_bench("chexpert-5x200", data, tiny_checkpoint, tmp_path / "out")
    assert code == 2 and "images listed by the release are missing" in capsys.readouterr().err


def test_compare_needs_the_same_protocol(tmp_path, tiny_checkpoint, capsys):
    write_chexpert(tmp_path)
    data = tmp_path / "CheXpert-v1.0-small"
    code, first = run_bench("chexpert-5x200", data, tiny_checkpoint, tmp_path / "a")
    assert code == 0
    old = tmp_path / "a" / "results.json"
    capsys.readouterr()
    code, second = run_bench("chexpert-5x200", data, tiny_checkpoint, tmp_path / "b", "--compare", str(old))
    out = capsys.readouterr().out
    assert code == 0 and "| zero-shot top-1 accuracy |" in out and "| value |" in out
    assert f"{first['headline']['value']:.3f} | {second['headline']['value']:.3f} | 0.000 |" in out
    # another prompt set is another protocol: refused, naming the field
    code, _ = run_bench(
        "chexpert-5x200", data, tiny_checkpoint, tmp_path / "c", "--prompts", "chexpert", "--compare", str(old)
    )
    err = capsys.readouterr().err
    assert code == 2 and "the protocols differ" in err and "prompt" in err
