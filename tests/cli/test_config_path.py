"""One configuration path: eval, index, manifest and demo read typed schemas (YAML + flags + dotted overrides).

Flags are sugar for config keys; unknown keys are errors with a did-you-mean; only user errors exit 2.
"""

from __future__ import annotations

import pytest

import medclip.cli
from medclip.cli import main
from medclip.config import DemoCfg, EvalCfg, IndexBuildCfg, ManifestCfg, default_of


def _capture(monkeypatch, target: str) -> list:
    """Replace ``medclip.<target>`` (a library entry point the CLI calls) by a recorder of its first argument."""
    module, name = target.rsplit(".", 1)
    seen: list = []

    def record(cfg, **kwargs):
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(f"{module}.{name}", record)
    return seen


def test_eval_flags_yaml_and_overrides_build_one_config(tmp_path, monkeypatch):
    seen = _capture(monkeypatch, "medclip.eval.pipeline.evaluate")
    yaml = tmp_path / "eval.yaml"
    yaml.write_text("prompts: chexpert\nbootstrap: 50\nsplit: val\n")
    argv = [
        "eval",
        "all",
        "--config",
        str(yaml),
        "--checkpoint",
        "ck",
        "--manifest",
        "m",
        "--split",
        "test",
        "--label-cols",
        "a,b",
        "--no-cache",
        "seed=7",
    ]
    with pytest.raises(SystemExit):
        main(argv)
    (cfg,) = seen
    assert isinstance(cfg, EvalCfg)
    assert cfg.tasks == ["zeroshot", "retrieval", "probe"]  # "all" = every registered task, in run order
    assert (cfg.prompts, cfg.bootstrap) == ("chexpert", 50)  # from the YAML
    assert cfg.split == "test"  # a flag wins over the YAML
    assert cfg.seed == 7 and cfg.cache is False and cfg.label_cols == ["a", "b"]
    assert cfg.batch_size == default_of(EvalCfg, "batch_size")  # untouched keys keep the schema's default
    assert cfg.out_dir.endswith("eval_all")  # the CLI's default: next to the checkpoint


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "zeroshot", "--checkpoint", "c", "--manifest", "m", "splt=val"], "Did you mean 'split'"),
        (["index", "build", "--checkpoint", "c", "--manifest", "m", "--out", "o", "params.nprob=3"], "params.nprobe"),
        (["manifest", "archive", "--out", "o", "layuot=csv"], "Did you mean 'layout'"),
        (["demo", "demo.studies=abc"], "bad value for 'studies'"),
    ],
)
def test_config_mistakes_are_one_line_exit_2(argv, needle, monkeypatch, capsys):
    _capture(monkeypatch, "medclip.eval.pipeline.evaluate")
    _capture(monkeypatch, "medclip.eval.index.build_case_index")
    _capture(monkeypatch, "medclip.ingest.manifest.manifest_from_config")
    _capture(monkeypatch, "medclip.demo.run_demo")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_demo_checks_its_training_overrides_before_synthesising(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "train.epoch=1"]) == 2
    assert "Did you mean 'train.epochs'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "zeroshot", "--checkpoint", "c", "--manifest", "m", "--csv", "x.csv"], "exactly one of"),
        (["eval", "zeroshot", "--checkpoint", "c", "--csv", "x.csv", "--shards", "s"], "--shards goes with"),
        (["index", "build", "--checkpoint", "c", "--csv", "x.csv", "--shards", "s", "--out", "o"], "--shards goes"),
        (["index", "build", "--checkpoint", "c", "--csv", "x.csv", "--out", "o", "params.kind=bogus"], "params.kind"),
        (["eval", "zeroshot", "--checkpoint", "c", "--manifest", "m", "--split", "bogus"], "invalid choice"),
        (["index", "query", "idx", "cost ${x}", "--checkpoint", "c"], "is not a case index"),
    ],
)
def test_source_and_option_mistakes_fail_before_any_work(argv, needle, capsys):
    """Checked by the library entry points (and argparse for choices) before a checkpoint is even opened."""
    code = 0
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err, err


def test_index_build_flags_set_nested_params(monkeypatch):
    seen = _capture(monkeypatch, "medclip.eval.index.build_case_index")
    with pytest.raises(SystemExit):
        main(
            [
                "index",
                "build",
                "--checkpoint",
                "c",
                "--csv",
                "x.csv",
                "--out",
                "o",
                "--kind",
                "ivf",
                "--nlist",
                "8",
                "params.ef_search=40",
            ]
        )
    (cfg,) = seen
    assert isinstance(cfg, IndexBuildCfg)
    assert (cfg.params.kind, cfg.params.nlist, cfg.params.ef_search, cfg.params.nprobe) == ("ivf", 8, 40, 16)


def test_manifest_flags_and_positional_source(monkeypatch):
    seen = _capture(monkeypatch, "medclip.ingest.manifest.manifest_from_config")
    with pytest.raises(SystemExit):
        main(
            [
                "manifest",
                "cases.csv",
                "--layout",
                "csv",
                "--out",
                "m",
                "--column",
                "image=png",
                "--column",
                "image=lat",
                "--modalities",
                "dx, cr",
                "--no-verify",
                "salt=s3cret",
            ]
        )
    (cfg,) = seen
    assert isinstance(cfg, ManifestCfg)
    assert cfg.source == "cases.csv" and cfg.columns == ["image=png", "image=lat"]
    assert cfg.modalities == ["dx", "cr"] and cfg.verify_pixels is False and cfg.salt == "s3cret"


def test_demo_splits_its_own_keys_from_the_training_overrides(monkeypatch):
    seen = []
    monkeypatch.setattr("medclip.demo.run_demo", lambda cfg, **kw: seen.append((cfg, kw["overrides"])) or exit(0))
    with pytest.raises(SystemExit):
        main(["demo", "--modality", "sketch", "demo.studies=12", "train.epochs=1"])
    ((cfg, overrides),) = seen
    assert isinstance(cfg, DemoCfg) and (cfg.modality, cfg.studies, cfg.seed) == ("sketch", 12, 0)
    assert overrides == ["train.epochs=1"]


def test_choices_come_from_the_registries(capsys):
    from medclip.eval.pipeline import EVAL_TASKS
    from medclip.ingest.layouts import LAYOUTS

    @EVAL_TASKS.register("test_only_task")
    def _task(run, cfg):  # pragma: no cover - only its name is used
        return {}

    try:
        with pytest.raises(SystemExit):
            main(["eval", "--help"])
        help_text = capsys.readouterr().out
        assert "test_only_task" in help_text
        with pytest.raises(SystemExit):
            main(["manifest", "--help"])
        help_text = capsys.readouterr().out
        assert all(name in help_text for name in LAYOUTS.list()), help_text
    finally:
        EVAL_TASKS._items.pop("test_only_task")


def test_a_bug_shows_its_traceback_and_exits_1(monkeypatch, capsys):
    def broken(cfg, **kwargs):
        raise KeyError("row_id")  # a programming error, not the user's

    monkeypatch.setattr("medclip.eval.pipeline.evaluate", broken)
    assert main(["eval", "zeroshot", "--checkpoint", "c", "--manifest", "m"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'row_id'" in err and "internal error" in err


def test_an_unknown_registry_name_is_a_user_error(tmp_path, capsys):
    code = main(["train", "tiny", f"data.manifest={tmp_path}", "loss.name=infonse"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err


def test_cli_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, medclip.cli; medclip.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_every_config_flag_names_a_schema_key():
    """A flag's key that the schema lacks would only fail when used; check them all up front."""
    parser = medclip.cli.build_parser()
    checked = 0
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if getattr(action, "choices", None) and isinstance(action.choices, dict):
                stack.extend(action.choices.values())
            if action.dest.startswith(medclip.cli.CFG):
                key = action.dest[len(medclip.cli.CFG) :]
                schema = {"eval": EvalCfg, "manifest": ManifestCfg, "demo": DemoCfg}.get(p.prog.split()[-1])
                if schema is not None:
                    default_of(schema, key)  # KeyError-like failure if the key does not exist
                    checked += 1
    assert checked >= 25


def test_train_help_lists_the_registered_towers_and_losses(capsys):
    from medclip.losses import LOSSES
    from medclip.models.image_tower import IMAGE_TOWERS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in [*IMAGE_TOWERS.list(), *LOSSES.list()]), text
    assert "sketch_cnn" in text and "siglip" in text


def test_a_malformed_input_table_is_a_user_error_naming_the_file(tiny_archive, tmp_path, capsys):
    bad = tmp_path / "reports.csv"
    bad.write_bytes(b'accession,text\n"unterminated,\n')
    empty = tmp_path / "cases.csv"
    empty.write_text("")
    for argv, name in (
        (["manifest", str(tiny_archive), "--out", str(tmp_path / "m"), "--salt", "s", "--reports", str(bad)], bad),
        (["manifest", str(empty), "--layout", "csv", "--out", str(tmp_path / "m2"), "--salt", "s"], empty),
    ):
        assert main(["-q", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert str(name) in err and len(err.splitlines()) == 1, err


def test_manifest_source_may_be_an_override_and_all_keeps_every_modality(tiny_archive, tmp_path, capsys):
    from medclip.ingest.manifest import read_manifest

    out = tmp_path / "m"
    assert (
        main(["-q", "manifest", f"source={tiny_archive}", "--out", str(out), "--salt", "s", "--modalities", "CT"]) == 0
    )
    assert "rejected modality" in capsys.readouterr().out  # CT only: every radiograph is a modality reject
    assert main(["-q", "manifest", f"source={tiny_archive}", f"out_dir={out}", "salt=s", "modalities=[all]"]) == 0
    df, meta = read_manifest(out)
    assert len(df) == meta["counts"]["inputs"] - meta["counts"]["rejected"] and len(df) > 0
    assert "modality" not in meta["counts"]["reject_reasons"]
