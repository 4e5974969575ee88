"""Checkpoints, case indexes and eval outputs in a bucket (moto's S3 server), through the CLI as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medclip.cli import main
from medclip.eval.index import INDEX_FILES
from medclip.io import storage


def upload_run(checkpoint: Path, bucket: str) -> str:
    """The tiny run's final/ (and the run files beside it) in the bucket -> the checkpoint's URL."""
    url = storage.join(bucket, "runs", "tiny", "final")
    storage.upload(checkpoint, url)
    for name in ("config.yaml", "metrics.jsonl"):
        if (checkpoint.parent / name).is_file():
            storage.upload(checkpoint.parent / name, storage.join(bucket, "runs", "tiny", name))
    return url


def ranked(answer: dict) -> list[tuple[str, float]]:
    return [(r["study_id"], r["score"]) for r in answer["results"]]


def test_index_build_query_and_serve_from_a_bucket(tiny_checkpoint, tiny_manifest, s3_bucket, tmp_path, monkeypatch):
    ckpt = upload_run(tiny_checkpoint, s3_bucket)
    idx = storage.join(s3_bucket, "indexes", "tiny")
    build = ["-q", "index", "build", "--manifest", str(tiny_manifest), "--split", "val", "--checkpoint"]
    assert main([*build, ckpt, "--out", idx]) == 0
    assert main([*build, str(tiny_checkpoint), "--out", str(tmp_path / "local_idx")]) == 0
    fs, root = storage.filesystem(idx)
    assert sorted(Path(p).name for p in fs.find(root)) == sorted(INDEX_FILES)  # the embeddings cache stays local
    assert json.loads(storage.read_text(storage.join(idx, "index.json")))["checkpoint"] == ckpt

    query = "small left pleural effusion"
    assert main(["-q", "index", "query", str(tmp_path / "local_idx"), query, "-k", "3"]) == 0
    local = json.loads((tmp_path / "local_idx" / "last_query.json").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "index", "query", idx, query, "-k", "3"]) == 0
    remote = json.loads((tmp_path / "last_query.json").read_text())  # a URL index: the answer in the current folder
    assert ranked(remote) == ranked(local) and len(local["results"]) == 3
    assert not storage.exists(storage.join(idx, "last_query.json"))  # nothing written into the bucket unasked
    assert main(["-q", "index", "query", idx, query, "-k", "3", "--json", storage.join(s3_bucket, "q.json")]) == 0
    assert ranked(json.loads(storage.read_text(storage.join(s3_bucket, "q.json")))) == ranked(local)

    from medclip.serve.engine import CaseService

    service = CaseService(ckpt, idx)
    assert ranked(service.search(query, k=3)) == ranked(local)
    assert service.info()["checkpoint"] == "final" and service.info()["index"]["n"] == local["index"]["n"]


def test_eval_zeroshot_with_a_checkpoint_and_results_in_a_bucket(
    tiny_checkpoint, tiny_manifest, tiny_archive, s3_bucket, tmp_path, monkeypatch, caplog
):
    ckpt = upload_run(tiny_checkpoint, s3_bucket)
    out = storage.join(s3_bucket, "evals", "zs")
    argv = ["-q", "eval", "zeroshot", "--manifest", str(tiny_manifest), "--labels", str(tiny_archive / "labels.csv")]
    argv += ["--split", "test", "--bootstrap", "0", "--checkpoint"]
    assert main([*argv, ckpt, "--out", out]) == 0
    remote = json.loads(storage.read_text(storage.join(out, "results.json")))
    assert remote["checkpoint"] == ckpt
    for name in ("results.md", *remote["plots"].values()):
        assert storage.isfile(storage.join(out, name)), name
    assert "training_curves" in remote["plots"]  # metrics.jsonl fetched from beside the checkpoint
    assert main([*argv, str(tiny_checkpoint), "--out", str(tmp_path / "local"), "plots=false"]) == 0
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    assert remote["zero_shot"] == local["zero_shot"]

    # no --out with a URL checkpoint: a local folder named after the run, announced (the evaluation itself as above)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("medclip.eval.pipeline.evaluate", lambda cfg, **kw: {**local, "plots": {}})
    with caplog.at_level("WARNING", logger="medclip"):
        assert main([*argv, ckpt]) == 0
    default = tmp_path / "tiny" / "eval_zeroshot"
    assert json.loads((default / "results.json").read_text())["zero_shot"] == local["zero_shot"]
    assert str(default) in caplog.text


def test_bench_with_a_checkpoint_and_results_in_a_bucket(tiny_checkpoint, s3_bucket, tmp_path):
    from tests.bench.test_chexpert import write_chexpert

    write_chexpert(tmp_path)
    ckpt, out = upload_run(tiny_checkpoint, s3_bucket), storage.join(s3_bucket, "bench", "5x200")
    data = str(tmp_path / "CheXpert-v1.0-small")
    assert main(["-q", "bench", "chexpert-5x200", "--data", data, "--checkpoint", ckpt, "--out", out]) == 0
    results = json.loads(storage.read_text(storage.join(out, "results.json")))
    assert results["checkpoint"] == ckpt and results["out_dir"] == out
    assert "## Protocol" in storage.read_text(storage.join(out, "results.md"))  # written whole before the upload
    assert results["plots"] and all(storage.isfile(storage.join(out, name)) for name in results["plots"].values())


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "zeroshot", "--checkpoint", "s3://{missing}/final", "--manifest", "{manifest}"], "{missing}"),
        (["eval", "zeroshot", "--checkpoint", "{ckpt}", "--manifest", "{manifest}", "--out", "s3://{missing}/e"], ""),
        (["index", "query", "s3://AKIA:hush@{missing}/idx", "effusion"], "is not a case index"),
        (["index", "build", "--checkpoint", "{bucket}/none", "--manifest", "{manifest}", "--out", "o"], "checkpoint"),
        (["serve", "--checkpoint", "{ckpt}", "--index", "{bucket}/no_index"], "is not a case index"),
    ],
)
def test_a_missing_bucket_or_object_is_one_line_naming_the_url(
    argv, needle, tiny_checkpoint, tiny_manifest, s3_bucket, capsys
):
    missing = "medclip-no-such-bucket"
    fill = {
        "{missing}": missing,
        "{bucket}": s3_bucket,
        "{ckpt}": str(tiny_checkpoint),
        "{manifest}": str(tiny_manifest),
    }
    for key, value in fill.items():
        argv, needle = [a.replace(key, value) for a in argv], needle.replace(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    url = next(a for a in argv if a.startswith("s3://"))
    assert storage.display(url) in err and "hush" not in err, err
    if missing in url:
        assert f"bucket '{missing}' does not exist" in err, err
