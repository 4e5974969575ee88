"""``medclip manifest`` and ``medclip prepare`` read and write object storage (a local S3 server, moto) as they do
local folders, on the local executor and on Dask; nothing they print or write holds the credentials."""

from __future__ import annotations

import numpy as np
import pandas as pd
import s3fs

from medclip.cli import main
from medclip.ingest.manifest import read_manifest
from medclip.io import storage


def _fs() -> s3fs.S3FileSystem:
    s3fs.S3FileSystem.clear_instance_cache()
    return s3fs.S3FileSystem()


def test_manifest_and_prepare_to_s3_equal_local(tmp_path, s3_bucket, capsys):
    from medclip.synth.cxr.archive import synth_cxr

    synth_cxr(tmp_path / "arc", studies=16, seed=5)
    salt = ["--salt", "a-long-enough-salt-value"]
    assert main(["-q", "manifest", str(tmp_path / "arc"), "--out", str(tmp_path / "m"), *salt]) == 0
    url = f"{s3_bucket}/hospital/manifest"
    assert main(["-q", "manifest", str(tmp_path / "arc"), "--out", url, *salt, "--executor", "dask"]) == 0
    out = capsys.readouterr().out
    assert url in out and "medclip-test-secret" not in out
    local, remote = read_manifest(tmp_path / "m")[0], read_manifest(url)[0]
    pd.testing.assert_frame_equal(local, remote)
    train, _ = read_manifest(url, splits=["train"], columns=["row_id", "split"])
    assert set(train["split"]) == {"train"} and len(train) == (local["split"] == "train").sum()
    fs = _fs()
    assert fs.ls(f"{url}/manifest.parquet".removeprefix("s3://"))  # a folder of parts in the bucket

    # a rebuild into the bucket keeps the splits, as into a local folder
    assert main(["-q", "manifest", str(tmp_path / "arc"), "--out", url, *salt]) == 0
    pd.testing.assert_frame_equal(read_manifest(url)[0], local)

    shards = f"{s3_bucket}/hospital/shards"
    argv = ["-q", "prepare", url, "--out", shards, "--image-size", "32", "--workers", "2"]
    assert main([*argv, "--executor", "dask"]) == 0
    assert main(["-q", "prepare", str(tmp_path / "m"), "--out", str(tmp_path / "s"), "--image-size", "32"]) == 0
    for name in sorted(p.name for p in (tmp_path / "s").iterdir()):
        remote_bytes = storage.read_bytes(f"{shards}/{name}")
        if name.endswith(".npy"):
            assert remote_bytes == (tmp_path / "s" / name).read_bytes(), name
    index = pd.read_parquet(storage.fetch(f"{shards}/index.parquet"))
    assert len(index) == len(local)
    first = np.load(storage.fetch(f"{shards}/shard-00000.npy"))
    assert first.shape[1:] == (1, 32, 32) and first.dtype == np.uint16


def test_csv_archive_and_report_table_from_s3(tmp_path, s3_bucket):
    from medclip.synth.cxr.archive import synth_cxr

    synth_cxr(tmp_path / "arc", studies=8, seed=6)
    images = sorted((tmp_path / "arc").rglob("*.dcm"))
    reports = {p.stem: p.read_text() for p in (tmp_path / "arc").rglob("*.txt")}
    import pydicom

    rows = []
    for path in images:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows.append({"image": str(path), "patient": ds.PatientID, "study": ds.AccessionNumber})
    table = pd.DataFrame(rows)
    storage.write_bytes(f"{s3_bucket}/in/archive.csv", table.to_csv(index=False).encode())
    report_rows = pd.DataFrame({"accession": list(reports), "report": list(reports.values())})
    storage.write_bytes(f"{s3_bucket}/in/reports.csv", report_rows.to_csv(index=False).encode())
    out = tmp_path / "m"
    argv = ["-q", "manifest", f"{s3_bucket}/in/archive.csv", "--layout", "csv", "--out", str(out)]
    argv += ["--reports", f"{s3_bucket}/in/reports.csv", "--salt", "a-long-enough-salt-value"]
    assert main(argv) == 0
    df, meta = read_manifest(out)
    assert len(df) == len(images) and meta["counts"]["rejected"] == 0


def test_missing_bucket_is_one_clear_line(tmp_path, s3_bucket, capsys):
    assert main(["-q", "prepare", "s3://no-such-bucket-medclip/manifest", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert "s3://no-such-bucket-medclip/manifest" in err and len(err.splitlines()) == 1
    assert main(["-q", "manifest", "s3://no-such-bucket-medclip/archive", "--out", str(tmp_path / "m")]) == 2
    assert "only the CSV of --layout csv may be a URL" in capsys.readouterr().err


def test_no_credentials_or_no_endpoint_is_one_line_with_the_fix(tmp_path, s3_bucket, monkeypatch, capsys):
    import s3fs as _s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries, or the test waits out their back-off
    _s3fs.S3FileSystem.clear_instance_cache()
    assert main(["-q", "prepare", f"{s3_bucket}/manifest", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "AWS_ENDPOINT_URL" in err, err
    assert "medclip-test-secret" not in err
