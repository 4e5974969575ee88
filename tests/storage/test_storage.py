"""medclip.io.storage against a real S3-compatible server (moto's server mode) through fsspec/s3fs."""

from __future__ import annotations

import pytest

from medclip.io import storage


def test_local_paths_and_file_urls(tmp_path):
    assert not storage.is_url(tmp_path) and not storage.is_url(f"file://{tmp_path}")
    assert storage.is_url("s3://bucket/key") and storage.is_url("gs://bucket/key")
    assert storage.local_path(f"file://{tmp_path}/a") == tmp_path / "a"
    storage.write_text(f"file://{tmp_path}/d/x.txt", "hi")
    assert (tmp_path / "d" / "x.txt").read_text() == "hi"
    assert storage.fetch(tmp_path / "d") == tmp_path / "d"


def test_display_drops_credentials():
    assert storage.display("s3://AKIA:secret@bucket/key") == "s3://bucket/key"
    assert "secret" not in storage.display("https://user:secret@host/x")


def test_round_trip_fetch_and_upload(s3_bucket, tmp_path):
    src = tmp_path / "folder"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01")
    url = storage.join(s3_bucket, "runs", "folder")
    storage.upload(src, url)
    assert storage.isfile(storage.join(url, "sub", "b.bin"))
    local = storage.fetch(url)
    assert (local / "a.txt").read_text() == "a" and (local / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    assert storage.fetch(url) == local  # cached: same object versions
    storage.write_text(storage.join(url, "a.txt"), "changed")
    again = storage.fetch(url)
    assert again != local and (again / "a.txt").read_text() == "changed"  # a changed object is fetched again
    with pytest.raises(FileNotFoundError, match="no such object"):
        storage.fetch(storage.join(s3_bucket, "missing"))
    storage.remove(url)
    assert not storage.exists(storage.join(url, "a.txt"))
