"""Prepared shards: same pixels as the deterministic MONAI steps, resumable, splittable, rejects, recipe checks."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.transforms import Compose

from medclip.config import PreprocessCfg
from medclip.data.datasets import PairDataset, pairs_from_manifest
from medclip.data.shards import SCALE, ShardStore, parse_shard_spec, prepare_shards
from medclip.data.transforms import deterministic_transforms
from medclip.ingest.manifest import read_manifest

CFG = PreprocessCfg(image_size=64)  # the tiny preset's size
ROWS_PER_SHARD = 16  # several blocks from the ~50-row tiny manifest


@pytest.fixture(scope="module")
def shards(tiny_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "s"
    summary = prepare_shards(
        tiny_manifest, out, preprocess=CFG, workers=2, rows_per_shard=ROWS_PER_SHARD, show_progress=False
    )
    assert summary["complete"] and summary["rows_rejected"] == 0 and summary["shards_written"] >= 3
    return out


def test_arrays_equal_the_deterministic_transforms(shards, tiny_manifest):
    df, meta = read_manifest(tiny_manifest)
    store = ShardStore(shards)
    info = json.loads((shards / "shards.json").read_text())
    assert info["recipe"] == {"image_size": 64, "channels": 1, "window_index": 0, "invert": False}
    assert info["manifest_hash"] == meta["content_hash"] and info["counts"]["kept"] == len(df) == len(store)
    reference = Compose(deterministic_transforms(CFG))
    for row in df.iloc[[0, 17, len(df) - 1]].itertuples():
        expected = np.asarray(reference({"image": row.image_path})["image"])
        got = store.get(row.row_id)
        assert got.dtype == np.float32 and got.shape == expected.shape == (1, 64, 64)
        assert np.abs(got - expected).max() <= 0.5 / SCALE + 1e-6


def test_eval_pipeline_from_shards_equals_raw_files(shards, tiny_manifest):
    df, _ = read_manifest(tiny_manifest)
    pairs, texts = pairs_from_manifest(df.head(4), text_policy="findings_impression")
    raw = PairDataset(pairs, texts, CFG, train=False, cache_rate=0.0)
    prepared = PairDataset(pairs, texts, CFG, train=False, shards=ShardStore(shards))
    for i in range(4):
        a, b = np.asarray(raw[i]["image"]), np.asarray(prepared[i]["image"])
        assert np.abs(a - b).max() <= 1e-4 / CFG.std  # quantisation step, scaled by the normalisation


def test_batch_read_equals_per_sample_reads(shards, tiny_manifest):
    """A DataLoader batch (__getitems__) reads and normalises shards as one array: the same items as one by one."""
    df, _ = read_manifest(tiny_manifest)
    pairs, texts = pairs_from_manifest(df.head(12), text_policy="findings_impression")
    cfg = PreprocessCfg(image_size=64, mean=0.4, std=0.3)
    for train, augment in ((False, "batch"), (True, "batch"), (True, "monai")):
        data = PairDataset(pairs, texts, replace(cfg, augment=augment), train=train, shards=ShardStore(shards))
        assert data._batch_read == (augment != "monai")  # per-sample random transforms keep the MONAI path
        if augment == "monai":
            continue
        indices = [7, 0, 11, 3]
        batch, single = data.__getitems__(indices), [data[i] for i in indices]
        for a, b in zip(batch, single, strict=True):
            assert a.keys() == b.keys() and a["row_id"] == b["row_id"]
            torch.testing.assert_close(a["image"], torch.as_tensor(b["image"]), atol=1e-6, rtol=1e-6)


def test_rerun_through_the_cli_skips_finished_shards(shards, tiny_manifest, capsys):
    from medclip.cli import main

    mtimes = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}
    argv = ["-q", "prepare", str(tiny_manifest), "--out", str(shards), "--workers", "1"]
    assert main([*argv, "--image-size", "64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards_written"] == 0 and summary["shards_skipped"] == summary["shards_total"] >= 3
    assert {p.name: p.stat().st_mtime_ns for p in shards.iterdir()} == mtimes
    assert main([*argv, "--image-size", "96"]) == 2  # another recipe never mixes into the folder
    assert "another recipe or manifest" in capsys.readouterr().err


def test_two_machine_split_equals_a_single_run(shards, tiny_manifest, tmp_path):
    out = tmp_path / "split"
    first = prepare_shards(
        tiny_manifest, out, preprocess=CFG, shard=(0, 2), rows_per_shard=ROWS_PER_SHARD, show_progress=False
    )
    assert not first["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        ShardStore(out)
    second = prepare_shards(
        tiny_manifest, out, preprocess=CFG, shard=(1, 2), rows_per_shard=ROWS_PER_SHARD, show_progress=False
    )
    assert second["complete"] and first["shards_written"] + second["shards_written"] == first["shards_total"]
    for name in sorted(p.name for p in shards.glob("shard-*.npy")):
        np.testing.assert_array_equal(np.load(shards / name), np.load(out / name))
    pd.testing.assert_frame_equal(pd.read_parquet(shards / "index.parquet"), pd.read_parquet(out / "index.parquet"))
    assert json.loads((shards / "shards.json").read_text()) == json.loads((out / "shards.json").read_text())


def test_a_corrupt_file_becomes_a_reject(tiny_manifest, tmp_path):
    df, meta = read_manifest(tiny_manifest)
    df = df.head(5).copy()
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"DICM" + b"\x00garbage" * 40)
    df.loc[df.index[2], "image_path"] = str(bad)
    manifest = tmp_path / "m"
    manifest.mkdir()
    df.to_parquet(manifest / "manifest.parquet", index=False)
    summary = prepare_shards(manifest, tmp_path / "s", preprocess=CFG, workers=1, show_progress=False)
    assert summary["complete"] and summary["rows_kept"] == 4 and summary["rows_rejected"] == 1
    rejects = pd.read_parquet(tmp_path / "s" / "rejects.parquet")
    assert rejects["row_id"].tolist() == [int(df["row_id"].iloc[2])] and rejects["path"].tolist() == [str(bad)]
    assert rejects["reason"].iloc[0] in {"not_dicom", "unreadable", "truncated", "undecodable"}
    store = ShardStore(tmp_path / "s")
    assert int(df["row_id"].iloc[2]) not in store and len(store) == 4
    pairs, texts = pairs_from_manifest(df, text_policy="findings_impression")
    assert len(PairDataset(pairs, texts, CFG, train=True, shards=store)) == 4  # the reject is skipped, with a warning


def test_recipe_mismatch_raises(shards, tiny_manifest):
    df, _ = read_manifest(tiny_manifest)
    pairs, texts = pairs_from_manifest(df.head(2), text_policy="findings_impression")
    with pytest.raises(ValueError, match="--image-size 96"):
        PairDataset(pairs, texts, PreprocessCfg(image_size=96), train=True, shards=ShardStore(shards))


def test_shards_from_another_manifest_are_refused(shards, tiny_manifest):
    df, _ = read_manifest(tiny_manifest)
    pairs, texts = pairs_from_manifest(df.head(2), text_policy="findings_impression")
    pairs[1]["image"] = "/elsewhere/other.dcm"
    with pytest.raises(ValueError, match="another manifest"):
        PairDataset(pairs, texts, CFG, train=False, shards=ShardStore(shards))


@pytest.mark.parametrize("spec", ["2/2", "a/b", "1", "-1/3"])
def test_bad_shard_spec(spec):
    with pytest.raises(ValueError, match="I/N"):
        parse_shard_spec(spec)


def test_training_reads_shards(shards, tiny_manifest, tmp_path, monkeypatch):
    """With data.shards every training image comes from the prepared arrays: no image file is decoded, each step
    reads batch_size rows of the train split from the store, and the losses equal a run on the raw files."""
    import medclip.io.dicom
    from medclip.config import load_config
    from medclip.train.trainer import train

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    steps, batch = 2, 8

    def run(name: str, *extra: str) -> list[dict]:
        cfg = load_config(
            "tiny",
            [
                f"data.manifest={tiny_manifest}",
                f"train.out_dir={tmp_path / name}",
                f"train.max_steps={steps}",
                f"train.batch_size={batch}",
                "train.log_every=1",
                *extra,
            ],
        )
        final = train(cfg, show_progress=False)
        assert (final / "model.safetensors").is_file()
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    raw = run("raw")  # the same run on the image files, decoded

    reads, decoded = [], []
    get_raw = ShardStore.get_raw

    def spy(store, row_id):
        assert Path(store.path) == copy
        reads.append(row_id)
        return get_raw(store, row_id)

    def refuse(*args, **kwargs):
        decoded.append(args)
        raise AssertionError("training with data.shards decoded an image file")

    monkeypatch.setattr(ShardStore, "get_raw", spy)
    monkeypatch.setattr(medclip.io.dicom, "load_image", refuse)
    records = run("prepared", f"data.shards={copy}")
    assert not decoded
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    df, _ = read_manifest(tiny_manifest)
    train_rows = set(df.loc[df["split"] == "train", "row_id"].tolist())
    assert len(reads) == steps * batch and set(reads) <= train_rows
    # Same pairs, same images up to uint16 quantisation: the same losses (a row read for another gives ~1e-2 off)
    for a, b in zip(raw, records, strict=True):
        assert math.isfinite(b["loss"]) and b["loss"] == pytest.approx(a["loss"], rel=1e-4)


def test_evaluation_reads_shards_and_embeds_like_raw_files(shards, tiny_manifest, tiny_checkpoint, monkeypatch):
    from medclip.eval.embeddings import Embedder

    df, _ = read_manifest(tiny_manifest)
    rows = df.head(6)
    raw = Embedder(tiny_checkpoint, show_progress=False).encode_images(list(rows["image_path"]))
    reader = Embedder(tiny_checkpoint, show_progress=False, shards=shards)
    monkeypatch.setattr("medclip.io.dicom.load_image", lambda *a, **k: pytest.fail("decoded a prepared image"))
    prepared = reader.encode_images(list(rows["image_path"]), list(rows["row_id"]))
    assert prepared.shape == raw.shape
    assert (prepared * raw).sum(1).min() > 0.999  # same images up to uint16 quantisation


def test_evaluation_refuses_shards_of_another_recipe(tiny_manifest, tiny_checkpoint, tmp_path):
    from medclip.eval.embeddings import Embedder

    other = prepare_shards(
        tiny_manifest, tmp_path / "s", preprocess=PreprocessCfg(image_size=32), workers=1, show_progress=False
    )
    assert other["complete"]
    df, _ = read_manifest(tiny_manifest)
    with pytest.raises(ValueError, match="image_size"):
        Embedder(tiny_checkpoint, show_progress=False, shards=tmp_path / "s").encode_images(
            list(df["image_path"].head(2)), list(df["row_id"].head(2))
        )
