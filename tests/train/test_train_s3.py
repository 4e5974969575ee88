"""Training from shards in a bucket into a run folder in a bucket: checkpoints uploaded, ``--resume`` from the bucket
on a machine with an empty cache ends with the weights and losses of an uninterrupted run; clear errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medclip.config import PreprocessCfg, load_config
from medclip.data.shards import prepare_shards
from medclip.errors import InputError
from medclip.io import storage
from medclip.train import trainer
from medclip.train.trainer import train

# 38 train pairs, 2 workers x 19 rows -> 2 batches of 8 per worker, 4 per epoch: the checkpoint at step 5 is batch 1
# of epoch 1, an odd batch with two more after it (on resume the DataLoader's workers serve rotated slots).
RUN = [
    "train.max_steps=7",
    "train.checkpoint_every=5",
    "train.batch_size=8",
    "train.threads=1",
    "train.log_every=1",
    "data.num_workers=2",
    "data.shuffle_buffer=16",
]


@pytest.fixture(scope="module")
def local_shards(tiny_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s3train") / "shards"
    prepare_shards(tiny_manifest, out, preprocess=PreprocessCfg(image_size=64), rows_per_shard=8, show_progress=False)
    return out


def _train(overrides: list[str], *, resume: bool = False) -> Path:
    threads = torch.get_num_threads()
    try:
        return train(load_config("tiny", overrides), show_progress=False, resume=resume)
    finally:
        torch.set_num_threads(threads)


def _losses(run_url: str) -> list[tuple[int, float]]:
    lines = storage.read_text(storage.join(run_url, "metrics.jsonl")).splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def _weights(url: str, tmp: Path) -> dict[str, torch.Tensor]:
    (tmp / "w.safetensors").write_bytes(storage.read_bytes(storage.join(url, "final", "model.safetensors")))
    return load_file(str(tmp / "w.safetensors"))


def test_train_from_a_bucket_checkpoints_there_and_resumes_exactly(
    tiny_manifest, local_shards, s3_bucket, s3_server, tmp_path, monkeypatch, caplog
):
    shards = storage.join(s3_bucket, "shards")
    storage.upload(local_shards, shards)
    common = [f"data.manifest={tiny_manifest}", f"data.shards={shards}", *RUN]  # data.streaming=auto: a URL streams

    with caplog.at_level(logging.DEBUG, logger="medclip"):
        _train([*common, f"train.out_dir={s3_bucket}/a"])
    want = _weights(f"{s3_bucket}/a", tmp_path)
    for name in ("config.yaml", "metrics.jsonl", "final/model.safetensors", "checkpoints/step-0000007/COMPLETE"):
        assert storage.isfile(storage.join(s3_bucket, "a", name)), name
    config = storage.read_text(storage.join(s3_bucket, "a", "config.yaml"))
    assert f"out_dir: {s3_bucket}/a" in config
    for secret in (s3_server.env["AWS_SECRET_ACCESS_KEY"], s3_server.env["AWS_ACCESS_KEY_ID"]):
        assert secret not in config and secret not in caplog.text

    # The same run stopped during step 6: its checkpoint of step 5 is in the bucket.
    real_step = trainer.train_step

    def crash_at_6(parts, inputs, loss_kwargs, state):
        if state["step"] + 1 == 6:
            raise RuntimeError("node lost")
        return real_step(parts, inputs, loss_kwargs, state)

    monkeypatch.setattr(trainer, "train_step", crash_at_6)
    with pytest.raises(RuntimeError, match="node lost"):
        _train([*common, f"train.out_dir={s3_bucket}/b"])
    monkeypatch.setattr(trainer, "train_step", real_step)
    steps = storage.filesystem(storage.join(s3_bucket, "b", "checkpoints"))
    assert [p.rsplit("/", 1)[-1] for p in steps[0].ls(steps[1], refresh=True)] == ["step-0000005"]

    # Resumed on "another machine": an empty cache (no mirror of the run, no cached shards).
    monkeypatch.setenv("MEDCLIP_CACHE", str(tmp_path / "other-node"))
    final = _train([*common, f"train.out_dir={s3_bucket}/b"], resume=True)
    assert final.is_relative_to(tmp_path / "other-node")  # the local mirror
    got = _weights(f"{s3_bucket}/b", tmp_path)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]
    assert _losses(f"{s3_bucket}/b") == _losses(f"{s3_bucket}/a")
    kept = steps[0].ls(steps[1], refresh=True)
    assert sorted(p.rsplit("/", 1)[-1] for p in kept) == ["step-0000005", "step-0000007"]  # keep_checkpoints=2


def test_a_missing_bucket_or_a_url_with_credentials_is_a_clear_error(
    tiny_manifest, local_shards, s3_bucket, s3_server, tmp_path
):
    secret = s3_server.env["AWS_SECRET_ACCESS_KEY"]
    base = [f"data.manifest={tiny_manifest}", "train.max_steps=1"]
    cases = [
        (["data.shards=s3://medclip-missing-bucket/shards", f"train.out_dir={tmp_path / 'r'}"], "s3://medclip-missing-bucket/shards: the bucket"),
        ([f"data.shards={local_shards}", "train.out_dir=s3://medclip-missing-bucket/run"], "train.out_dir=s3://medclip-missing-bucket/run: the bucket"),
        ([f"data.shards={s3_bucket}/none", f"train.out_dir={tmp_path / 'r'}"], f"{s3_bucket}/none: no shards.json"),
        ([f"data.shards=s3://AKIA:{secret}@bucket/s", f"train.out_dir={tmp_path / 'r'}"], "carries credentials"),
        ([f"data.shards={local_shards}", "data.streaming=maybe", f"train.out_dir={tmp_path / 'r'}"], "not one of"),
    ]  # fmt: skip
    for overrides, message in cases:
        with pytest.raises(InputError, match=message) as exc:
            _train([*base, *overrides])
        assert secret not in str(exc.value)


@pytest.mark.slow
def test_two_ranks_stream_from_a_bucket_and_resume_on_a_fresh_node(tiny_manifest, local_shards, s3_bucket, tmp_path):
    """torchrun, 2 gloo ranks: equal batches per rank from disjoint shards, every rank's random state in the bucket's
    checkpoint, and a resume with empty caches ends with the weights and losses of the uninterrupted run."""
    shards = storage.join(s3_bucket, "shards")
    storage.upload(local_shards, shards)
    args = [f"data.manifest={tiny_manifest}", f"data.shards={shards}", "train.device=cpu", "train.batch_size=4"]
    args += ["train.max_steps=5", "train.checkpoint_every=3", "train.threads=1", "train.log_every=1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

    def run(out: str, cache: str, *extra: str) -> None:
        cmd = [*torchrun, "-m", "medclip.cli", "--quiet", "train", "tiny", *args, f"train.out_dir={out}", *extra]
        env = {**os.environ, "MEDCLIP_CACHE": str(tmp_path / cache)}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]

    run(f"{s3_bucket}/a", "node-a")
    run(f"{s3_bucket}/b", "node-b")
    for rank in (0, 1):
        assert storage.isfile(storage.join(s3_bucket, "b", "checkpoints", "step-0000003", f"rng-rank{rank}.pt"))
    storage.remove(storage.join(s3_bucket, "b", "checkpoints", "step-0000005"))  # as if killed after step 3's save
    storage.remove(storage.join(s3_bucket, "b", "final"))
    run(f"{s3_bucket}/b", "node-c", "--resume")
    want, got = _weights(f"{s3_bucket}/a", tmp_path), _weights(f"{s3_bucket}/b", tmp_path)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert _losses(f"{s3_bucket}/b") == _losses(f"{s3_bucket}/a")
