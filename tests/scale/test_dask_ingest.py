"""``--executor dask`` gives the local executor's manifest and shards exactly, also when a worker dies mid-run.

The archives are the bad-input corpus of tests/ingest/test_bad_inputs.py (every reject reason of every layout, beside
good studies): what the cluster returns must reconcile and match row for row, reject for reject.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # importlib mode leaves the repo root off sys.path
    sys.path.insert(0, ROOT)

from medclip.cli import main  # noqa: E402
from medclip.config import PreprocessCfg  # noqa: E402
from medclip.errors import InputError  # noqa: E402
from medclip.executors import DaskExecutor, LocalExecutor, make_executor  # noqa: E402
from medclip.ingest.manifest import build_manifest, read_manifest, write_manifest  # noqa: E402
from tests.ingest.test_bad_inputs import GOOD, LAYOUT_CASES, finish  # noqa: E402

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes (what `--executor dask` starts without --scheduler)."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def dask_executor(cluster):
    with DaskExecutor(cluster.scheduler_address) as executor:
        yield executor


def _archive(root: Path, layout: str) -> Path:
    built = [GOOD[layout](root, f"good{i}") for i in range(3)]
    built += [make(root, name) for name, make in LAYOUT_CASES[layout].items()]
    return finish(root, layout, built)


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.manifest, b.manifest)
    pd.testing.assert_frame_equal(a.rejects, b.rejects)
    assert a.meta == b.meta


@pytest.mark.parametrize("layout", list(LAYOUT_CASES))
def test_dask_manifest_equals_local(tmp_path, layout, dask_executor):
    source = _archive(tmp_path, layout)
    local = build_manifest(source, layout=layout, salt="s", show_progress=False, executor=LocalExecutor(1))
    on_dask = build_manifest(source, layout=layout, salt="s", show_progress=False, executor=dask_executor)
    assert len(local.rejects) >= len(LAYOUT_CASES[layout]) // 2 and local.meta["counts"]["kept"] >= 3  # all there
    _same(local, on_dask)


def test_local_processes_equal_one_process(tmp_path):
    source = _archive(tmp_path, "dicom")
    one = build_manifest(source, salt="s", show_progress=False)
    with LocalExecutor(2) as pool:
        two = build_manifest(source, salt="s", show_progress=False, executor=pool)
    _same(one, two)


def _kill_a_worker_once_busy(scheduler: str, killed: list) -> threading.Thread:
    """SIGKILL the first worker process seen running a task (as the OOM killer or a lost machine would)."""

    def run() -> None:
        client = distributed.Client(scheduler)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    pids = client.run(os.getpid, workers=busy[:1])
                    (pid,) = pids.values()
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.005)
        finally:
            client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_is_retried_and_the_manifest_is_identical(tmp_path):
    from medclip.synth.cxr.archive import synth_cxr

    synth_cxr(tmp_path / "arc", studies=24, seed=3)
    expected = build_manifest(tmp_path / "arc", salt="s", show_progress=False)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        killed: list = []
        with DaskExecutor(cluster.scheduler_address) as executor:
            executor.window = 2  # a few small tasks at a time: the kill lands while work is in flight
            thread = _kill_a_worker_once_busy(cluster.scheduler_address, killed)
            from medclip.ingest import archive

            chunk, archive.RECORD_CHUNK = archive.RECORD_CHUNK, 2  # many tasks, so one is surely running
            try:
                got = build_manifest(tmp_path / "arc", salt="s", show_progress=False, executor=executor)
            finally:
                archive.RECORD_CHUNK = chunk
            thread.join(timeout=60)
    finally:
        cluster.close()
    assert killed, "no worker was killed: the test did not exercise a failure"
    _same(expected, got)


def test_dask_prepare_writes_the_local_bytes(tmp_path, tiny_manifest, dask_executor):
    from medclip.data.shards import prepare_shards

    pre = PreprocessCfg(image_size=32)
    local = prepare_shards(tiny_manifest, tmp_path / "local", preprocess=pre, rows_per_shard=16, show_progress=False)
    dask = prepare_shards(
        tiny_manifest, tmp_path / "dask", preprocess=pre, rows_per_shard=16, show_progress=False, executor=dask_executor
    )
    assert local["shards_total"] == dask["shards_total"] > 2 and dask["complete"] and dask["executor"] == "dask"
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "dask").iterdir())
    for name in names:
        if name.endswith(".npy"):
            assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes(), name
        elif name.endswith(".parquet"):
            pd.testing.assert_frame_equal(
                pd.read_parquet(tmp_path / "local" / name), pd.read_parquet(tmp_path / "dask" / name)
            )


def test_manifest_is_a_partitioned_dataset_read_in_parts(tmp_path):
    from medclip.synth.cxr.archive import synth_cxr

    synth_cxr(tmp_path / "arc", studies=30, seed=2)
    result = build_manifest(tmp_path / "arc", salt="s", show_progress=False)
    out = write_manifest(result, tmp_path / "m", rows_per_part=7)
    parts = sorted((out / "manifest.parquet").glob("part-*.parquet"))
    assert len(parts) == -(-len(result.manifest) // 7) > 3
    whole, _ = read_manifest(out)
    pd.testing.assert_frame_equal(whole, result.manifest)
    train, _ = read_manifest(out, splits=["train"], columns=["row_id", "image_path", "split"])
    assert list(train.columns) == ["row_id", "image_path", "split"] and set(train["split"]) == {"train"}
    assert train["row_id"].tolist() == result.manifest.loc[result.manifest["split"] == "train", "row_id"].tolist()
    rewritten = write_manifest(result, tmp_path / "m", rows_per_part=1000)  # a rebuild replaces every old part
    assert len(list((rewritten / "manifest.parquet").glob("part-*.parquet"))) == 1


def test_cli_dask_executor_and_bad_flags(tmp_path, capsys, cluster):
    from medclip.synth.cxr.archive import synth_cxr

    synth_cxr(tmp_path / "arc", studies=12, seed=4)
    base = ["-q", "manifest", str(tmp_path / "arc"), "--salt", "a-long-enough-salt-value"]
    assert main([*base, "--out", str(tmp_path / "local")]) == 0
    assert (
        main([*base, "--out", str(tmp_path / "dask"), "--executor", "dask", "--scheduler", cluster.scheduler_address])
        == 0
    )
    a, b = read_manifest(tmp_path / "local")[0], read_manifest(tmp_path / "dask")[0]
    pd.testing.assert_frame_equal(a, b)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "x"), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "--scheduler needs --executor dask" in capsys.readouterr().err
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(InputError, match="no Dask scheduler answers"),
    ):
        make_executor("dask", scheduler="tcp://127.0.0.1:1")
    shards = tmp_path / "shards"
    argv = ["-q", "prepare", str(tmp_path / "dask"), "--out", str(shards), "--image-size", "32", "--executor", "dask"]
    assert main([*argv, "--scheduler", cluster.scheduler_address]) == 0
    index = pd.read_parquet(shards / "index.parquet")
    assert len(index) == len(a) and np.load(shards / "shard-00000.npy").shape[1:] == (1, 32, 32)
