"""The CLI contract: help with examples, one-line errors with exit code 2, and an end-to-end smoke run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medclip.cli import build_parser, main

COMMANDS = ["demo", "synth", "manifest", "prepare", "train", "eval", "sections", "index", "label"]


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
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1, err


def test_train_overrides_may_come_on_both_sides_of_resume(monkeypatch):
    import medclip.cli

    seen = []
    monkeypatch.setattr(medclip.cli, "cmd_train", lambda args: seen.append((args.overrides, args.resume)))
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
    """synth archive -> manifest -> train (tiny preset) -> eval, each through the installed CLI."""
    env_python = [sys.executable, "-m", "medclip.cli", "-q"]
    run = lambda *a: subprocess.run([*env_python, *a], capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run("manifest", str(tiny_archive), "--out", str(tmp_path / "m"), "--salt", "s")
    assert r.returncode == 0, r.stderr
    r = run("train", "tiny", f"data.manifest={tmp_path / 'm'}", f"train.out_dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    r = run("eval", "all", "--checkpoint", str(tmp_path / "run" / "final"), "--manifest", str(tmp_path / "m"),
            "--labels", str(tiny_archive / "labels.csv"), "--split", "all", "--out", str(tmp_path / "ev"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert 0.0 <= results["zero_shot"]["macro_auroc"] <= 1.0
    assert set(results["retrieval"]["image_to_text"]) >= {"R@1", "R@5", "R@10", "MRR"}
    assert (tmp_path / "ev" / "results.md").read_text().startswith("# ")
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "metrics.jsonl").is_file()
