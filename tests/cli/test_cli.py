"""The CLI contract: help with examples, one-line errors with exit code 2, and an end-to-end smoke run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medclip.cli import build_parser, main

COMMANDS = [
    "demo",
    "synth",
    "manifest",
    "prepare",
    "train",
    "eval",
    "sections",
    "index",
    "serve",
    "label",
    "bench",
    "ground",
]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_an_example(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "example:" in capsys.readouterr().out


def test_every_subcommand_has_help():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(COMMANDS)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["manifest", "/no/such/archive", "--out", "{tmp}/m"], "archive folder not found: /no/such/archive"),
        (["train", "no_such_config"], "config file not found"),
        (["train", "tiny", "train.epoch=2"], "Did you mean 'train.epochs'"),
        (["train", "tiny"], "data.manifest is not set"),
        (["eval", "zeroshot", "--checkpoint", "{tmp}", "--manifest", "{tmp}"], "is not a medclip checkpoint"),
        (["sections", "{tmp}/missing.txt"], "report file not found"),
        (["serve", "--checkpoint", "{tmp}", "--index", "{tmp}", "--host", "0.0.0.0"], "set MEDCLIP_TOKEN"),
        (["serve", "--index", "{tmp}"], "needs --checkpoint CKPT and --index IDX"),
        (["serve", "--checkpoint", "{tmp}", "--index", "{tmp}"], "is not a case index"),
        (["bench"], "bench needs a preset name"),
        (["bench", "chexpert-5x200", "--checkpoint", "{tmp}"], "needs the dataset folder: --data DIR"),
        (["bench", "rsna-pneumonia", "--data", "{tmp}/none", "--checkpoint", "{tmp}"], "is not a folder"),
        (["bench", "chexpert-test", "--data", "{tmp}", "--checkpoint", "{tmp}"], "is missing test_labels.csv"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1, err


def test_bench_list_names_every_preset(capsys):
    from medclip.bench import PRESETS

    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(f"`{name}`" in out for name in PRESETS.list()) and len(PRESETS.list()) >= 2


def test_train_overrides_may_come_on_both_sides_of_resume(monkeypatch):
    import medclip.cli.commands

    seen = []
    monkeypatch.setattr(medclip.cli.commands, "cmd_train", lambda args: seen.append((args.overrides, args.resume)))
    assert main(["train", "tiny", "train.epochs=2", "--resume", "train.lr=0.1"]) == 0
    assert seen == [(["train.epochs=2", "train.lr=0.1"], True)]
    with pytest.raises(SystemExit) as exc:  # anything else argparse leaves over is still an error
        main(["train", "tiny", "--resume", "--bogus"])
    assert exc.value.code == 2


def test_non_utf8_report_is_rejected_cleanly(tmp_path, capsys):
    path = tmp_path / "r.txt"
    path.write_bytes("FINDINGS: \xe9panchement".encode("latin-1"))
    assert main(["sections", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_sections_prints_json(tmp_path, capsys):
    path = tmp_path / "r.txt"
    path.write_text("FINDINGS: Heart size normal.\nIMPRESSION: No acute process.\n")
    assert main(["sections", str(path)]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["impression"] == "No acute process."


def test_manifest_on_a_folder_without_dicom_rejects_and_counts(tmp_path, capsys):
    (tmp_path / "a.dcm").write_bytes(b"not dicom at all")
    (tmp_path / "b").write_bytes(b"\x00" * 10)
    assert main(["-q", "manifest", str(tmp_path), "--out", str(tmp_path / "m"), "--salt", "s"]) == 0
    out = capsys.readouterr().out
    assert "inputs = kept + rejected: 2 = 0 + 2" in out


def test_end_to_end_smoke_through_the_console_script(tiny_archive, tmp_path):
    """synth archive -> manifest -> train (tiny preset) -> eval, each through the installed CLI.

    Four training steps give no better-than-chance model, so this checks what the pipeline must get right whatever
    the model: every image and study of the manifest evaluated, each finding's label counts from labels.csv, the
    train / test rows of the probe, consistent metrics, the plots on disk and the printed table equal to results.json.
    """
    import re

    import numpy as np
    import pandas as pd

    from medclip.ingest.tables import finding_key
    from medclip.text.prompts import load_prompts

    env_python = [sys.executable, "-m", "medclip.cli", "-q"]
    run = lambda *a: subprocess.run([*env_python, *a], capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run("manifest", str(tiny_archive), "--out", str(tmp_path / "m"), "--salt", "s")
    assert r.returncode == 0, r.stderr
    r = run("train", "tiny", f"data.manifest={tmp_path / 'm'}", f"train.out_dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    r = run(
        "eval",
        "all",
        "--checkpoint",
        str(tmp_path / "run" / "final"),
        "--manifest",
        str(tmp_path / "m"),
        "--labels",
        str(tiny_archive / "labels.csv"),
        "--split",
        "all",
        "--allow-overlap",
        "--out",
        str(tmp_path / "ev"),
    )
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    manifest = pd.read_parquet(tmp_path / "m" / "manifest.parquet")
    meta = json.loads((tmp_path / "m" / "manifest.meta.json").read_text())
    labels_csv = pd.read_csv(tiny_archive / "labels.csv", dtype={"study_id": str})

    # provenance and counts: the whole manifest, and the checkpoint trained on it
    assert results["split"] == "all" and results["n_images"] == len(manifest)
    assert results["n_studies"] == manifest["study_id"].nunique()
    assert results["train_manifest_hash"] == meta["content_hash"]
    assert results["overlap_check"] == "overlap allowed"  # split "all" holds the training patients
    train_patients = manifest.loc[manifest["split"] == "train", "patient_key"].nunique()
    assert results["training_overlap"]["patients"] == train_patients
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1]["step"] == 4 and np.isfinite(steps[-1]["loss"])  # the tiny preset's max_steps

    # zero-shot: one entry per prompt finding with labels, counted from labels.csv over the manifest's images
    zs = results["zero_shot"]
    findings = {finding_key(f) for f in load_prompts("cxr_demo")} & set(labels_csv.columns)
    assert findings and set(zs["per_finding"]) == findings and set(results["labels"]) >= findings
    per_image = manifest[["study_id"]].merge(labels_csv, on="study_id", how="left")
    for finding, m in zs["per_finding"].items():
        y = per_image[finding]
        assert m["n"] == int(y.isin([0, 1]).sum()) and m["positives"] == int((y == 1).sum()), finding
        assert 0 < m["positives"] < m["n"]
        assert 0.0 <= m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1] <= 1.0, finding
        assert 0.0 <= m["auprc_ci"][0] <= m["auprc"] <= m["auprc_ci"][1] <= 1.0, finding
    aurocs = [m["auroc"] for m in zs["per_finding"].values()]
    assert zs["macro_auroc"] == pytest.approx(float(np.mean(aurocs)))
    assert set(zs["polarity_warnings"]) == {f for f, m in zs["per_finding"].items() if m["auroc"] < 0.5}

    # retrieval: every image, one text per study; recall grows with k
    for direction in ("image_to_text", "text_to_image"):
        rec = results["retrieval"][direction]
        assert 0.0 <= rec["R@1"] <= rec["R@5"] <= rec["R@10"] <= 1.0 and 0.0 < rec["MRR"] <= 1.0, direction
    assert results["retrieval"]["n_images"] == len(manifest)
    assert results["retrieval"]["n_texts"] == manifest["study_id"].nunique()

    # the linear probe trains on the train split and scores the test split
    split_sizes = manifest["split"].value_counts()
    probe = results["probe"]
    assert (probe["n_train"], probe["n_test"]) == (split_sizes["train"], split_sizes["test"])
    assert probe["eval_split"] == "test" and set(probe["zero_shot_auroc"]) <= findings

    # the plots exist as PNG files
    assert set(results["plots"]) == {"roc_curves", "reliability", "retrieval_grid", "probe", "training_curves"}
    for name in results["plots"].values():
        assert (tmp_path / "ev" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    # what was printed (and written to results.md) is results.json
    zero_shot_table = r.stdout.split("## Retrieval")[0]
    printed = dict(re.findall(r"^\| (\w+) \| ([0-9.]+) \[", zero_shot_table, flags=re.M))
    assert printed == {f: f"{m['auroc']:.3f}" for f, m in zs["per_finding"].items()}
    assert f"**{zs['macro_auroc']:.3f} [" in r.stdout
    md = (tmp_path / "ev" / "results.md").read_text()
    assert md.startswith("# ") and all(f"| {f} | {a} [" in md for f, a in printed.items())
    assert (tmp_path / "run" / "config.yaml").is_file()
